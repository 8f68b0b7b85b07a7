// AVX-512 flash-style full attention (layouts and algorithm: kernels/vision_attention.h).
//   q.K^T: 4 query rows x 64 keys (a whole tile) of accumulators (16 zmm); per head dim, 4 loads of
//          the K^T strips and 4 broadcast query elements feed 16 FMAs. (6 x 32 and 8 x 32 measured
//          the same on Zen 4: 54-55 ms CPU for the tower's 16 heads x 1024 x 1024 x 72.)
//   P.V:   4 query rows x up to 4 zmm + 1 ymm of the head (72 floats for d = 72); per key, the V row
//          is loaded once and used by the 4 rows (16 zmm + 4 ymm FMAs per 5 loads + 4 broadcasts).
// exp is a degree-7 polynomial on [-ln2/2, ln2/2] scaled by vscalefps (~2 ulp; inputs are <= 0).
// GCC 12 flags its own intrinsics' undefined source operands (reductions) once inlined: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/vision_attention.h"
#include "kernels/x86/exp_avx512.h"
#include "quant/f16.h"

namespace minicpmv::kernels::vattn {
namespace {

inline uint32_t fp32_to_bf16_bits(float f) { return fp32_to_bf16(f); }

inline __m512 exp_neg(__m512 x) {
  // exp(-104) underflows to 0; the clamp keeps -inf out of the range reduction
  return avx512_math::exp_poly(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)));
}

