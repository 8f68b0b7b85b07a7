// The pieces of the vision encoder's fast softmax (ops/fast_math: max_fast, exp_shift_sum_fast)
// against libm / long double, at the sizes attention uses (1024 keys) and with odd tails.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/matmul.h"
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

TEST_MAIN()
