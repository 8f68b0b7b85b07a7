// AVX-512 grouped-query attention (the algorithm is in kernels/attention_impl.h) and f32 -> f16
// rows: vcvtph2ps / vcvtps2ph (F16C semantics: round to nearest even, as quant/f16.h).
// GCC 12 reports its own intrinsics' "undefined" source operands (vcvtph2ps, reductions) as
// maybe-uninitialized once inlined here: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/attention.h"

namespace minicpmv {
namespace kernels {
namespace {

struct V512 {
  using F = __m512;
  static constexpr int W = 16;
  static constexpr int kRows = 4, kPos = 4, kCols = 4;
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float x) { return _mm512_set1_ps(x); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
  static F pow2i(F kb) {
    const __m512i b = _mm512_add_epi32(_mm512_castps_si512(kb), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(b, 23));
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
V512::F V512::exp(F x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
  return _mm512_maskz_mov_ps(live, exp_poly<V512>(x));
}
}  // namespace

namespace attn {

void block_avx512(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch) {
  attention_block<V512>(a, kv_head, i0, i1, scratch);
}

void f16_row_avx512(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(y + i, k, h);
  }
}

}  // namespace attn
}  // namespace kernels
}  // namespace minicpmv
