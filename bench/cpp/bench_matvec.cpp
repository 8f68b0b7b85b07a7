// Decode matvec and prefill matmul speed of every kernel path on this CPU, side by side with the
// machine's measured read bandwidth (not a test; prints a table).
//
//   bench_matvec [--quick] [--hot] [--isa NAME] [--types Q4_K,Q6_K,...] [--shapes 3584x3584,...]
//                [--threads 1|2] [--no-matmul] [--reps N]
//
// Bandwidth: a STREAM-like sum over a 2 GiB buffer (best of 5), 1 and 2 threads, measured in the
// same run (the machine is shared: the ratio is only meaningful against this run's bandwidth).
// Matvec (n = 1): Q4_K, Q6_K, Q4_0, Q8_0 at the Qwen2-7B shapes (rows x cols) 3584x3584 (attn_q/o),
// 512x3584 (attn_k/v), 18944x3584 (ffn_gate/up), 3584x18944 (ffn_down), 152064x3584 (output);
// the weights are rotated over enough copies (>= 256 MiB) that every call reads them from DRAM, as
// in decode. Each line times the gemm tiles (single-token kernels off: MINICPMV_GEMV=0, the
// "before") and the single-token kernels (KernelSet::gemv) alternately, best of reps each.
// GB/s = weight bytes / time; "frac" = that / the bandwidth at the same thread count. --hot: the same with ~384 KiB of weight rows read from L2 over and over, i.e. the
// kernel's instruction-bound ceiling (what it could consume if DRAM kept up).
// Matmul (n = 512): GOP/s = 2 * rows * cols * n / time (the scalar ref path is skipped: minutes).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "quant/f16.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"

using namespace minicpmv;
using namespace minicpmv::kernels;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU time of the calling thread: with 1 thread it is the whole call's work, so on a shared
// machine (other processes on the cores) it shows what the kernel would do on an idle core.
[[maybe_unused]] static double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double read_bandwidth(ThreadPool& pool, const uint64_t* buf, size_t n_words) {
  double best = 0;
  volatile uint64_t sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<uint64_t> part(pool.size(), 0);
    auto t0 = Clock::now();
    pool.run([&](int ith, int nth) {
      const size_t b = n_words * ith / nth, e = n_words * (ith + 1) / nth;
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (size_t i = b; i + 4 <= e; i += 4) s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
      part[ith] = s0 + s1 + s2 + s3;
    });
    const double dt = seconds_since(t0);
    for (uint64_t p : part) sink += p;
    best = std::max(best, n_words * 8.0 / dt / 1e9);
  }
  (void)sink;
  return best;
}

