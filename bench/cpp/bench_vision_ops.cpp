// Matmul shapes of one 448x448 vision slice (1024 tokens) per weight type, and the full attention
// of a tower block: where the vision time goes. `bench_vision_ops [threads]`.
// `bench_vision_ops threads mmproj.gguf [native|q8_0|bf16|auto] [breakdown]`: tower and resampler of
// one 32x32 slice of that file instead (best of 3, after a warm-up); breakdown: then the time of every
// step of a block and of the resampler. `bench_vision_ops threads attention`:
// the attention alone.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/vision_ops.h"
#include "model/attention_full.h"
#include "model/vision_encoder.h"
#include "model/vision_matmul.h"
#include "ops/ops.h"
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

// Where one block's and one resampler's time goes: block 0 of the tower replayed step by step with
// the encoder's own (converted) weights and the same calls and passes as SiglipTower::encoder_block
// (kept in step with siglip.cpp by hand), and the resampler's phases as Resampler times them.
// Best of 5 per step: CPU ms of the process at `threads` (the resampler's phases: wall ms).
void breakdown(model::VisionEncoder& enc, const std::vector<float>& patches, int threads) {
  using model::vision_matmul;
  const model::Mmproj& m = enc.mmproj();
  const model::VisionConfig& c = m.vision;
  const model::VisionLayerWeights& L = m.v.layers[0];
  const int64_t n = 1024, H = c.hidden, I = c.intermediate, Ip = L.ffn_fc2.cols();
  ThreadPool& pool = enc.pool();
  model::Bf16DotScope scope(enc.weights() == "bf16");
  std::vector<float> x(n * H), xn(n * H), q(n * H), k(n * H), v(n * H), at(n * H), f(n * I), g(n * Ip), scratch;
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& e : x) e = nd(rng);
  struct Step { const char* what; double ms; };
  std::vector<Step> steps;
  // CPU time of the fastest repetition: at 1 thread on a shared machine, what an idle one's wall is
  auto time = [&](const char* what, auto&& fn) {
    best_of(5, fn);
    steps.push_back({what, g_best_cpu * 1e3});
  };
  const kernels::vops::RowOps& rops = kernels::vops::row_ops();
  auto ln = [&](const std::vector<float>& w, const std::vector<float>& b) {
    pool.parallel_for(n, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) rops.layer_norm(x.data() + i * H, w.data(), b.data(), xn.data() + i * H, H, c.eps);
    });
  };
  std::vector<float> x2 = x;  // the fused residual + LN writes x: restored from x2 each repetition
  auto residual_ln = [&](const std::vector<float>& bias, const std::vector<float>& w, const std::vector<float>& b) {
    pool.parallel_for(n, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        std::copy(x2.data() + i * H, x2.data() + (i + 1) * H, x.data() + i * H);
        rops.residual_layer_norm(x.data() + i * H, at.data() + i * H, bias.data(), w.data(), b.data(), xn.data() + i * H, H,
                                 c.eps);
      }
    });
  };
  auto residual = [&](const std::vector<float>& bias) {
    pool.parallel_for(n, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j < H; ++j) at[i * H + j] = x[i * H + j] + xn[i * H + j] + bias[j];
    });
  };
  time("ln1", [&] { ln(L.ln1_w, L.ln1_b); });
  time("q/k/v matmuls", [&] {
    vision_matmul(L.attn_q, xn.data(), n, q.data(), pool);
    vision_matmul(L.attn_k, xn.data(), n, k.data(), pool);
    vision_matmul(L.attn_v, xn.data(), n, v.data(), pool);
  });
  time("q/k/v bias", [&] {
    pool.parallel_for(n, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        ops::add(q.data() + i * H, L.attn_q_b.data(), H);
        ops::add(k.data() + i * H, L.attn_k_b.data(), H);
        ops::add(v.data() + i * H, L.attn_v_b.data(), H);
      }
    });
  });
  for (int bf : {0, 1}) {
    model::AttentionShape s;
    s.n_q = s.n_kv = n;
    s.n_heads = c.n_heads;
    s.head_dim = c.head_dim;
    s.q_stride = s.k_stride = s.v_stride = s.out_stride = H;
    s.scale = 0.1f;
    s.bf16 = bf == 1;
    time(bf ? "attention bf16" : "attention f32",
         [&] { model::attention_full(s, q.data(), k.data(), v.data(), at.data(), pool, scratch); });
  }
  time("attn_out matmul", [&] { vision_matmul(L.attn_out, at.data(), n, xn.data(), pool); });
  time("residual+bias+ln2", [&] { residual_ln(L.attn_out_b, L.ln2_w, L.ln2_b); });
  time("fc1 matmul", [&] { vision_matmul(L.ffn_fc1, xn.data(), n, f.data(), pool); });
  time("fc1 bias+gelu(+pad)", [&] {
    pool.parallel_for(n, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        rops.bias_gelu(f.data() + i * I, L.ffn_fc1_b.data(), g.data() + i * Ip, I, Ip);
      }
    });
  });
  time("fc2 matmul", [&] { vision_matmul(L.ffn_fc2, g.data(), n, xn.data(), pool); });
  time("residual+bias", [&] { residual(L.ffn_fc2_b); });
  std::printf("block 0 replayed, %lld tokens, %d thread(s), weights %s (best of 5, CPU ms):\n", (long long)n, threads,
              enc.weights().c_str());
  double sum = 0;
  for (const Step& st : steps) std::printf("  %-22s %8.2f\n", st.what, st.ms);
  for (const Step& st : steps) sum += st.ms;
  std::printf("  sum (both attentions counted) %.1f\n", sum);

  std::vector<float> hid(n * H), out(m.resampler.query_num * m.resampler.embed_dim);
  enc.vision_tower(patches.data(), 32, 32, hid.data());
  std::vector<model::Resampler::Phases> runs;
  model::Resampler res(std::shared_ptr<const model::Mmproj>(&m, [](const model::Mmproj*) {}));
  res.forward(hid.data(), 32, 32, out.data(), pool);  // warm-up (the fold's tables)
  model::Resampler::Phases best;
  double best_total = 1e30;
  for (int r = 0; r < 5; ++r) {
    res.forward(hid.data(), 32, 32, out.data(), pool);
    const model::Resampler::Phases& ph = res.phases();
    if (ph.total() < best_total) best_total = ph.total(), best = ph;
  }
  std::printf("resampler (%s, best of 5, ms): kv matmul %.2f, ln_kv+pos %.2f, %s %.2f, attention %.2f, "
              "out/ln_post/proj %.2f; total %.1f\n", res.folded() ? "folded" : "projected", best.kv * 1e3,
              best.ln_pe * 1e3, res.folded() ? "fold products (QkKpe^T, softmax, P kv, Wv_h)" : "K/V matmuls + bias",
              best.kv_proj * 1e3, best.attention * 1e3, best.out * 1e3, best.total() * 1e3);
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
    if (argc > 4 && std::string(argv[4]) == "breakdown") breakdown(enc, p, threads);
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
