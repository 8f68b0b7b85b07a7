// Prefill matmul speed (n tokens at once) of the K-quant and Q4_0 / Q8_0 kernels at the Qwen2-7B
// shapes: GOP/s = 2 * rows * cols * n / time, best of reps, on the active path. Not a test.
// With 1 thread the time is the thread's CPU time (CLOCK_THREAD_CPUTIME_ID): on a shared machine
// that leaves out the time the thread was not running, so kernel changes can be compared while
// other jobs run (cache interference stays).
//   bench_prefill [threads=1] [reps=3] [n=512] [types=Q4_K,Q6_K]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 3;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 512;
  const std::string types = argc > 4 ? argv[4] : "Q4_K,Q6_K";
  ThreadPool pool(threads);
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const int64_t shapes[][2] = {{3584, 3584}, {18944, 3584}, {3584, 18944}};
  std::printf("isa %s, %d thread(s), %ld tokens\n", isa_name(active_isa()), threads, (long)n);
  std::stringstream ss(types);
  std::string name;
  while (std::getline(ss, name, ',')) {
    DType t = name == "Q4_K" ? DType::Q4_K : name == "Q6_K" ? DType::Q6_K : name == "Q4_0" ? DType::Q4_0 : DType::Q8_0;
    for (const auto& s : shapes) {
      const int64_t rows = s[0], cols = s[1];
      std::vector<float> f(rows * cols), x(n * cols), y(n * rows);
      for (float& v : f) v = g(rng);
      for (float& v : x) v = g(rng);
      std::vector<uint8_t> q(rows * row_size(t, cols));
      quantize_rows(t, f.data(), q.data(), rows, cols);
      const Weight w = Weight::view(t, rows, cols, q.data());
      auto now = [&] {
        if (threads != 1) return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
        timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return ts.tv_sec + 1e-9 * ts.tv_nsec;
      };
      double best = 1e30;
      for (int r = 0; r < reps; ++r) {
        const double t0 = now();
        matmul(w, x.data(), n, y.data(), pool);
        best = std::min(best, now() - t0);
      }
      std::printf("%s %5ldx%-6ld %8.1f GOP/s\n", name.c_str(), (long)rows, (long)cols, 2.0 * rows * cols * n / best / 1e9);
    }
  }
}
