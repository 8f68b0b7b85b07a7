// AVX2 + FMA + F16C grouped-query attention (the algorithm is in kernels/attention_impl.h) and
// f32 -> f16 rows: vcvtph2ps / vcvtps2ph (round to nearest even, as quant/f16.h).
#include <immintrin.h>

#include "kernels/attention.h"

namespace minicpmv {
namespace kernels {
namespace {

struct V256 {
  using F = __m256;
  static constexpr int W = 8;
  static constexpr int kRows = 4, kPos = 2, kCols = 2;
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static F pow2i(F kb) {
    const __m256i b = _mm256_add_epi32(_mm256_castps_si256(kb), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(b, 23));
  }
  static F exp(F x);
};

}  // namespace
}  // namespace kernels
}  // namespace minicpmv

#include "kernels/attention_impl.h"

namespace minicpmv {
namespace kernels {
namespace {
V256::F V256::exp(F x) {
  const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
  return _mm256_and_ps(live, exp_poly<V256>(x));
}
}  // namespace

namespace attn {

void block_avx2(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch) {
  attention_block<V256>(a, kv_head, i0, i1, scratch);
}

void f16_row_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (i < n) {
    float in[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint16_t out[8];
    for (int64_t j = i; j < n; ++j) in[j - i] = x[j];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (int64_t j = i; j < n; ++j) y[j] = out[j - i];
  }
}

}  // namespace attn
}  // namespace kernels
}  // namespace minicpmv
