// AVX-512 row passes of kernels/vision_ops.h (scalar twins: ref/vision_ops_ref.cpp). Rows are whole
// vectors plus one masked tail (1152 = 72 zmm, 4304 = 269, 3584 = 224: no tail at the real widths).
#include <immintrin.h>

// GCC 12's intrinsic headers trip -Wuninitialized on their own _mm512_undefined_* placeholders.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/vision_ops.h"
#include "kernels/x86/exp_avx512.h"

namespace minicpmv::kernels::vops::avx512 {
namespace {

inline __mmask16 tail_mask(int64_t left) { return static_cast<__mmask16>((1u << left) - 1u); }

// lanes: element j in lane j % 16, as the twin's partial sums
inline void moments(const float* x, int64_t d, float eps, __m512& mean, __m512& rstd) {
  __m512 s = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + j));
  if (j < d) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask(d - j), x + j));
  const float m = _mm512_reduce_add_ps(s) / static_cast<float>(d);
  mean = _mm512_set1_ps(m);
  __m512 q = _mm512_setzero_ps();
  for (j = 0; j + 16 <= d; j += 16) {
    const __m512 c = _mm512_sub_ps(_mm512_loadu_ps(x + j), mean);
    q = _mm512_fmadd_ps(c, c, q);
  }
  if (j < d) {
    const __mmask16 k = tail_mask(d - j);
    const __m512 c = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + j), mean);
    q = _mm512_fmadd_ps(c, c, q);
  }
  rstd = _mm512_set1_ps(1.0f / __builtin_sqrtf(_mm512_reduce_add_ps(q) / static_cast<float>(d) + eps));
}

inline void normalize(const float* x, const float* w, const float* b, float* y, int64_t d, __m512 mean, __m512 rstd) {
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mean), rstd);
    _mm512_storeu_ps(y + j, _mm512_fmadd_ps(c, _mm512_loadu_ps(w + j), _mm512_loadu_ps(b + j)));
  }
  if (j < d) {
    const __mmask16 k = tail_mask(d - j);
    const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mean), rstd);
    _mm512_mask_storeu_ps(y + j, k, _mm512_fmadd_ps(c, _mm512_maskz_loadu_ps(k, w + j), _mm512_maskz_loadu_ps(k, b + j)));
  }
}

// e^x for x in [-18, 18]: the twin's exp_poly (kernels/x86/exp_avx512.h)
using avx512_math::exp_poly;

inline __m512 gelu(__m512 v) {
  const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
  __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
  u = _mm512_min_ps(_mm512_max_ps(u, _mm512_set1_ps(-9.0f)), _mm512_set1_ps(9.0f));
  const __m512 e = exp_poly(_mm512_add_ps(u, u));
  const __m512 t = _mm512_sub_ps(_mm512_set1_ps(2.0f),
                                 _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), t);
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t d, float eps) {
  __m512 mean, rstd;
  moments(x, d, eps, mean, rstd);
  normalize(x, w, b, y, d, mean, rstd);
}

void residual_layer_norm(float* x, const float* r, const float* bias, const float* w, const float* b, float* y,
                         int64_t d, float eps) {
  int64_t j = 0;
  for (; j + 16 <= d; j += 16)
    _mm512_storeu_ps(x + j, _mm512_add_ps(_mm512_loadu_ps(x + j),
                                          _mm512_add_ps(_mm512_loadu_ps(r + j), _mm512_loadu_ps(bias + j))));
  for (; j < d; ++j) x[j] += r[j] + bias[j];
  layer_norm(x, w, b, y, d, eps);
}

void bias_gelu(const float* x, const float* bias, float* y, int64_t n, int64_t n_pad) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(y + j, gelu(_mm512_add_ps(_mm512_loadu_ps(x + j), _mm512_loadu_ps(bias + j))));
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    _mm512_mask_storeu_ps(y + j, k, gelu(_mm512_add_ps(_mm512_maskz_loadu_ps(k, x + j), _mm512_maskz_loadu_ps(k, bias + j))));
  }
  for (j = n; j < n_pad; ++j) y[j] = 0.0f;
}

}  // namespace minicpmv::kernels::vops::avx512
