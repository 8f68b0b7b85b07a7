// The pieces of the vision encoder's fast softmax (ops/fast_math: max_fast, exp_shift_sum_fast)
// against libm / long double, at the sizes attention uses (1024 keys) and with odd tails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/vision_attention.h"
#include "kernels/vision_ops.h"
#include "runtime/cpu.h"
#include "model/attention_full.h"
#include "ops/fast_math.h"
#include "quant/blocks.h"
#include "quant/f16.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;

TEST(max_fast_matches_std) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 10.f);
  for (int64_t n : {1, 7, 8, 9, 100, 1024, 1031}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    float ref = x[0];
    for (float v : x) ref = v > ref ? v : ref;
    CHECK(ops::max_fast(x.data(), n) == ref);
    x[static_cast<size_t>(n - 1)] = 1e30f;  // in the scalar tail
    CHECK(ops::max_fast(x.data(), n) == 1e30f);
  }
}

TEST(exp_shift_sum_matches_libm) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.f, 8.f);
  for (int64_t n : {1, 5, 256, 257, 1024, 1300}) {
    std::vector<float> x(static_cast<size_t>(n)), y;
    for (auto& v : x) v = nd(rng);
    if (n > 1) x[0] = -200.0f;  // far below the clamp: flushes to e^-87.3, not a denormal or garbage
    const float shift = 3.0f;
    y = x;
    const float sum = ops::exp_shift_sum_fast(y.data(), n, shift);
    long double ref_sum = 0;
    double max_rel = 0;
    for (int64_t i = 0; i < n; ++i) {
      // of the float argument x - shift (its rounding, ~1e-6 relative in e at |x| ~ 30, is the
      // caller's; exp_fast's own error is what is bounded here)
      const float arg = x[i] - shift;
      const long double e = std::exp(static_cast<long double>(arg));
      ref_sum += e;
      if (arg > -87.0f) max_rel = std::fmax(max_rel, double(std::fabs((y[i] - e) / e)));
      else CHECK(y[i] >= 0.0f && y[i] < 2e-38f);
    }
    // exp_fast: < 4e-7 relative (fast_math.h); the float sum of <= 1300 positive terms in 8
    // lanes adds ~n/8 * 6e-8 relative at most.
    CHECK_MSG(max_rel < 4e-7, "n %lld: max rel %g", (long long)n, max_rel);
    CHECK_MSG(std::fabs(sum - ref_sum) / ref_sum < 2e-5, "n %lld: sum %g vs %Lg", (long long)n, sum, ref_sum);
  }
}

TEST(quantize_q8_0_fast_matches_reference_quantizer) {
  // Against quant's quantize_row(Q8_0) (bit-exact with gguf-py): the same bytes, ties included.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 3.f);
  const int64_t n = 32 * 200;
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  for (int i = 0; i < 32; ++i) x[32 + i] = 0.0f;  // an all-zero block
  // a block whose codes are exact .5 ties (amax 127 -> d = 1): +-2.5 must round away from zero
  for (int i = 0; i < 32; ++i) x[64 + i] = (i % 2 ? -1.0f : 1.0f) * (i == 0 ? 127.0f : 0.5f + float(i % 7));
  std::vector<block_q8_0> a(n / 32), b(n / 32);
  ops::quantize_q8_0_fast(x.data(), a.data(), n);
  quantize_row(DType::Q8_0, x.data(), b.data(), n);
  int64_t differ = 0;
  for (int64_t k = 0; k < n / 32; ++k) {
    differ += a[k].d != b[k].d;
    for (int i = 0; i < 32; ++i) differ += a[k].qs[i] != b[k].qs[i];
  }
  CHECK_MSG(differ == 0, "%lld values differ", (long long)differ);
  CHECK(b[2].qs[1] == -2 && b[2].qs[2] == 3);  // the ties: -1.5 -> -2, 2.5 -> 3
}