// s[r][16*g + i] = q[r] . K^T strip g (g < NK) for R rows.
template <int R, int NK>
inline void qk_micro(const float* q, int64_t d, const float* kt, float* s) {
  __m512 acc[R][NK];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < NK; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    __m512 kv[NK];
    for (int g = 0; g < NK; ++g) kv[g] = _mm512_loadu_ps(kt + g * d * 16 + c * 16);
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(q[r * d + c]);
      for (int g = 0; g < NK; ++g) acc[r][g] = _mm512_fmadd_ps(b, kv[g], acc[r][g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < NK; ++g) _mm512_storeu_ps(s + r * kTile + g * 16, acc[r][g]);
}

template <int R>
inline void qk_rows(const float* q, int64_t d, const float* kt, int64_t w, float* s) {
  int64_t j = 0;
  for (; j + 64 <= w; j += 64) qk_micro<R, 4>(q, d, kt + (j / 16) * d * 16, s + j);
  for (; j + 32 <= w; j += 32) qk_micro<R, 2>(q, d, kt + (j / 16) * d * 16, s + j);
  if (j < w) qk_micro<R, 1>(q, d, kt + (j / 16) * d * 16, s + j);
}

// o[r][0 .. 16*NV + 8*HALF) += sum_j p[r][j] v[j][same] for R rows, w keys. HALF adds one ymm:
// d = 72 is 4 zmm + 8 floats, and a 256-bit FMA costs half a 512-bit one where the core splits
// zmm ops in two (Zen 4), the same elsewhere: cheaper than a 5th, padded zmm.
template <int R, int NV, int HALF>
inline void pv_micro(const float* p, int64_t w, const float* v, int64_t dp, float* o) {
  __m512 acc[R][NV > 0 ? NV : 1];
  __m256 acch[R];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_loadu_ps(o + r * dp + 16 * i);
    if (HALF) acch[r] = _mm256_loadu_ps(o + r * dp + 16 * NV);
  }
  for (int64_t j = 0; j < w; ++j) {
    __m512 vv[NV > 0 ? NV : 1];
    for (int i = 0; i < NV; ++i) vv[i] = _mm512_loadu_ps(v + j * dp + 16 * i);
    __m256 vh = HALF ? _mm256_loadu_ps(v + j * dp + 16 * NV) : _mm256_setzero_ps();
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(p[r * kTile + j]);
      for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_fmadd_ps(b, vv[i], acc[r][i]);
      if (HALF) acch[r] = _mm256_fmadd_ps(_mm512_castps512_ps256(b), vh, acch[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < NV; ++i) _mm512_storeu_ps(o + r * dp + 16 * i, acc[r][i]);
    if (HALF) _mm256_storeu_ps(o + r * dp + 16 * NV, acch[r]);
  }
}

// Columns [0, d8) of the output rows, d8 = d rounded up to 8 (<= dp; the padded V columns past
// d8 are zero and not needed), in chunks of at most 4.5 vectors: 72 -> 4.5, 128 -> 4 + 4,
// 64 -> 4, 144 -> 4.5 + 4.5, 12 -> 1.
template <int R>
inline void pv_rows(const float* p, int64_t w, const float* v, int64_t dp, int64_t d8, float* o) {
  for (int64_t c = 0; c < d8;) {
    const int64_t left = d8 - c;  // a multiple of 8
    const int64_t take = left == 72 || left >= 136 ? 72 : std::min<int64_t>(64, left);
    switch (take) {
      case 72: pv_micro<R, 4, 1>(p, w, v + c, dp, o + c); break;
      case 64: pv_micro<R, 4, 0>(p, w, v + c, dp, o + c); break;
      case 56: pv_micro<R, 3, 1>(p, w, v + c, dp, o + c); break;
      case 48: pv_micro<R, 3, 0>(p, w, v + c, dp, o + c); break;
      case 40: pv_micro<R, 2, 1>(p, w, v + c, dp, o + c); break;
      case 32: pv_micro<R, 2, 0>(p, w, v + c, dp, o + c); break;
      case 24: pv_micro<R, 1, 1>(p, w, v + c, dp, o + c); break;
      case 16: pv_micro<R, 1, 0>(p, w, v + c, dp, o + c); break;
      default: pv_micro<R, 0, 1>(p, w, v + c, dp, o + c); break;
    }
    c += take;
  }
}

// Online softmax of one tile of scores per row (in place: s becomes exp(s - m_new)); the output
// row is rescaled when the max grows.
inline void softmax_tile(float* sc, int64_t rows, int64_t w, int64_t valid, float* m, float* l, float* o, int64_t dp) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    float* s = sc + r * kTile;
    for (int64_t j = valid; j < w; ++j) s[j] = neg_inf;
    __m512 mx = _mm512_loadu_ps(s);
    for (int64_t j = 16; j < w; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j));
    const float m_new = std::max(m[r], _mm512_reduce_max_ps(mx));
    const __m512 mv = _mm512_set1_ps(m_new);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < w; j += 16) {
      const __m512 e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
      _mm512_storeu_ps(s + j, e);
      sum = _mm512_add_ps(sum, e);
    }
    if (m[r] != neg_inf && m_new > m[r]) {
      const float alpha = std::exp(m[r] - m_new);
      l[r] *= alpha;
      const __m512 av = _mm512_set1_ps(alpha);
      float* orow = o + r * dp;
      for (int64_t c = 0; c < dp; c += 16) _mm512_storeu_ps(orow + c, _mm512_mul_ps(av, _mm512_loadu_ps(orow + c)));
    }
    l[r] += _mm512_reduce_add_ps(sum);
    m[r] = m_new;
  }
}

// ---- bf16 variant: vdpbf16ps sums the products of a bf16 pair into each f32 lane.

inline __m512bh as_bh(__m512i x) { return reinterpret_cast<__m512bh&>(x); }
inline __m256bh as_bh(__m256i x) { return reinterpret_cast<__m256bh&>(x); }

// s[r][16*g + i] = q[r] . K^T strip g for R rows; pairs of dims per instruction.
template <int R, int NK>
inline void qk_micro_bf16(const uint32_t* q2, int64_t d2, const uint16_t* ktb, float* s) {
  __m512 acc[R][NK];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < NK; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int64_t c2 = 0; c2 < d2; ++c2) {
    __m512i kv[NK];
    for (int g = 0; g < NK; ++g) kv[g] = _mm512_loadu_si512(ktb + (g * d2 + c2) * 32);
    for (int r = 0; r < R; ++r) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(q2[r * d2 + c2]));
      for (int g = 0; g < NK; ++g) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], as_bh(b), as_bh(kv[g]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < NK; ++g) _mm512_storeu_ps(s + r * kTile + g * 16, acc[r][g]);
}

