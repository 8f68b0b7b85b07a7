// AVX2 + FMA + F16C kernels (no VNNI): int8 products with vpmaddubsw (u8 x s8 -> i16 pairs) then
// vpmaddwd. vpmaddubsw saturates at 2^15, so the unsigned operand is kept small:
//  - Q4_0 / Q4_1: codes 0..15 (pair sum <= 2*15*128); offset -8 / min m from the activation's s.
//  - Q8_0: sign trick, |w| (<= 128) x sign(w)*x (|x| <= 127): pair sum <= 32512.
//  - Q4_K: codes 0..15; Q6_K: codes 0..63 (pair sum <= 16128), -32 offset from the bsums.
// Scales are applied in int32 (vpmaddwd with the sub-block scale) per super-block.
// Not vectorised here (the scalar kernel is used in this table): Q5_0, Q5_1, Q5_K (not among the
// model's formats).
// Tiles: floats 2 rows x up to 4 tokens (16 ymm registers); quantized 1 row x up to 4 tokens,
// Q4_K / Q6_K 1 row x up to 8 (their unpacking costs more than one token's products: 8 tokens
// per unpack measured 107 -> 133 GOP/s Q4_K, 109 -> 119 Q6_K, 1 thread, n = 64; 12 no better; the
// 32-block tiles gained nothing from 12, their per-token scale FMA dominates).
// Single-token (decode) kernels: x86/avx2_gemv.cpp (fill_avx2_gemv, called at the end here).
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/kernel_set.h"
#include "kernels/tiles.h"

namespace minicpmv {
namespace kernels {
namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float half(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v); }

// ---------------------------------------------------------------- activation quantizers

inline __m256 round_away(__m256 v) {  // std::round, exact for |v| < 2^23
  const __m256 a = abs_ps(v);
  __m256 f = _mm256_floor_ps(a);
  const __m256 up = _mm256_cmp_ps(_mm256_sub_ps(a, f), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  f = _mm256_add_ps(f, _mm256_and_ps(up, _mm256_set1_ps(1.f)));
  return _mm256_or_ps(f, _mm256_and_ps(v, _mm256_set1_ps(-0.f)));
}

// 4 x 8 int32 (each in [-128, 127]) -> 32 int8 in order
inline __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  const __m256i v = _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void quantize_a8(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 32;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  float* ss = dd + nb;
  for (int64_t b = 0; b < nb; ++b) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 32 * b + 8 * i), m = _mm256_max_ps(m, abs_ps(v[i]));
    const float amax = hmax(m);
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[i], _mm256_set1_ps(id))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 32 * b), pack32(q[0], q[1], q[2], q[3]));
    const int sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    dd[b] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    ss[b] = dd[b] * static_cast<float>(sum);
  }
}

void quantize_a8k(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 256;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  int16_t* bsums = reinterpret_cast<int16_t*>(dst + cols + 4 * nb);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + 256 * b;
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 256; j += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(xb + j)));
    const float amax = hmax(m);
    if (amax == 0.f) {
      dd[b] = 0.f;
      std::memset(qs + 256 * b, 0, 256);
      std::memset(bsums + 16 * b, 0, 32);
      continue;
    }
    int k = 0;
    while (k < 255 && std::fabs(xb[k]) != amax) ++k;  // bounded: NaN input must not run off
    const float iscale = -127.f / xb[k];
    const __m256 vs = _mm256_set1_ps(iscale);
    for (int g = 0; g < 8; ++g) {
      __m256i q[4];
      for (int i = 0; i < 4; ++i)
        q[i] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * g + 8 * i), vs)),
                                _mm256_set1_epi32(127));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 256 * b + 32 * g), pack32(q[0], q[1], q[2], q[3]));
      bsums[16 * b + 2 * g] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[0], q[1])));
      bsums[16 * b + 2 * g + 1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[2], q[3])));
    }
    dd[b] = 1.f / iscale;
  }
}

// ---------------------------------------------------------------- float weights

struct LoadF32 {
  static __m256 load(const uint8_t* p, int64_t j) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + j); }
};
struct LoadF16 {
  static __m256 load(const uint8_t* p, int64_t j) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * j)));
  }
};
struct LoadBF16 {
  static __m256 load(const uint8_t* p, int64_t j) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * j));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
};
float scalar_w(DType t, const uint8_t* p, int64_t j);