// The int8 attention (AttentionShape::int8) against the float64 softmax(QK^T)V. Its error comes
// from rounding Q, K, V and the probabilities through Q8_0 (each ~1/254 of its block's max,
// relative ~2e-3 RMS per operand); with logits of O(4) as here (scale 2/sqrt(d), unit inputs) the
// output moves by ~1% RMS of its own RMS -- bounded at 3% (the f32 path is at ~1e-6).
TEST(attention_int8_close_to_exact) {
  ThreadPool pool(2);
  std::mt19937 rng(6);
  std::normal_distribution<float> nd(0.f, 1.f);
  struct Case { int64_t nq, nkv, heads, d; };
  for (Case c : {Case{77, 77, 4, 72}, Case{130, 1024, 2, 72}, Case{64, 300, 2, 128}, Case{5, 33, 3, 12}}) {
    model::AttentionShape s;
    s.n_q = c.nq;
    s.n_kv = c.nkv;
    s.n_heads = c.heads;
    s.head_dim = c.d;
    const int64_t width = c.heads * c.d;
    s.q_stride = width + 3;
    s.k_stride = width + 5;
    s.v_stride = width;
    s.out_stride = width + 1;
    s.scale = 2.0f / std::sqrt(static_cast<float>(c.d));
    s.int8 = true;
    std::vector<float> q(c.nq * s.q_stride), k(c.nkv * s.k_stride), v(c.nkv * s.v_stride);
    for (auto* b : {&q, &k, &v})
      for (auto& x : *b) x = nd(rng);
    std::vector<float> out(c.nq * s.out_stride, 123.0f), scratch;
    model::attention_full(s, q.data(), k.data(), v.data(), out.data(), pool, scratch);
    double err2 = 0, ref2 = 0;
    std::vector<double> p(c.nkv);
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.nq; ++i) {
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < c.nkv; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < c.d; ++e) dot += double(q[i * s.q_stride + h * c.d + e]) * k[j * s.k_stride + h * c.d + e];
          p[j] = dot * s.scale;
          mx = p[j] > mx ? p[j] : mx;
        }
        for (int64_t j = 0; j < c.nkv; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t e = 0; e < c.d; ++e) {
          double o = 0;
          for (int64_t j = 0; j < c.nkv; ++j) o += p[j] / sum * v[j * s.v_stride + h * c.d + e];
          const double diff = out[i * s.out_stride + h * c.d + e] - o;
          err2 += diff * diff;
          ref2 += o * o;
        }
      }
    const double rel = std::sqrt(err2 / ref2);
    std::printf("  int8 attention n_q %lld n_kv %lld d %lld: rel. RMS %.2e\n", (long long)c.nq, (long long)c.nkv,
                (long long)c.d, rel);
    CHECK_MSG(rel < 3e-2, "rel RMS %g", rel);
    CHECK(rel > 1e-5);  // the int8 path ran (the f32 one is at ~1e-7)
    for (int64_t i = 0; i < c.nq; ++i) CHECK(out[i * s.out_stride + width] == 123.0f);  // padding untouched
  }
}

