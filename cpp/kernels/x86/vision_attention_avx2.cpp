// AVX2 + FMA flash-style full attention (layouts and algorithm: kernels/vision_attention.h), for
// x86 CPUs without AVX-512. 16 ymm registers set the tiles:
//   q.K^T: 4 query rows x one 16-key strip (2 ymm): 8 accumulators; per head dim 2 loads of the
//          strip and 4 broadcast query elements feed 8 FMAs.
//   P.V:   2 query rows x 4 ymm (32 dims) of the head: 8 accumulators; per key 4 loads of the V row
//          and 2 broadcasts feed 8 FMAs. d = 72 runs as 32 + 32 + 8.
// exp: the degree-7 polynomial of the AVX-512 file, 2^n built in the exponent bits (x >= -87 keeps
// n >= -126: a normal number).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/vision_attention.h"

namespace minicpmv::kernels::vattn {
namespace {

inline __m256 exp_neg8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));  // exp(-87) ~ 1.6e-38; also keeps -inf out of n
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// s[r][0..16) = q[r] . K^T strip for R rows.
template <int R>
inline void qk_strip(const float* q, int64_t d, const float* kt, float* s) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    const __m256 k0 = _mm256_loadu_ps(kt + c * 16), k1 = _mm256_loadu_ps(kt + c * 16 + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(q + r * d + c);
      acc[r][0] = _mm256_fmadd_ps(b, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(b, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(s + r * kTile, acc[r][0]);
    _mm256_storeu_ps(s + r * kTile + 8, acc[r][1]);
  }
}

template <int R>
inline void qk_rows(const float* q, int64_t d, const float* kt, int64_t w, float* s) {
  for (int64_t j = 0; j < w; j += 16) qk_strip<R>(q, d, kt + (j / 16) * d * 16, s + j);
}

// o[r][0 .. 8*NV) += sum_j p[r][j] v[j][0 .. 8*NV) for R rows, w keys.
template <int R, int NV>
inline void pv_micro(const float* p, int64_t w, const float* v, int64_t dp, float* o) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < NV; ++i) acc[r][i] = _mm256_loadu_ps(o + r * dp + 8 * i);
  for (int64_t j = 0; j < w; ++j) {
    __m256 vv[NV];
    for (int i = 0; i < NV; ++i) vv[i] = _mm256_loadu_ps(v + j * dp + 8 * i);
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(p + r * kTile + j);
      for (int i = 0; i < NV; ++i) acc[r][i] = _mm256_fmadd_ps(b, vv[i], acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < NV; ++i) _mm256_storeu_ps(o + r * dp + 8 * i, acc[r][i]);
}

template <int R>
inline void pv_rows(const float* p, int64_t w, const float* v, int64_t dp, int64_t d8, float* o) {
  for (int64_t c = 0; c < d8;) {
    const int64_t nv = std::min<int64_t>(4, (d8 - c) / 8);
    switch (nv) {
      case 4: pv_micro<R, 4>(p, w, v + c, dp, o + c); break;
      case 3: pv_micro<R, 3>(p, w, v + c, dp, o + c); break;
      case 2: pv_micro<R, 2>(p, w, v + c, dp, o + c); break;
      default: pv_micro<R, 1>(p, w, v + c, dp, o + c); break;
    }
    c += 8 * nv;
  }
}

}  // namespace

void block_avx2(const Block& b, float* scratch) {
  const int64_t d = b.d, dp = padded_dim(d), d8 = (d + 7) / 8 * 8, nkp = padded_keys(b.n_kv), rows = b.rows;
  float* sc = scratch;            // [rows][kTile]
  float* o = sc + kRows * kTile;  // [rows][dp]
  float* m = o + kRows * dp;
  float* l = m + kRows;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::fill(o, o + rows * dp, 0.0f);
  std::fill(m, m + rows, neg_inf);
  std::fill(l, l + rows, 0.0f);
  for (int64_t j0 = 0; j0 < nkp; j0 += kTile) {
    const int64_t w = std::min(kTile, nkp - j0), valid = std::min(w, b.n_kv - j0);
    const float* kt = b.kt + (j0 / 16) * d * 16;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) qk_rows<4>(b.q + r * d, d, kt, w, sc + r * kTile);
    switch (rows - r) {
      case 3: qk_rows<3>(b.q + r * d, d, kt, w, sc + r * kTile); break;
      case 2: qk_rows<2>(b.q + r * d, d, kt, w, sc + r * kTile); break;
      case 1: qk_rows<1>(b.q + r * d, d, kt, w, sc + r * kTile); break;
      default: break;
    }
    for (r = 0; r < rows; ++r) {  // online softmax of this tile (see block_avx512)
      float* s = sc + r * kTile;
      for (int64_t j = valid; j < w; ++j) s[j] = neg_inf;
      __m256 mx = _mm256_loadu_ps(s);
      for (int64_t j = 8; j < w; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + j));
      const float m_new = std::max(m[r], hmax8(mx));
      const __m256 mv = _mm256_set1_ps(m_new);
      __m256 sum = _mm256_setzero_ps();
      for (int64_t j = 0; j < w; j += 8) {
        const __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
      }
      if (m[r] != neg_inf && m_new > m[r]) {
        const float alpha = std::exp(m[r] - m_new);
        l[r] *= alpha;
        const __m256 av = _mm256_set1_ps(alpha);
        float* orow = o + r * dp;
        for (int64_t c = 0; c < dp; c += 8) _mm256_storeu_ps(orow + c, _mm256_mul_ps(av, _mm256_loadu_ps(orow + c)));
      }
      l[r] += hsum8(sum);
      m[r] = m_new;
    }
    const float* v = b.vp + j0 * dp;
    for (r = 0; r + 2 <= rows; r += 2) pv_rows<2>(sc + r * kTile, w, v, dp, d8, o + r * dp);
    if (r < rows) pv_rows<1>(sc + r * kTile, w, v, dp, d8, o + r * dp);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < d; ++c) b.out[r * b.out_stride + c] = o[r * dp + c] * inv;
  }
}

}  // namespace minicpmv::kernels::vattn