template <class L, DType kType>
struct FloatTile {
  static constexpr int MR = 2;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    __m256 acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) acc[r][t] = _mm256_setzero_ps();
    const float* xf[NR];
    for (int t = 0; t < NR; ++t) xf[t] = reinterpret_cast<const float*>(x[t]);
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      __m256 wv[MR];
      for (int r = 0; r < MR; ++r) wv[r] = L::load(w[r], j);
      for (int t = 0; t < NR; ++t) {
        const __m256 xv = _mm256_loadu_ps(xf[t] + j);
        for (int r = 0; r < MR; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) {
        float s = hsum(acc[r][t]);
        for (int64_t k = j; k < cols; ++k) s += scalar_w(kType, w[r], k) * xf[t][k];
        out[r][t] = s;
      }
  }
};

float scalar_w(DType t, const uint8_t* p, int64_t j) {
  if (t == DType::F32) return reinterpret_cast<const float*>(p)[j];
  const uint16_t h = load_u16(p + 2 * j);
  if (t == DType::F16) return _cvtsh_ss(h);
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---------------------------------------------------------------- Q4_0 / Q4_1 / Q8_0 x A8

inline __m256i nibbles(const uint8_t* q) {  // 16 bytes -> 32 codes (low nibbles, then high)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m256i w = _mm256_insertf128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
  return _mm256_and_si256(w, _mm256_set1_epi8(0x0F));
}

// sum over 32 products of u8 codes and s8 activations -> 8 int32 lanes
inline __m256i dot_u8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

template <int kType>  // 0: Q4_0, 1: Q4_1, 2: Q8_0
struct Block32Tile {
  static constexpr int MR = 1;
  static constexpr int BS = kType == 0 ? 18 : kType == 1 ? 20 : 34;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nb = cols / 32;
    __m256 acc[NR];
    float corr[NR];
    A8Row xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8Row(x[t], cols), acc[t] = _mm256_setzero_ps(), corr[t] = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w[0] + b * BS;
      if ((b & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(blk + 2048), _MM_HINT_T0);  // see avx512.cpp
      const float dw = half(blk);
      if (kType == 2) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        const __m256i aq = _mm256_sign_epi8(q, q);
        for (int t = 0; t < NR; ++t) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].qs + 32 * b));
          const __m256i dot = dot_u8(aq, _mm256_sign_epi8(xv, q));
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * xa[t].d[b]), acc[t]);
        }
      } else {
        const __m256i q = nibbles(blk + (kType == 0 ? 2 : 4));
        const float c = kType == 0 ? -8.f * dw : half(blk + 2);
        for (int t = 0; t < NR; ++t) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].qs + 32 * b));
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8(q, xv)), _mm256_set1_ps(dw * xa[t].d[b]), acc[t]);
          corr[t] += c * xa[t].s[b];
        }
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = hsum(acc[t]) + corr[t];
  }
};

// ---------------------------------------------------------------- Q4_K / Q6_K x A8K

struct Q4KTile {
  static constexpr int MR = 1;
  static constexpr int kTokens = 8;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nsb = cols / 256;
    __m256 acc[NR];
    A8KRow xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8KRow(x[t], cols), acc[t] = _mm256_setzero_ps();
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    for (int64_t sb = 0; sb < nsb; ++sb) {
      const uint8_t* blk = w[0] + sb * 144;
      for (int l = 0; l < 144; l += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + 2048 + l), _MM_HINT_T0);
      const float d = half(blk), dmin = half(blk + 2);
      uint32_t u[3];
      std::memcpy(u, blk + 4, 12);
      uint32_t scm[4] = {u[0] & 0x3f3f3f3f, (u[2] & 0x0f0f0f0f) | ((u[0] & 0xc0c0c0c0) >> 2), u[1] & 0x3f3f3f3f,
                         ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] & 0xc0c0c0c0) >> 2)};
      uint8_t sm[16];
      std::memcpy(sm, scm, 16);  // sc[0..7], m[0..7]
      const __m128i mv = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm + 8));
      const __m256i m16 = _mm256_cvtepu8_epi16(
          _mm_shuffle_epi8(mv, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
      __m256i isum[NR];
      for (int t = 0; t < NR; ++t) isum[t] = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * c));
        const __m256i lo = _mm256_and_si256(q, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
        const __m256i s1 = _mm256_set1_epi16(sm[2 * c]), s2 = _mm256_set1_epi16(sm[2 * c + 1]);
        for (int t = 0; t < NR; ++t) {
          const int8_t* xq = xa[t].qs + 256 * sb + 64 * c;
          const __m256i p1 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)));
          const __m256i p2 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_madd_epi16(p1, s1), _mm256_madd_epi16(p2, s2)));
        }
      }
      for (int t = 0; t < NR; ++t) {
        const float dx = xa[t].d[sb];
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].bsums + 16 * sb));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
        acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(m16, bs)), _mm256_set1_ps(dmin * dx), acc[t]);
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = hsum(acc[t]);
  }
};