// kernels/vision_ops.h: every path (the scalar twins, AVX-512 where the CPU has it) against float64
// LayerNorm / GELU (tanh form) at the real widths and odd ones (masked tails, pad columns).
// Bounds: f32 LN of O(1) rows is good to a few ulp of the output (|y| <= ~5 here): 1e-5 absolute;
// GELU's exp polynomial (~2 ulp) and the 1 - 2/(e+1) form (cancellation near u = 0 is multiplied
// back by v there): 2e-6 absolute + 2e-6 relative. SIMD vs twin: the same operations in another
// summation order / with FMA: 2e-6.
TEST(vision_row_ops_match_float64) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<kernels::Isa> paths{kernels::Isa::Ref};
  if (kernels::isa_available(kernels::Isa::Avx512)) paths.push_back(kernels::Isa::Avx512);
  for (int64_t d : {1, 15, 16, 17, 100, 1152, 3584, 4304}) {
    std::vector<float> x(d), r(d), bias(d), w(d), b(d);
    for (int64_t j = 0; j < d; ++j) {
      x[j] = 3.0f * nd(rng) + 0.5f;  // a mean far from 0: the two-pass variance matters
      r[j] = nd(rng);
      bias[j] = 0.1f * nd(rng);
      w[j] = 1.0f + 0.1f * nd(rng);
      b[j] = 0.05f * nd(rng);
    }
    // float64 references
    std::vector<double> xr(d), ln(d), ln_res(d), ge(d);
    auto ln64 = [&](const std::vector<double>& v, std::vector<double>& out) {
      double mean = 0, var = 0;
      for (double e : v) mean += e;
      mean /= d;
      for (double e : v) var += (e - mean) * (e - mean);
      const double rs = 1.0 / std::sqrt(var / d + 1e-6);
      for (int64_t j = 0; j < d; ++j) out[j] = (v[j] - mean) * rs * w[j] + b[j];
    };
    std::vector<double> xd(x.begin(), x.end());
    ln64(xd, ln);
    for (int64_t j = 0; j < d; ++j) xr[j] = double(x[j]) + (double(r[j]) + double(bias[j]));
    ln64(xr, ln_res);
    for (int64_t j = 0; j < d; ++j) {
      const double v = double(x[j]) + bias[j];
      ge[j] = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    }
    std::vector<std::vector<float>> outs;
    for (kernels::Isa isa : paths) {
      const kernels::vops::RowOps& ops = kernels::vops::row_ops(isa);
      std::vector<float> y(d), xs = x, yr = r, g(d + 9, 7.0f);
      ops.layer_norm(x.data(), w.data(), b.data(), y.data(), d, 1e-6f);
      ops.residual_layer_norm(xs.data(), yr.data(), bias.data(), w.data(), b.data(), yr.data(), d, 1e-6f);
      ops.bias_gelu(x.data(), bias.data(), g.data(), d, d + 7);
      double e_ln = 0, e_res = 0, e_x = 0, e_ge = 0;
      for (int64_t j = 0; j < d; ++j) {
        e_ln = std::max(e_ln, std::fabs(y[j] - ln[j]));
        e_res = std::max(e_res, std::fabs(yr[j] - ln_res[j]));
        e_x = std::max(e_x, std::fabs(xs[j] - xr[j]) / (std::fabs(xr[j]) + 1.0));
        e_ge = std::max(e_ge, std::fabs(g[j] - ge[j]) / (2e-6 + 2e-6 * std::fabs(ge[j])));
      }
      CHECK_MSG(e_ln < 1e-5 && e_res < 1e-5 && e_x < 1e-6 && e_ge < 1.0, "%s d %lld: ln %g res-ln %g x %g gelu %g",
                kernels::isa_name(isa), (long long)d, e_ln, e_res, e_x, e_ge);
      for (int64_t j = d; j < d + 7; ++j) CHECK(g[j] == 0.0f);  // pad zeroed
      CHECK(g[d + 7] == 7.0f && g[d + 8] == 7.0f);             // and nothing past it
      y.insert(y.end(), yr.begin(), yr.end());
      y.insert(y.end(), g.begin(), g.begin() + d);
      outs.push_back(y);
    }
    for (size_t p = 1; p < outs.size(); ++p) {
      double md = 0;
      for (size_t j = 0; j < outs[0].size(); ++j) md = std::max(md, double(std::fabs(outs[p][j] - outs[0][j])));
      CHECK_MSG(md < 2e-6 * 8, "%s vs twin d %lld: max diff %g", kernels::isa_name(paths[p]), (long long)d, md);
    }
  }
  // GELU over the whole clamp range and beyond (u = +-9 at |v| ~ 4.5): the float64 formula
  std::vector<float> v(4001), zero(4001, 0.0f);
  for (int i = 0; i <= 4000; ++i) v[i] = -20.0f + 0.01f * i;
  for (kernels::Isa isa : paths) {
    std::vector<float> g(v.size());
    kernels::vops::row_ops(isa).bias_gelu(v.data(), zero.data(), g.data(), 4001, 4001);
    double worst = 0;
    for (int i = 0; i <= 4000; ++i) {
      const double x = v[i], ref = 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
      worst = std::max(worst, std::fabs(g[i] - ref) / (2e-6 + 2e-6 * std::fabs(ref)));
    }
    CHECK_MSG(worst < 1.0, "%s gelu sweep: %g of the bound", kernels::isa_name(isa), worst);
  }
}

