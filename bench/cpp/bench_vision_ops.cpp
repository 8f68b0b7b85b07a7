// Matmul shapes of one 448x448 vision slice (1024 tokens) per weight type, and the full attention
// of a tower block: where the vision time goes. `bench_vision_ops [threads]`.
// `bench_vision_ops threads mmproj.gguf [native|q8_0|bf16|auto]`: tower and resampler of one 32x32
// slice of that file instead (best of 3, after a warm-up). `bench_vision_ops threads attention`:
// the attention alone.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "model/attention_full.h"
#include "model/vision_encoder.h"
#include "ops/fast_math.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

using namespace minicpmv;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (all pool threads, including their spin-waits): on a shared
// machine, at 1 thread, what an idle machine's wall time would be.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double g_best_cpu = 0;  // CPU seconds of the best_of call's fastest (CPU time) repetition

template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  g_best_cpu = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now(), c0 = cpu_now();
    f();
    best = std::min(best, now() - t0);
    g_best_cpu = std::min(g_best_cpu, cpu_now() - c0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  const bool attention_only = argc > 2 && std::string(argv[2]) == "attention";
  if (argc > 2 && !attention_only) {
    const double t0 = now();
    model::VisionEncoder enc(argv[2], threads, argc > 3 ? argv[3] : "native");
    std::printf("load %.2f s (%s)\n", now() - t0, enc.weights().c_str());
    const int64_t h = 32, w = 32;
    std::vector<float> p(static_cast<size_t>(h * w * 588)), hid(static_cast<size_t>(h * w * enc.mmproj().vision.hidden)),
        out(static_cast<size_t>(enc.mmproj().resampler.query_num * enc.mmproj().resampler.embed_dim));
    std::uniform_real_distribution<float> ud(-1.f, 1.f);
    for (auto& v : p) v = ud(rng);
    enc.encode_patches(p.data(), h, w, out.data());
    const double tt = best_of(3, [&] { enc.vision_tower(p.data(), h, w, hid.data()); });
    const double ct = g_best_cpu;
    const double tr = best_of(3, [&] { enc.resample(hid.data(), h, w, out.data()); });
    const double cr = g_best_cpu;
    const int64_t L = enc.mmproj().vision.n_layers;
    std::printf("wall: tower %.1f ms (%.1f ms/block), resampler %.1f ms, 27-block slice %.2f s\n", tt * 1e3,
                tt * 1e3 / L, tr * 1e3, tt / L * 27 + tr);
    std::printf("cpu:  tower %.1f ms (%.1f ms/block), resampler %.1f ms, 27-block slice %.2f s (all threads)\n",
                ct * 1e3, ct * 1e3 / L, cr * 1e3, ct / L * 27 + cr);
    return 0;
  }
  ThreadPool pool(threads);
  const int64_t n = 1024;
  struct Shape { int64_t rows, cols; const char* what; };
  for (Shape s : attention_only ? std::vector<Shape>{} : std::vector<Shape>{Shape{3456, 1152, "fused qkv"}, Shape{1152, 1152, "attn q/k/v/out"}, Shape{4304, 1152, "fc1"}, Shape{1152, 4304, "fc2"},
                  Shape{1024, 96, "QK^T padded"}, Shape{96, 1024, "PV"}}) {
    std::vector<float> w(static_cast<size_t>(s.rows * s.cols)), x(static_cast<size_t>(n * s.cols)),
        y(static_cast<size_t>(n * s.rows));
    for (auto& v : w) v = nd(rng);
    for (auto& v : x) v = nd(rng);
    for (DType t : {DType::F32, DType::F16, DType::Q8_0}) {
      if (s.cols % type_traits(t).block_size) continue;
      std::vector<uint8_t> q(static_cast<size_t>(s.rows) * row_size(t, s.cols));
      quantize_rows(t, w.data(), q.data(), s.rows, s.cols, &pool);
      const kernels::Weight W = kernels::Weight::view(t, s.rows, s.cols, q.data());
      const double sec = best_of(3, [&] { kernels::matmul(W, x.data(), n, y.data(), pool); });
      std::printf("%-16s %5lld x %5lld  %-5s %8.2f ms  %7.1f GOP/s\n", s.what, (long long)s.rows,
                  (long long)s.cols, type_name(t), sec * 1e3, 2.0 * n * s.rows * s.cols / sec / 1e9);
    }
  }
  if (!attention_only) {
    std::vector<float> sc(static_cast<size_t>(n * n));
    for (auto& e : sc) e = nd(rng);
    const double sec = best_of(3, [&] {
      for (int h = 0; h < 16; ++h) for (int64_t r = 0; r < n; ++r) ops::softmax_fast(sc.data() + r * n, n, 0.1f);
    });
    std::printf("softmax 16 x 1024 rows of 1024 (one thread): %8.2f ms\n", sec * 1e3);
  }
  for (int64_t d : {72, 128}) {
    model::AttentionShape a;
    const int64_t heads = d == 72 ? 16 : 28, nq = d == 72 ? n : 64;
    a.n_q = nq;
    a.n_kv = n;
    a.n_heads = heads;
    a.head_dim = d;
    a.q_stride = a.k_stride = a.v_stride = a.out_stride = heads * d;
    a.scale = 0.1f;
    std::vector<float> q(nq * heads * d), k(n * heads * d), v(n * heads * d), o(nq * heads * d), scratch;
    for (auto* b : {&q, &k, &v})
      for (auto& e : *b) e = nd(rng);
    for (int path : {0, 3, 1, 2}) {  // flash f32 (where the ISA has it), flash bf16, matmul f32, matmul int8
      const bool int8 = path == 2;
      a.int8 = int8;
      a.flash = path == 0 || path == 3;
      a.bf16 = path == 3;
      const double sec = best_of(3, [&] { model::attention_full(a, q.data(), k.data(), v.data(), o.data(), pool, scratch); });
      std::printf("attention %-11s d=%lld heads=%lld nq=%lld nkv=%lld: %8.2f ms (cpu %8.2f ms) %7.1f GFLOP/s\n",
                  path == 0 ? "f32 flash" : path == 3 ? "bf16 flash" : path == 1 ? "f32 matmul" : "int8 matmul",
                  (long long)d, (long long)heads, (long long)nq, (long long)n, sec * 1e3, g_best_cpu * 1e3,
                  4.0 * nq * n * heads * d / sec / 1e9);
    }
  }
  return 0;
}