struct Q6KTile {
  static constexpr int MR = 1;
  static constexpr int kTokens = 8;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nsb = cols / 256;
    __m256 acc[NR];
    A8KRow xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8KRow(x[t], cols), acc[t] = _mm256_setzero_ps();
    const __m256i lo4 = _mm256_set1_epi8(0x0F), hm = _mm256_set1_epi8(0x30);
    for (int64_t sb = 0; sb < nsb; ++sb) {
      const uint8_t* blk = w[0] + sb * 210;
      for (int l = 0; l < 210; l += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + 2048 + l), _MM_HINT_T0);
      const float d = half(blk + 208);
      const __m128i scv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
      const __m256i sc16 = _mm256_cvtepi8_epi16(scv);
      const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
      __m256i isum[NR];
      for (int t = 0; t < NR; ++t) isum[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
        __m256i q[4];  // codes 0..31, 32..63, 64..95, 96..127 of this half
        q[0] = _mm256_or_si256(_mm256_and_si256(ql0, lo4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), hm));
        q[1] = _mm256_or_si256(_mm256_and_si256(ql1, lo4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), hm));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), lo4), _mm256_and_si256(qh, hm));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), lo4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), hm));
        for (int k = 0; k < 4; ++k) {
          const int sub = 8 * h + 2 * k;  // sub-blocks of 16 covered by this 32-code vector
          const __m256i s = _mm256_setr_m128i(_mm_set1_epi16(sc[sub]), _mm_set1_epi16(sc[sub + 1]));
          for (int t = 0; t < NR; ++t) {
            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].qs + 256 * sb + 128 * h + 32 * k));
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], xv), s));
          }
        }
      }
      for (int t = 0; t < NR; ++t) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].bsums + 16 * sb));
        const __m256i tot = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(d * xa[t].d[sb]), acc[t]);
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = hsum(acc[t]);
  }
};

}  // namespace

void fill_avx2(KernelSet& ks) {
  fill_ref(ks);  // Q5_0, Q5_1, Q5_K stay scalar on this path
  ks.name = "avx2";
  ks.quantize_a8 = quantize_a8;
  ks.quantize_a8k = quantize_a8k;
  auto set = [&](DType t, GemmFn f) { ks.gemm[static_cast<int>(t)] = f; };
  set(DType::F32, gemm_tiled<FloatTile<LoadF32, DType::F32>>);
  set(DType::F16, gemm_tiled<FloatTile<LoadF16, DType::F16>>);
  set(DType::BF16, gemm_tiled<FloatTile<LoadBF16, DType::BF16>>);
  set(DType::Q4_0, gemm_tiled<Block32Tile<0>>);
  set(DType::Q4_1, gemm_tiled<Block32Tile<1>>);
  set(DType::Q8_0, gemm_tiled<Block32Tile<2>>);
  set(DType::Q4_K, gemm_tiled<Q4KTile>);
  set(DType::Q6_K, gemm_tiled<Q6KTile>);
  fill_avx2_gemv(ks);  // decode kernels (x86/avx2_gemv.cpp); fill_avx512 overrides them after
}

}  // namespace kernels
}  // namespace minicpmv