// The AVX-512 bf16 packing of a head against the scalar one: the same bytes (both round to nearest
// even; inputs are normal floats, where vcvtneps2bf16 and fp32_to_bf16 agree), including keys past
// n_kv, dims past d and exact bf16 ties.
TEST(pack_keys_bf16_avx512_matches_scalar) {
#if defined(MINICPMV_X86)
  if (!kernels::isa_available(kernels::Isa::Avx512) || !cpu::features().avx512_bf16) {
    std::printf("  (no AVX512_BF16: nothing to compare)\n");
    return;
  }
  namespace va = kernels::vattn;
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.f, 2.f);
  struct Case { int64_t n_kv, d; };
  for (Case c : {Case{1024, 72}, Case{77, 72}, Case{33, 128}, Case{5, 12}, Case{40, 13}, Case{16, 1}, Case{20, 170}}) {
    const int64_t stride = c.d + 3, nkp = va::padded_keys(c.n_kv), dp = va::padded_dim(c.d), d2 = va::half_dim(c.d);
    std::vector<float> k(c.n_kv * stride), v(c.n_kv * stride);
    for (auto* b : {&k, &v})
      for (auto& x : *b) x = nd(rng);
    k[0] = 1.0f + 1.0f / 256;  // exact ties: 1 + 2^-8 rounds to 1 (even), 1 + 3 * 2^-8 up
    if (c.d > 1) k[1] = 1.0f + 3.0f / 256;
    v[0] = -(1.0f + 1.0f / 256);
    std::vector<uint16_t> kt_a(nkp * d2 * 2, 0xAAAA), vp_a(nkp * dp, 0xAAAA), kt_b = kt_a, vp_b = vp_a;
    for (int64_t j0 = 0; j0 < nkp; j0 += 16) {
      va::pack_keys_bf16(k.data(), stride, v.data(), stride, c.n_kv, c.d, j0, j0 + 16, kt_a.data(), vp_a.data());
      va::pack_keys_bf16_avx512(k.data(), stride, v.data(), stride, c.n_kv, c.d, j0, j0 + 16, kt_b.data(), vp_b.data());
    }
    int64_t diff = 0;
    for (size_t i = 0; i < kt_a.size(); ++i) diff += kt_a[i] != kt_b[i];
    for (size_t i = 0; i < vp_a.size(); ++i) diff += vp_a[i] != vp_b[i];
    CHECK_MSG(diff == 0, "n_kv %lld d %lld: %lld values differ", (long long)c.n_kv, (long long)c.d, (long long)diff);
    CHECK(kt_a[0] == 0x3f80 && (c.d == 1 || kt_a[1] == 0x3f82) && vp_a[0] == 0xbf80);  // the ties, even
    // the queries (scaled, in pairs), with a guard word after every row block
    const int64_t rows = std::min<int64_t>(c.n_kv, va::kRows);
    std::vector<uint32_t> qa(rows * d2 + 1, 0x55555555u), qb = qa;
    va::queries_bf16(k.data(), stride, rows, c.d, 0.37f, qa.data());
    va::queries_bf16_avx512(k.data(), stride, rows, c.d, 0.37f, qb.data());
    int64_t qdiff = 0;
    for (size_t i = 0; i < qa.size(); ++i) qdiff += qa[i] != qb[i];
    CHECK_MSG(qdiff == 0 && qb.back() == 0x55555555u, "queries n %lld d %lld: %lld differ", (long long)rows,
              (long long)c.d, (long long)qdiff);
  }
#endif
}

TEST_MAIN()