// Random blocks with sane scales (f16 scale fields set to small normal values).
static std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols, std::mt19937_64& g) {
  const size_t bytes = row_size(t, cols) * rows;
  std::vector<uint8_t> w(bytes);
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    const uint64_t v = g();
    std::memcpy(w.data() + i, &v, 8);
  }
  const size_t ts = type_traits(t).type_size;
  const uint16_t s = fp32_to_fp16(0.01f);
  for (size_t b = 0; b < bytes / ts; ++b) {
    uint8_t* p = w.data() + b * ts;
    if (t == DType::Q6_K) std::memcpy(p + 208, &s, 2);
    else std::memcpy(p, &s, 2);
    if (t == DType::Q4_K) std::memcpy(p + 2, &s, 2);
  }
  return w;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  bool quick = false, matmul_too = true, hot = false;
  int reps_arg = 0;
  std::string only_isa, type_list = "Q4_K,Q6_K,Q4_0,Q8_0", shape_list;
  int only_threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--no-matmul") matmul_too = false;
    else if (a == "--hot") hot = true;
    else if (a == "--isa" && i + 1 < argc) only_isa = argv[++i];
    else if (a == "--types" && i + 1 < argc) type_list = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps_arg = std::atoi(argv[++i]);
    else if (a == "--shapes" && i + 1 < argc) shape_list = argv[++i];
    else if (a == "--threads" && i + 1 < argc) only_threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: bench_matvec [--quick] [--hot] [--isa NAME] [--types Q4_K,...] [--shapes RxC,...] "
                   "[--threads 1|2] [--no-matmul] [--reps N]\n");
      return 2;
    }
  }
  std::vector<Isa> isas;
  for (Isa i : available_isas())
    if (only_isa.empty() ? i != Isa::Ref : only_isa == isa_name(i)) isas.push_back(i);
  std::vector<DType> types;
  for (const char* t : {"Q4_K", "Q6_K", "Q4_0", "Q8_0", "Q5_K", "Q4_1", "Q5_0", "Q5_1"})
    if (("," + type_list + ",").find(std::string(",") + t + ",") != std::string::npos)
      types.push_back(dtype_from_name(t));
  std::printf("cpu:");
  for (auto& f : cpu::feature_list())
    if (f.second) std::printf(" %s", f.first.c_str());
  std::printf("\nkernel paths:");
  for (Isa i : available_isas()) std::printf(" %s", isa_name(i));
  const char* gv = std::getenv("MINICPMV_GEMV");
  std::printf(" (best %s), single-token kernels %s\n", isa_name(best_isa()), gv && std::string(gv) == "0" ? "OFF" : "on");
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    char line[128] = {};
    if (std::fgets(line, sizeof line, f)) std::printf("load average: %s", line);
    std::fclose(f);
  }
  std::printf("\n");

  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  double bw[2];
  {
    const size_t n_words = (quick ? (512ull << 20) : (2ull << 30)) / 8;
    std::unique_ptr<uint64_t[]> buf(new uint64_t[n_words]);
    pools[1].run([&](int ith, int nth) {  // touch the pages from both threads
      const size_t b = n_words * ith / nth, e = n_words * (ith + 1) / nth;
      for (size_t i = b; i < e; ++i) buf[i] = i;
    });
    for (int k = 0; k < 2; ++k) bw[k] = read_bandwidth(pools[k], buf.get(), n_words);
    std::printf("read bandwidth (%zu MiB buffer, best of 5): 1 thread %.1f GB/s, 2 threads %.1f GB/s\n\n",
                n_words * 8 >> 20, bw[0], bw[1]);
  }

  std::mt19937_64 g(42);
  const int64_t mv_shapes[5][2] = {{3584, 3584}, {512, 3584}, {18944, 3584}, {3584, 18944}, {152064, 3584}};
  std::printf("matvec n=1: 'tile' = single-token kernels off (MINICPMV_GEMV=0, the gemm tiles), 'gemv' = on;\n"
              "GB/s = weight bytes / best time; frac = GB/s / read bandwidth; the two are timed alternately\n\n");
  std::printf("type   rows x cols    isa     thr  tile ms  GB/s  frac | gemv ms  GB/s  frac | speedup\n");
  const char* env0 = std::getenv("MINICPMV_GEMV");
  const std::string env_saved = env0 ? env0 : "";
  for (DType t : types)
    for (auto& sh : mv_shapes) {
      if (!shape_list.empty() && ("," + shape_list + ",").find("," + std::to_string(sh[0]) + "x" + std::to_string(sh[1]) + ",") == std::string::npos)
        continue;
      const int64_t cols = sh[1];
      // --hot: ~384 KiB of rows, one copy, so they stay in L2: the kernel's instruction ceiling
      const int64_t rows = hot ? std::min<int64_t>(sh[0], (384 << 10) / row_size(t, cols)) : sh[0];
      const size_t bytes = row_size(t, cols) * rows;
      const size_t copies = hot ? 1 : std::max<size_t>(1, ((quick ? 64ull : 256ull) << 20) / bytes + 1);
      std::vector<std::vector<uint8_t>> ws;
      for (size_t c = 0; c < copies; ++c) ws.push_back(make_weights(t, rows, cols, g));
      std::vector<Weight> W;
      for (auto& w : ws) W.push_back(Weight::view(t, rows, cols, w.data()));
      std::vector<float> x(cols), y(rows);
      for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(g);
      // >= ~40 calls per timing (a big output matrix: 2), so short calls are timed in bulk
      const int inner = bytes > (64u << 20) ? 2 : static_cast<int>(std::max<size_t>(1, 40 / W.size()));
      const double calls = double(W.size()) * inner;
      for (Isa isa : isas)
        for (int k = 0; k < 2; ++k) {
          if (only_threads && k + 1 != only_threads) continue;
          const int reps = reps_arg > 0 ? reps_arg : isa == Isa::Ref ? 1 : (quick ? 3 : 7);
          double best[2] = {1e30, 1e30};
          for (int rep = 0; rep < reps; ++rep)
            for (int on = 0; on < 2; ++on) {
              if (on) {
                if (env_saved.empty()) unsetenv("MINICPMV_GEMV");
                else setenv("MINICPMV_GEMV", env_saved.c_str(), 1);
              } else {
                setenv("MINICPMV_GEMV", "0", 1);
              }
              if (rep == 0)
                for (auto& w : W) matmul(w, x.data(), 1, y.data(), pools[k], isa);  // warm up
              auto t0 = Clock::now();
              for (int it = 0; it < inner; ++it)
                for (auto& w : W) matmul(w, x.data(), 1, y.data(), pools[k], isa);
              best[on] = std::min(best[on], seconds_since(t0) / calls);
            }
          if (env_saved.empty()) unsetenv("MINICPMV_GEMV");
          else setenv("MINICPMV_GEMV", env_saved.c_str(), 1);
          const double g0 = bytes / best[0] / 1e9, g1 = bytes / best[1] / 1e9;
          std::printf("%-5s %6lldx%-5lld  %-7s %d  %7.3f %5.1f %5.2f | %7.3f %5.1f %5.2f | %5.2fx\n", type_name(t),
                      (long long)rows, (long long)cols, isa_name(isa), k + 1, best[0] * 1e3, g0, g0 / bw[k],
                      best[1] * 1e3, g1, g1 / bw[k], best[0] / best[1]);
        }
    }
  if (!matmul_too) return 0;

  const int64_t n = quick ? 64 : 512;
  std::printf("\nmatmul n=%lld         isa      thr   ms/call   GOP/s\n", (long long)n);
  const int64_t shapes[2][2] = {{3584, 18944}, {18944, 3584}};
  for (DType t : types)
    for (auto& sh : shapes) {
      const int64_t rows = sh[0], cols = sh[1];
      std::vector<uint8_t> w = make_weights(t, rows, cols, g);
      Weight W = Weight::view(t, rows, cols, w.data());
      std::vector<float> x(n * cols), y(n * rows);
      for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(g);
      for (Isa isa : isas) {
        if (isa == Isa::Ref) continue;
        for (int k = 0; k < 2; ++k) {
          matmul(W, x.data(), n, y.data(), pools[k], isa);
          double best = 1e30, best_cpu = 1e30;
          for (int rep = 0; rep < 2; ++rep) {
            auto t0 = Clock::now();
            const double c0 = thread_cpu_seconds();
            matmul(W, x.data(), n, y.data(), pools[k], isa);
            best = std::min(best, seconds_since(t0));
            best_cpu = std::min(best_cpu, thread_cpu_seconds() - c0);
          }
          const double ops = 2.0 * rows * cols * n;
          std::printf("%-5s %5lldx%-5lld  %-8s %d  %8.1f  %6.1f", type_name(t), (long long)rows, (long long)cols,
                      isa_name(isa), k + 1, best * 1e3, ops / best / 1e9);
          if (k == 0) std::printf("   (cpu-time: %.1f GOP/s)", ops / best_cpu / 1e9);
          std::printf("\n");
        }
      }
    }
  return 0;
}