template <int R>
inline void qk_rows_bf16(const uint32_t* q2, int64_t d2, const uint16_t* ktb, int64_t w, float* s) {
  int64_t j = 0;
  for (; j + 64 <= w; j += 64) qk_micro_bf16<R, 4>(q2, d2, ktb + (j / 16) * d2 * 32, s + j);
  for (; j + 32 <= w; j += 32) qk_micro_bf16<R, 2>(q2, d2, ktb + (j / 16) * d2 * 32, s + j);
  if (j < w) qk_micro_bf16<R, 1>(q2, d2, ktb + (j / 16) * d2 * 32, s + j);
}

// o[r][0 .. 16*NV + 8*HALF) += sum over key pairs of p2[r][j2] . vpb[j2]; w keys (even).
template <int R, int NV, int HALF>
inline void pv_micro_bf16(const uint32_t* p2, int64_t w, const uint16_t* vpb, int64_t dp, float* o) {
  __m512 acc[R][NV > 0 ? NV : 1];
  __m256 acch[R];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_loadu_ps(o + r * dp + 16 * i);
    if (HALF) acch[r] = _mm256_loadu_ps(o + r * dp + 16 * NV);
  }
  for (int64_t j2 = 0; j2 < w / 2; ++j2) {
    const uint16_t* row = vpb + j2 * dp * 2;
    __m512i vv[NV > 0 ? NV : 1];
    for (int i = 0; i < NV; ++i) vv[i] = _mm512_loadu_si512(row + 32 * i);
    const __m256i vh = HALF ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * NV)) : _mm256_setzero_si256();
    for (int r = 0; r < R; ++r) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(p2[r * (kTile / 2) + j2]));
      for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], as_bh(b), as_bh(vv[i]));
      if (HALF) acch[r] = _mm256_dpbf16_ps(acch[r], as_bh(_mm512_castsi512_si256(b)), as_bh(vh));
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < NV; ++i) _mm512_storeu_ps(o + r * dp + 16 * i, acc[r][i]);
    if (HALF) _mm256_storeu_ps(o + r * dp + 16 * NV, acch[r]);
  }
}

template <int R>
inline void pv_rows_bf16(const uint32_t* p2, int64_t w, const uint16_t* vpb, int64_t dp, int64_t d8, float* o) {
  for (int64_t c = 0; c < d8;) {
    const int64_t left = d8 - c;
    const int64_t take = left == 72 || left >= 136 ? 72 : std::min<int64_t>(64, left);
    const uint16_t* v = vpb + c * 2;
    switch (take) {
      case 72: pv_micro_bf16<R, 4, 1>(p2, w, v, dp, o + c); break;
      case 64: pv_micro_bf16<R, 4, 0>(p2, w, v, dp, o + c); break;
      case 56: pv_micro_bf16<R, 3, 1>(p2, w, v, dp, o + c); break;
      case 48: pv_micro_bf16<R, 3, 0>(p2, w, v, dp, o + c); break;
      case 40: pv_micro_bf16<R, 2, 1>(p2, w, v, dp, o + c); break;
      case 32: pv_micro_bf16<R, 2, 0>(p2, w, v, dp, o + c); break;
      case 24: pv_micro_bf16<R, 1, 1>(p2, w, v, dp, o + c); break;
      case 16: pv_micro_bf16<R, 1, 0>(p2, w, v, dp, o + c); break;
      default: pv_micro_bf16<R, 0, 1>(p2, w, v, dp, o + c); break;
    }
    c += take;
  }
}

}  // namespace

