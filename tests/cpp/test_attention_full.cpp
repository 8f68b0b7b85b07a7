// model/attention_full against a naive float64 attention, on every kernel path this CPU (or qemu)
// runs: strided heads, odd sizes, one key, one query, more queries than a score block.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "minicpmv/error.h"
#include "model/attention_full.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;

namespace {

// out_h = softmax(Q_h K_h^T * scale) V_h in double.
std::vector<double> naive(const model::AttentionShape& s, const std::vector<float>& q, const std::vector<float>& k,
                          const std::vector<float>& v) {
  std::vector<double> out(static_cast<size_t>(s.n_q * s.n_heads * s.head_dim));
  std::vector<double> p(static_cast<size_t>(s.n_kv));
  for (int64_t h = 0; h < s.n_heads; ++h)
    for (int64_t i = 0; i < s.n_q; ++i) {
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < s.n_kv; ++j) {
        double d = 0;
        for (int64_t c = 0; c < s.head_dim; ++c)
          d += double(q[i * s.q_stride + h * s.head_dim + c]) * k[j * s.k_stride + h * s.head_dim + c];
        p[j] = d * s.scale;
        mx = std::fmax(mx, p[j]);
      }
      for (int64_t j = 0; j < s.n_kv; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t c = 0; c < s.head_dim; ++c) {
        double o = 0;
        for (int64_t j = 0; j < s.n_kv; ++j) o += p[j] / sum * v[j * s.v_stride + h * s.head_dim + c];
        out[(i * s.n_heads + h) * s.head_dim + c] = o;
      }
    }
  return out;
}

// isa_flash: run attention_full_flash on that path instead of attention_full (Ref = the scalar twin).
// Returns the output (n_q rows of out_stride).
// bf16: the bf16 variant of the flash kernel, checked against float64 with max_tol.
double g_last_err = 0;  // max abs error of the last case against float64
std::vector<float> run_case(int64_t n_q, int64_t n_kv, int64_t heads, int64_t d, ThreadPool& pool,
                            const kernels::Isa* isa_flash = nullptr, bool bf16 = false, double max_tol = 2e-5) {
  std::mt19937 rng(static_cast<unsigned>(n_q * 131 + n_kv * 7 + d));
  std::normal_distribution<float> nd(0.f, 1.f);
  model::AttentionShape s;
  s.n_q = n_q;
  s.n_kv = n_kv;
  s.n_heads = heads;
  s.head_dim = d;
  const int64_t width = heads * d;
  s.q_stride = width + 3;  // strided rows, as when Q/K/V are column slices of a wider buffer
  s.k_stride = width + 5;
  s.v_stride = width;
  s.out_stride = width + 1;
  s.scale = 2.0f / std::sqrt(static_cast<float>(d));  // sharper than uniform attention
  s.bf16 = bf16;
  std::vector<float> q(n_q * s.q_stride), k(n_kv * s.k_stride), v(n_kv * s.v_stride);
  for (auto* b : {&q, &k, &v})
    for (auto& x : *b) x = nd(rng);
  std::vector<float> out(n_q * s.out_stride, 123.0f), scratch;
  if (isa_flash)
    model::attention_full_flash(s, q.data(), k.data(), v.data(), out.data(), pool, scratch, *isa_flash);
  else
    model::attention_full(s, q.data(), k.data(), v.data(), out.data(), pool, scratch);
  const std::vector<double> ref = naive(s, q, k, v);
  double max_err = 0;
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t c = 0; c < width; ++c) {
      // (a plain compare, not fmax: aarch64 gcc 12 ICEs vectorizing that reduction)
      const double e = std::fabs(out[i * s.out_stride + c] - ref[i * width + c]);
      if (e > max_err) max_err = e;
    }
  // f32 products over <= 128 terms and softmax sums: ~1e-6 on O(1) values
  g_last_err = max_err;
  CHECK_MSG(max_err < max_tol, "n_q %lld n_kv %lld heads %lld d %lld: max err %g", (long long)n_q, (long long)n_kv,
            (long long)heads, (long long)d, max_err);
  for (int64_t i = 0; i < n_q; ++i) CHECK(out[i * s.out_stride + width] == 123.0f);  // padding untouched
  return out;
}

}  // namespace

TEST(attention_full_matches_naive) {
  ThreadPool pool(2);
  for (kernels::Isa isa : kernels::available_isas()) {  // the public dispatch: flash on avx2 / avx512
    kernels::set_isa(isa);
    run_case(1, 1, 1, 8, pool);
    run_case(5, 7, 3, 12, pool);
    run_case(64, 300, 2, 128, pool);  // resampler-like
    run_case(77, 77, 4, 72, pool);    // tower-like, odd count
    run_case(3000, 400, 1, 16, pool); // more queries than one score block (1M floats / 400 keys)
  }
  kernels::set_isa(kernels::best_isa());
}

