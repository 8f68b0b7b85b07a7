// Packed Q8_0 GEMM (kernels/packed_q8.h) against the stored-row Q8_0 kernels at the vision tower's
// shapes (1024 tokens of a 448x448 slice): GOP/s (2 ops per multiply-add), best of --reps.
//   bench_packed_q8 [threads=1] [reps=5] [tokens=1024]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/bf16_dot.h"
#include "kernels/matmul.h"
#include "kernels/packed_q8.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 1024;
  ThreadPool pool(threads);
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const int64_t shapes[][2] = {{1152, 1152}, {4304, 1152}, {1152, 4320}};
  std::printf("isa %s, %d thread(s), %ld tokens\n", isa_name(active_isa()), threads, (long)n);
  std::printf("%-12s %12s %12s %8s %12s\n", "rows x cols", "stored GOP/s", "packed GOP/s", "ratio", "bf16 GFLOP/s");
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    std::vector<float> f(rows * cols), x(n * cols), y(n * rows);
    for (float& v : f) v = g(rng);
    for (float& v : x) v = g(rng);
    std::vector<uint8_t> q(rows * row_size(DType::Q8_0, cols));
    quantize_rows(DType::Q8_0, f.data(), q.data(), rows, cols);
    const Weight w = Weight::view(DType::Q8_0, rows, cols, q.data());
    const Weight pw = packed::pack_q8_0(w, pool);
    auto best = [&](const Weight& W) {
      double t = 1e30;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        matmul(W, x.data(), n, y.data(), pool);
        t = std::min(t, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return 2.0 * rows * cols * n / t / 1e9;
    };
    const double a = best(w), b = best(pw);
    double c = 0.0;  // the "bf16" vision option's kernel on the same shape, for comparison
    if (bf16_dot_available()) {
      std::vector<uint8_t> hb(rows * row_size(DType::BF16, cols));
      quantize_rows(DType::BF16, f.data(), hb.data(), rows, cols);
      const Weight wb = Weight::view(DType::BF16, rows, cols, hb.data());
      double t = 1e30;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        matmul_bf16_dot(wb, x.data(), n, y.data(), pool);
        t = std::min(t, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      c = 2.0 * rows * cols * n / t / 1e9;
    }
    std::printf("%5ldx%-6ld %12.1f %12.1f %8.2f %12.1f\n", (long)rows, (long)cols, a, b, b / a, c);
  }
#if defined(MINICPMV_X86)
  // the tile alone on one L1/L2-resident panel and token group: its own ceiling
  if (active_isa() == Isa::Avx512) {
    for (int64_t nb : {36, 135}) {
      std::vector<uint8_t> P(packed::kBlockBytes * nb + 64, 1), A(packed::kActBlockBytes * nb + 64, 1);
      uint8_t* p = P.data() + (64 - reinterpret_cast<uintptr_t>(P.data()) % 64) % 64;
      uint8_t* a = A.data() + (64 - reinterpret_cast<uintptr_t>(A.data()) % 64) % 64;
      float out[16 * 16];
      const int iters = 20000;
      double t = 1e30;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) packed::gemm_tile_avx512(p, nb, a, 16, out, 16, 16);
        t = std::min(t, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("tile alone, %ld blocks: %.1f GOP/s\n", (long)nb, 2.0 * 256 * 32 * nb * iters / t / 1e9);
    }
  }
#endif
}