void block_avx512(const Block& b, float* scratch) {
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
    softmax_tile(sc, rows, w, valid, m, l, o, dp);
    const float* v = b.vp + j0 * dp;
    for (r = 0; r + 4 <= rows; r += 4) pv_rows<4>(sc + r * kTile, w, v, dp, d8, o + r * dp);
    switch (rows - r) {
      case 3: pv_rows<3>(sc + r * kTile, w, v, dp, d8, o + r * dp); break;
      case 2: pv_rows<2>(sc + r * kTile, w, v, dp, d8, o + r * dp); break;
      case 1: pv_rows<1>(sc + r * kTile, w, v, dp, d8, o + r * dp); break;
      default: break;
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < d; ++c) b.out[r * b.out_stride + c] = o[r * dp + c] * inv;
  }
}

void block_avx512_bf16(const Block& b, float* scratch) {
  const int64_t d = b.d, dp = padded_dim(d), d2 = half_dim(d), d8 = (d + 7) / 8 * 8;
  const int64_t nkp = padded_keys(b.n_kv), rows = b.rows;
  float* sc = scratch;            // [rows][kTile]
  float* o = sc + kRows * kTile;  // [rows][dp]
  float* m = o + kRows * dp;
  float* l = m + kRows;
  uint32_t* p2 = reinterpret_cast<uint32_t*>(l + kRows);  // [rows][kTile / 2] bf16 pairs
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::fill(o, o + rows * dp, 0.0f);
  std::fill(m, m + rows, neg_inf);
  std::fill(l, l + rows, 0.0f);
  for (int64_t j0 = 0; j0 < nkp; j0 += kTile) {
    const int64_t w = std::min(kTile, nkp - j0), valid = std::min(w, b.n_kv - j0);
    const uint16_t* kt = b.ktb + (j0 / 16) * d2 * 32;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) qk_rows_bf16<4>(b.q2 + r * d2, d2, kt, w, sc + r * kTile);
    switch (rows - r) {
      case 3: qk_rows_bf16<3>(b.q2 + r * d2, d2, kt, w, sc + r * kTile); break;
      case 2: qk_rows_bf16<2>(b.q2 + r * d2, d2, kt, w, sc + r * kTile); break;
      case 1: qk_rows_bf16<1>(b.q2 + r * d2, d2, kt, w, sc + r * kTile); break;
      default: break;
    }
    softmax_tile(sc, rows, w, valid, m, l, o, dp);
    // probabilities -> bf16 pairs (vcvtne2ps2bf16: round to nearest even; keys 2j, 2j+1 per lane)
    for (r = 0; r < rows; ++r) {
      const float* s = sc + r * kTile;
      uint32_t* pr = p2 + r * (kTile / 2);
      int64_t j = 0;
      for (; j + 32 <= w; j += 32)
        _mm512_storeu_si512(pr + j / 2, reinterpret_cast<const __m512i&>(static_cast<const __m512bh&>(
                                            _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + j + 16), _mm512_loadu_ps(s + j)))));
      if (j < w) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + j));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + j / 2), reinterpret_cast<const __m256i&>(h));
      }
    }
    const uint16_t* v = b.vpb + j0 * dp;  // key pair j0/2 starts at (j0/2) * dp * 2
    for (r = 0; r + 4 <= rows; r += 4) pv_rows_bf16<4>(p2 + r * (kTile / 2), w, v, dp, d8, o + r * dp);
    switch (rows - r) {
      case 3: pv_rows_bf16<3>(p2 + r * (kTile / 2), w, v, dp, d8, o + r * dp); break;
      case 2: pv_rows_bf16<2>(p2 + r * (kTile / 2), w, v, dp, d8, o + r * dp); break;
      case 1: pv_rows_bf16<1>(p2 + r * (kTile / 2), w, v, dp, d8, o + r * dp); break;
      default: break;
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < d; ++c) b.out[r * b.out_stride + c] = o[r * dp + c] * inv;
  }
}