// The flash kernel (kernels/vision_attention.h): its scalar twin and every SIMD path against float64
// and against each other. Sizes: key counts around the 16-key strips and 64-key tiles (1, 17, 63,
// 65, 1025), query counts around the 6/4-row micro tiles and 48-row blocks (1, 5, 49, 97), head dims
// 72 (the tower: 4.5 vectors), 64 (whole vectors), 128 (the resampler), 12 and 8 (under one vector).
TEST(attention_full_flash_matches_naive_and_scalar_twin) {
  ThreadPool pool(2);
  struct Case { int64_t n_q, n_kv, heads, d; };
  const Case cases[] = {{1, 1, 1, 72}, {17, 17, 2, 72}, {5, 63, 3, 64}, {49, 65, 2, 72},
                        {97, 1025, 2, 72}, {64, 1025, 1, 64}, {7, 33, 2, 128}, {13, 5, 1, 12},
                        {3, 40, 2, 8}};
  std::vector<kernels::Isa> paths{kernels::Isa::Ref};
  for (kernels::Isa isa : {kernels::Isa::Avx2, kernels::Isa::Avx512})
    if (kernels::isa_available(isa)) paths.push_back(isa);
  for (const Case& c : cases) {
    const std::vector<float> twin = run_case(c.n_q, c.n_kv, c.heads, c.d, pool, &paths[0]);
    for (size_t p = 1; p < paths.size(); ++p) {
      const std::vector<float> simd = run_case(c.n_q, c.n_kv, c.heads, c.d, pool, &paths[p]);
      double max_diff = 0;
      for (size_t i = 0; i < simd.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(simd[i] - twin[i])));
      // same tiles and order of the softmax; FMA contraction and the polynomial exp (~2 ulp) differ
      CHECK_MSG(max_diff < 1e-5, "%s vs scalar twin n_q %lld n_kv %lld d %lld: max diff %g", kernels::isa_name(paths[p]),
                (long long)c.n_q, (long long)c.n_kv, (long long)c.d, max_diff);
    }
  }
  // The bf16 variant: its scalar twin and (with AVX512_BF16) the SIMD one against float64 and each
  // other. q, k, v and p rounded to bf16 (relative 2^-9): scores of |q||k| ~ 2 * 9 move by ~1e-2,
  // so outputs (convex mixes of N(0,1) values) move by ~1e-2 at the sharpest rows; measured max
  // 1.3e-2 over these cases -> 3e-2. Twins: same roundings, only exp / FMA order (and a p at a bf16
  // rounding boundary) differ -> 1e-3.
  std::vector<kernels::Isa> bf16_paths{kernels::Isa::Ref};
  if (kernels::isa_available(kernels::Isa::Avx512) && cpu::features().avx512_bf16)
    bf16_paths.push_back(kernels::Isa::Avx512);
  double worst = 0;
  for (const Case& c : cases) {
    const std::vector<float> twin = run_case(c.n_q, c.n_kv, c.heads, c.d, pool, &bf16_paths[0], true, 3e-2);
    worst = std::max(worst, g_last_err);
    for (size_t p = 1; p < bf16_paths.size(); ++p) {
      const std::vector<float> simd = run_case(c.n_q, c.n_kv, c.heads, c.d, pool, &bf16_paths[p], true, 3e-2);
      worst = std::max(worst, g_last_err);
      double max_diff = 0;
      for (size_t i = 0; i < simd.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(simd[i] - twin[i])));
      CHECK_MSG(max_diff < 1e-3, "bf16 %s vs scalar twin n_q %lld n_kv %lld d %lld: max diff %g",
                kernels::isa_name(bf16_paths[p]), (long long)c.n_q, (long long)c.n_kv, (long long)c.d, max_diff);
    }
  }
  std::printf("bf16 flash attention: max abs error vs float64 %.3g (%zu paths)\n", worst, bf16_paths.size());

  // a path without a flash kernel is a typed error, not garbage
  bool threw = false;
  try {
    std::vector<float> x(64, 0.f), sc;
    model::AttentionShape s;
    s.n_q = s.n_kv = s.n_heads = 1;
    s.head_dim = 8;
    s.q_stride = s.k_stride = s.v_stride = s.out_stride = 8;
    model::attention_full_flash(s, x.data(), x.data(), x.data(), x.data(), pool, sc, kernels::Isa::Neon);
  } catch (const InvalidArgument&) {
    threw = true;
  }
  CHECK(threw);
}

TEST_MAIN()