void queries_bf16_avx512(const float* q, int64_t q_stride, int64_t rows, int64_t d, float scale, uint32_t* q2) {
  const int64_t d2 = half_dim(d);
  const __m512 sv = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = q + r * q_stride;
    uint32_t* dst = q2 + r * d2;
    for (int64_t c = 0; c < 2 * d2; c += 32) {
      const int64_t left = d - c;
      const __mmask16 m0 = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << (left > 0 ? left : 0)) - 1u);
      const int64_t left1 = left - 16;
      const __mmask16 m1 = left1 >= 16 ? 0xffff : static_cast<__mmask16>((1u << (left1 > 0 ? left1 : 0)) - 1u);
      const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, src + c), sv);
      const __m512 hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, src + c + 16), sv);
      const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
      const int64_t pairs = std::min<int64_t>(16, d2 - c / 2);  // the row's last store stops at d2
      _mm512_mask_storeu_epi32(dst + c / 2, static_cast<__mmask16>((1u << pairs) - 1u), reinterpret_cast<const __m512i&>(h));
    }
  }
}

void pack_keys_bf16_avx512(const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n_kv,
                           int64_t d, int64_t j0, int64_t j1, uint16_t* ktb, uint16_t* vpb) {
  const int64_t dp = padded_dim(d), d2 = half_dim(d);
  auto mask = [](int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (left > 0 ? left : 0)) - 1u);
  };
  alignas(64) uint32_t pairs[16 * 80];  // one row's dim pairs, rows of d2 (<= 80 pairs: d <= 160)
  const bool staged = d2 <= 80;
  for (int64_t j = j0; j < j1; ++j) {
    const bool real = j < n_kv;
    // K: row j's dims as bf16 pairs (2c, 2c+1) -> strip column j % 16
    uint32_t* strip = reinterpret_cast<uint32_t*>(ktb + (j / 16) * d2 * 32) + (j % 16);
    if (!real) {
      for (int64_t c2 = 0; c2 < d2; ++c2) strip[c2 * 16] = 0;
    } else if (staged) {
      const float* kr = k + j * k_stride;
      uint32_t* pr = pairs + (j % 16) * 80;
      for (int64_t c = 0; c < 2 * d2; c += 32) {
        const __m512 lo = _mm512_maskz_loadu_ps(mask(d - c), kr + c);
        const __m512 hi = _mm512_maskz_loadu_ps(mask(d - c - 16), kr + c + 16);
        const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);  // lanes 0-15 from lo, 16-31 from hi
        _mm512_storeu_si512(pr + c / 2, reinterpret_cast<const __m512i&>(h));
      }
      for (int64_t c2 = 0; c2 < d2; ++c2) strip[c2 * 16] = pr[c2];
    } else {
      const float* kr = k + j * k_stride;
      for (int64_t c2 = 0; c2 < d2; ++c2)
        strip[c2 * 16] = fp32_to_bf16_bits(kr[2 * c2]) | (2 * c2 + 1 < d ? fp32_to_bf16_bits(kr[2 * c2 + 1]) << 16 : 0u);
    }
  }
  // V: key pairs (2i, 2i+1), 16 dims per store: lane c = bf16(v[2i][c]) | bf16(v[2i+1][c]) << 16
  for (int64_t j = j0; j < j1; j += 2) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(vpb + (j / 2) * dp * 2);
    const float* v0 = v + j * v_stride;
    const float* v1 = v0 + v_stride;
    const bool r0 = j < n_kv, r1 = j + 1 < n_kv;
    for (int64_t c = 0; c < dp; c += 16) {
      const __mmask16 m = mask(d - c);
      const __m512 a = r0 ? _mm512_maskz_loadu_ps(m, v0 + c) : _mm512_setzero_ps();
      const __m512 b = r1 ? _mm512_maskz_loadu_ps(m, v1 + c) : _mm512_setzero_ps();
      const __m256bh ha = _mm512_cvtneps_pbh(a), hb = _mm512_cvtneps_pbh(b);
      const __m512i lo = _mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(ha));
      const __m512i hi = _mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(hb)), 16);
      _mm512_storeu_si512(dst + c, _mm512_or_si512(lo, hi));
    }
  }
}

}  // namespace minicpmv::kernels::vattn
