// AVX-512 (F/BW/VL/DQ + VNNI) kernels. Integer products use vpdpbusd (u8 x s8 -> i32), so the
// weight operand must be unsigned:
//  - 32-blocks (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0): weights as their stored unsigned codes (Q8_0: w ^ 0x80
//    = w + 128); the offset (-8, -16, -128 per code) or Q4_1/Q5_1's min m is added back once per
//    block from the activation's s = dx*sum(qx): dot = dw*dx*dot_u8 + c*s, c = -offset*dw or m.
//  - K-quants: 4-bit/5-bit/6-bit codes are unsigned already; per-sub-block scales are applied in
//    int32 with vpdpwssd (each vpdpbusd lane sums 4 products, |lane| <= 4*63*128 < 2^15, so it
//    is exact as an int16 operand), the mins / Q6_K's -32 offset come from the Q8_K bsums.
// Float weights (F32 F16 BF16) are widened to f32 exactly and use f32 FMA (vdpbf16ps is not used:
// it would round the activations to bf16).
// Tiles: floats 4 rows x up to 4 tokens (16 zmm accumulators); quantized 1 row x up to 4 tokens
// (K-quants: 8): each unpacked weight vector feeds the NR tokens, whose activations stay in L1
// while matmul.cpp sweeps a row block. 32-blocks go 16 blocks at a time with one scale FMA per 16
// blocks (Block32GroupTile); from 16 tokens on, Q4_0 / Q8_0 use a 16-row x 16-token tile with the
// rows transposed into the zmm lanes and broadcast activations (Rows16Tile: ~2x the 1-row tile).
// K-quants keep int32 super-block sums in registers; from 16 tokens on, Q4_K / Q6_K use a 16-row
// transposed tile over groups of up to 64 tokens (RowsK16Tile + gemm_rows16_groups: sub-block
// scales in int32 per row lane, mins / -32 via the bsums, long rows in column blocks). All 11
// types vectorised.
#include <immintrin.h>

// GCC 12's intrinsic headers trip -Wuninitialized on their own _mm512_undefined_* placeholders.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
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

// ---------------------------------------------------------------- activation quantizers

// round half away from zero (std::round), exact for |v| < 2^23
inline __m512 round_away(__m512 v) {
  const __m512 a = _mm512_abs_ps(v);
  __m512 f = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(a, f), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  f = _mm512_mask_add_ps(f, up, f, _mm512_set1_ps(1.f));
  const __m512 sign = _mm512_and_ps(v, _mm512_castsi512_ps(_mm512_set1_epi32(int(0x80000000u))));
  return _mm512_or_ps(f, sign);
}

void quantize_a8(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 32;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  float* ss = dd + nb;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v0, vid)));
    const __m512i q1 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v1, vid)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
    const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
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
    __m512 m = _mm512_setzero_ps();
    for (int j = 0; j < 256; j += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + j)));
    const float amax = _mm512_reduce_max_ps(m);
    if (amax == 0.f) {
      dd[b] = 0.f;
      std::memset(qs + 256 * b, 0, 256);
      std::memset(bsums + 16 * b, 0, 32);
      continue;
    }
    int k = 0;  // the first element of largest magnitude keeps its sign (as the scalar twin)
    while (k < 255 && std::fabs(xb[k]) != amax) ++k;  // bounded: NaN input must not run off
    const float iscale = -127.f / xb[k];
    const __m512 vs = _mm512_set1_ps(iscale);
    for (int g = 0; g < 16; ++g) {
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * g), vs));  // nearest even
      q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 256 * b + 16 * g), _mm512_cvtepi32_epi8(q));
      bsums[16 * b + g] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
    dd[b] = 1.f / iscale;
  }
}

// ---------------------------------------------------------------- float weights

struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m512 load(const uint8_t* p, int64_t j) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + j); }
  static __m512 load_tail(const uint8_t* p, int64_t j, __mmask16 k) {
    return _mm512_maskz_loadu_ps(k, reinterpret_cast<const float*>(p) + j);
  }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m512 load(const uint8_t* p, int64_t j) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * j)));
  }
  static __m512 load_tail(const uint8_t* p, int64_t j, __mmask16 k) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p + 2 * j));
  }
};
struct LoadBF16 {  // bf16 -> f32 is a 16-bit shift: exact
  static constexpr int kBytes = 2;
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint8_t* p, int64_t j) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * j)));
  }
  static __m512 load_tail(const uint8_t* p, int64_t j, __mmask16 k) { return widen(_mm256_maskz_loadu_epi16(k, p + 2 * j)); }
};

template <class L>
struct FloatTile {
  static constexpr int MR = 4;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    tile_range<NR>(cols, 0, cols, w, x, out);  // (column ranges: for K-splitting, tried, not used)
  }
  template <int NR>
  static void tile_range(int64_t cols, int64_t c0, int64_t c1, const uint8_t* const* w, const uint8_t* const* x,
                         float out[][kTileTokens]) {
    __m512 acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) acc[r][t] = _mm512_setzero_ps();
    const float* xf[NR];
    for (int t = 0; t < NR; ++t) xf[t] = reinterpret_cast<const float*>(x[t]);
    int64_t j = c0;
    for (; j + 16 <= c1; j += 16) {
      __m512 wv[MR];
      for (int r = 0; r < MR; ++r) {
        wv[r] = L::load(w[r], j);
        _mm_prefetch(reinterpret_cast<const char*>(w[r]) + L::kBytes * j + 2048, _MM_HINT_T0);
      }
      for (int t = 0; t < NR; ++t) {
        const __m512 xv = _mm512_loadu_ps(xf[t] + j);
        for (int r = 0; r < MR; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    if (j < c1) {
      const __mmask16 k = static_cast<__mmask16>((1u << (c1 - j)) - 1);
      __m512 wv[MR];
      for (int r = 0; r < MR; ++r) wv[r] = L::load_tail(w[r], j, k);
      for (int t = 0; t < NR; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(k, xf[t] + j);
        for (int r = 0; r < MR; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
  }
};

// ---------------------------------------------------------------- 32-blocks x A8

// [q0 | q1] (two 16-byte nibble arrays) -> 64 codes: q0 low, q0 high, q1 low, q1 high
inline __m512i unpack_nibbles2(const uint8_t* q0, const uint8_t* q1) {
  const __m256i q01 = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1)),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(q0)));
  const __m512i v = _mm512_permutexvar_epi64(_mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0), _mm512_castsi256_si512(q01));
  const __m512i hv = _mm512_mask_blend_epi64(0xCC, v, _mm512_srli_epi16(v, 4));
  return _mm512_and_si512(hv, _mm512_set1_epi8(0x0F));
}

inline __m512i add_q5_high_bits(__m512i v, const uint8_t* qh0, const uint8_t* qh1) {
  uint32_t h0, h1;
  std::memcpy(&h0, qh0, 4);
  std::memcpy(&h1, qh1, 4);
  const __mmask64 k = static_cast<uint64_t>(h0) | (static_cast<uint64_t>(h1) << 32);
  return _mm512_or_si512(v, _mm512_maskz_mov_epi8(k, _mm512_set1_epi8(16)));
}

// Four consecutive 16-byte fields at p, p + stride, p + 2 stride, p + 3 stride -> one zmm.
inline __m512i load4x16(const uint8_t* p, int stride) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + stride)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * stride)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * stride)), 3);
}
// nibble blocks: lo = codes 0..15 of blocks 0..3 (one 128-bit lane each), hi = codes 16..31
inline void unpack4_nibbles(const uint8_t* q, int stride, __m512i& lo, __m512i& hi) {
  const __m512i v = load4x16(q, stride), m = _mm512_set1_epi8(0x0F);
  lo = _mm512_and_si512(v, m);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
}
// Q5: bit j of qh is bit 4 of code j
inline void add4_q5_high_bits(const uint8_t* qh, int stride, __m512i& lo, __m512i& hi) {
  uint64_t klo = 0, khi = 0;
  for (int i = 0; i < 4; ++i) {
    uint32_t h;
    std::memcpy(&h, qh + i * stride, 4);
    klo |= static_cast<uint64_t>(h & 0xFFFF) << (16 * i);
    khi |= static_cast<uint64_t>(h >> 16) << (16 * i);
  }
  const __m512i b4 = _mm512_set1_epi8(16);
  lo = _mm512_or_si512(lo, _mm512_maskz_mov_epi8(klo, b4));
  hi = _mm512_or_si512(hi, _mm512_maskz_mov_epi8(khi, b4));
}

struct Q4_0B {
  static constexpr int BS = 18;
  static constexpr float kOffset = 8.f;
  static constexpr bool kHasMin = false;
  static __m512i unpack(const uint8_t* b0, const uint8_t* b1) { return unpack_nibbles2(b0 + 2, b1 + 2); }
  static void unpack4(const uint8_t* b, __m512i& lo, __m512i& hi) { unpack4_nibbles(b + 2, BS, lo, hi); }
};
struct Q4_1B {
  static constexpr int BS = 20;
  static constexpr float kOffset = 0.f;
  static constexpr bool kHasMin = true;
  static __m512i unpack(const uint8_t* b0, const uint8_t* b1) { return unpack_nibbles2(b0 + 4, b1 + 4); }
  static void unpack4(const uint8_t* b, __m512i& lo, __m512i& hi) { unpack4_nibbles(b + 4, BS, lo, hi); }
};
struct Q5_0B {
  static constexpr int BS = 22;
  static constexpr float kOffset = 16.f;
  static constexpr bool kHasMin = false;
  static __m512i unpack(const uint8_t* b0, const uint8_t* b1) {
    return add_q5_high_bits(unpack_nibbles2(b0 + 6, b1 + 6), b0 + 2, b1 + 2);
  }
  static void unpack4(const uint8_t* b, __m512i& lo, __m512i& hi) {
    unpack4_nibbles(b + 6, BS, lo, hi);
    add4_q5_high_bits(b + 2, BS, lo, hi);
  }
};
struct Q5_1B {
  static constexpr int BS = 24;
  static constexpr float kOffset = 0.f;
  static constexpr bool kHasMin = true;
  static __m512i unpack(const uint8_t* b0, const uint8_t* b1) {
    return add_q5_high_bits(unpack_nibbles2(b0 + 8, b1 + 8), b0 + 4, b1 + 4);
  }
  static void unpack4(const uint8_t* b, __m512i& lo, __m512i& hi) {
    unpack4_nibbles(b + 8, BS, lo, hi);
    add4_q5_high_bits(b + 4, BS, lo, hi);
  }
};
struct Q8_0B {
  static constexpr int BS = 34;
  static constexpr float kOffset = 128.f;
  static constexpr bool kHasMin = false;
  static __m512i unpack(const uint8_t* b0, const uint8_t* b1) {
    const __m512i v = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + 2)), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80)));
  }
  static void unpack4(const uint8_t* b, __m512i& lo, __m512i& hi) {
    const __m512i f = _mm512_set1_epi8(char(0x80));
    lo = _mm512_xor_si512(load4x16(b + 2, BS), f);
    hi = _mm512_xor_si512(load4x16(b + 18, BS), f);
  }
};

// The grouped layout ("P") of A8 activations this path uses for the 32-blocks: within every full
// group of 16 blocks, each run of 4 blocks (128 codes) is stored as codes 0..15 of the 4 blocks,
// then codes 16..31 of the 4 blocks. Nibble weights then unpack with one AND / shift for 4 blocks
// (low nibbles = codes 0..15, high = 16..31), and Q8_0 with 4 16-byte loads. Blocks after the
// last full group stay in natural order.
void quantize_a8p(const float* x, uint8_t* dst, int64_t cols) {
  quantize_a8(x, dst, cols);
  const int64_t nb16 = (cols / 32) & ~int64_t(15);
  for (int64_t b = 0; b < nb16; b += 4) {
    uint8_t* p = dst + 32 * b;
    const __m512i z0 = _mm512_loadu_si512(p), z1 = _mm512_loadu_si512(p + 64);
    _mm512_storeu_si512(p, _mm512_shuffle_i64x2(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_si512(p + 64, _mm512_shuffle_i64x2(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}

// K-quant decode tiles prefetch the weight stream this far ahead (bytes)
constexpr int kDecodePrefetch = 2048;  // 4096 measured the same on Zen 4

// Lane j of a 16-block reduction holds block kPerm[j] (a 4 x 4 transpose, see reduce16).
inline int perm16(int j) { return 4 * (j % 4) + j / 4; }

// p0..p3: int32 dot lanes of block runs 0-3, 4-7, 8-11, 12-15 (4 lanes per block, one 128-bit
// lane per block) -> the 16 block sums, block perm16(j) in lane j.
inline __m512i reduce16(__m512i p0, __m512i p1, __m512i p2, __m512i p3) {
  const __m512i u01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1), _mm512_unpackhi_epi32(p0, p1));
  const __m512i u23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p2, p3), _mm512_unpackhi_epi32(p2, p3));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(u01, u23), _mm512_unpackhi_epi64(u01, u23));
}

// 1 weight row x NR tokens over A8 in the P layout. Per 16 blocks and token: 8 vpdpbusd, one
// 4 x 4 transpose-add, then a single convert + FMA with the 16 block scales dw * dx (instead of
// one convert + FMA per 2 blocks). The 16 f16 scales (and Q4_1/Q5_1 mins) come in one gather.
template <class B>
struct Block32GroupTile {
  static constexpr int MR = 1;
  static constexpr int kPrefetch = 2048;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    tile_range<NR>(cols, 0, cols, w, x, out);
  }
  template <int NR>
  static void tile_range(int64_t cols, int64_t c0, int64_t c1, const uint8_t* const* w, const uint8_t* const* x,
                         float out[][kTileTokens]) {
    const int64_t nb16 = (cols / 32) & ~int64_t(15);
    const int64_t b0 = c0 / 32, b1 = c1 / 32, g1 = std::min(b1, nb16) & ~int64_t(15);
    __m512 acc[NR], cacc[NR];
    A8Row xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8Row(x[t], cols), acc[t] = cacc[t] = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    const __m512i pidx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i goff = _mm512_mullo_epi32(pidx, _mm512_set1_epi32(B::BS));  // lane j -> block perm16(j)
    const __m512i noff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(B::BS));
    const uint8_t* row = w[0];
    for (int64_t g = b0; g < g1; g += 16) {
      const uint8_t* pg = row + g * B::BS;
      // Decode streams the weights from DRAM once: ask for them ~2 KiB ahead of use, which the
      // hardware prefetcher alone does not reach on long rows (measured: +40% on 18944 columns).
      for (int l = 0; l < 16 * B::BS; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pg + kPrefetch + l), _MM_HINT_T0);
      __m512i u01[NR], part[NR];
      for (int s = 0; s < 4; ++s) {
        __m512i lo, hi;
        B::unpack4(pg + 4 * s * B::BS, lo, hi);
        for (int t = 0; t < NR; ++t) {
          const int8_t* xq = xa[t].qs + (g + 4 * s) * 32;
          const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(xq)), hi,
                                                _mm512_loadu_si512(xq + 64));
          if (s == 0 || s == 2) {
            part[t] = d;
          } else {
            const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi32(part[t], d), _mm512_unpackhi_epi32(part[t], d));
            if (s == 1) u01[t] = u;
            else part[t] = _mm512_add_epi32(_mm512_unpacklo_epi64(u01[t], u), _mm512_unpackhi_epi64(u01[t], u));
          }
        }
      }
      // d (and m) of the 16 blocks: in reduce16 lane order for the products, natural for the
      // offset / min term against s.
      const __m512 ws = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(goff, pg, 1)));
      __m512 cw;
      if (B::kHasMin)
        cw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_i32gather_epi32(noff, pg, 1), 16)));
      else
        cw = _mm512_mul_ps(_mm512_permutexvar_ps(pidx, ws), _mm512_set1_ps(-B::kOffset));
      for (int t = 0; t < NR; ++t) {
        const __m512 xs = _mm512_permutexvar_ps(pidx, _mm512_loadu_ps(xa[t].d + g));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(part[t]), _mm512_mul_ps(ws, xs), acc[t]);
        cacc[t] = _mm512_fmadd_ps(cw, _mm512_loadu_ps(xa[t].s + g), cacc[t]);
      }
    }
    float corr[NR];
    for (int t = 0; t < NR; ++t) corr[t] = 0.f;
    for (int64_t b = std::max(b0, g1); b < b1; b += 2) {  // blocks after the last full group, in pairs
      const bool pair = b + 1 < b1;
      const uint8_t* pb = row + b * B::BS;
      const __m512i wv = pair ? B::unpack(pb, pb + B::BS) : _mm512_maskz_mov_epi8(0xFFFFFFFFull, B::unpack(pb, pb));
      const float d0 = half(pb), d1 = pair ? half(pb + B::BS) : 0.f;
      const float c0 = B::kHasMin ? half(pb + 2) : -B::kOffset * d0;
      const float c1 = !pair ? 0.f : B::kHasMin ? half(pb + B::BS + 2) : -B::kOffset * d1;
      const __m512 ws = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
      for (int t = 0; t < NR; ++t) {
        const int8_t* xq = xa[t].qs + b * 32;
        const __m512i xv = pair ? _mm512_loadu_si512(xq) : _mm512_maskz_loadu_epi8(0xFFFFFFFFull, xq);
        const __m512i dot = _mm512_dpbusd_epi32(zero, wv, xv);
        const float dx1 = pair ? xa[t].d[b + 1] : 0.f;
        const __m512 xs = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(xa[t].d[b]), _mm512_set1_ps(dx1));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws, xs), acc[t]);
        corr[t] += c0 * xa[t].s[b] + (pair ? c1 * xa[t].s[b + 1] : 0.f);
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t], cacc[t])) + corr[t];
  }
};

// Prefill tile for Q4_0 / Q8_0 with many tokens: 16 weight rows x 16 tokens. Per block, the 16
// rows' codes are transposed so that one zmm holds the same 4 code positions of all 16 rows; a
// vpdpbusd with the token's 4 activation bytes broadcast then yields 16 row partial sums at once:
// no horizontal reductions, and every decoded weight vector feeds 16 tokens. Lane L of the
// accumulators is row perm16(L) (the 4 x 4 transpose order).
template <class B>
struct Rows16Tile {
  static constexpr int MR = 16;
  static constexpr int kTokens = 16;
  // byte offsets of codes 0..15 / 16..31 of block b in an A8 row in the P layout
  static int64_t lo_off(int64_t b, int64_t nb16) { return b < nb16 ? (b & ~int64_t(3)) * 32 + 16 * (b & 3) : b * 32; }
  static int64_t hi_off(int64_t b, int64_t nb16) { return lo_off(b, nb16) + (b < nb16 ? 64 : 16); }

  // 4 zmm: dword k (bytes 4k..4k+3 of the 16 at offset `off` in block b) of the 16 rows
  static void transpose16(const uint8_t* const* w, int64_t b, int off, __m512i v[4]) {
    __m512i z[4];
    for (int q = 0; q < 4; ++q) {
      const int r = 4 * q;
      z[q] = load4x16_ptrs(w[r] + b * B::BS + off, w[r + 1] + b * B::BS + off, w[r + 2] + b * B::BS + off,
                           w[r + 3] + b * B::BS + off);
    }
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    v[0] = _mm512_unpacklo_epi64(t0, t2);
    v[1] = _mm512_unpackhi_epi64(t0, t2);
    v[2] = _mm512_unpacklo_epi64(t1, t3);
    v[3] = _mm512_unpackhi_epi64(t1, t3);
  }
  static __m512i load4x16_ptrs(const uint8_t* a, const uint8_t* b, const uint8_t* c, const uint8_t* d) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(c)), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(d)), 3);
  }
  static int32_t load_i32(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }

  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nb = cols / 32, nb16 = nb & ~int64_t(15);
    __m512 acc[NR];
    A8Row xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8Row(x[t], cols), acc[t] = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    const __m512i m4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8(char(0x80));
    const uint8_t* wp[16];  // rows in accumulator lane order
    for (int L = 0; L < 16; ++L) wp[L] = w[perm16(L)];
    alignas(32) uint16_t hd[16];
    for (int64_t b = 0; b < nb; ++b) {
      // wv[0..7]: codes {4k..4k+3} for k = 0..7 of the block's 32 positions, in activation order
      __m512i wv[8];
      if (B::BS == 18) {  // Q4_0: low nibbles = codes 0..15, high = 16..31
        __m512i v[4];
        transpose16(w, b, 2, v);
        for (int k = 0; k < 4; ++k) {
          wv[k] = _mm512_and_si512(v[k], m4);
          wv[4 + k] = _mm512_and_si512(_mm512_srli_epi16(v[k], 4), m4);
        }
      } else {  // Q8_0: codes + 128 as unsigned
        __m512i v[4];
        transpose16(w, b, 2, v);
        for (int k = 0; k < 4; ++k) wv[k] = _mm512_xor_si512(v[k], flip);
        transpose16(w, b, 18, v);
        for (int k = 0; k < 4; ++k) wv[4 + k] = _mm512_xor_si512(v[k], flip);
      }
      for (int L = 0; L < 16; ++L) hd[L] = load_u16(wp[L] + b * B::BS);
      const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(hd)));
      const __m512 cw = _mm512_mul_ps(dw, _mm512_set1_ps(-B::kOffset));
      const int64_t lo = lo_off(b, nb16), hi = hi_off(b, nb16);
      for (int t = 0; t < NR; ++t) {
        const int8_t* ql = xa[t].qs + lo;
        const int8_t* qh = xa[t].qs + hi;
        __m512i d = zero;
        for (int k = 0; k < 4; ++k) d = _mm512_dpbusd_epi32(d, wv[k], _mm512_set1_epi32(load_i32(ql + 4 * k)));
        for (int k = 0; k < 4; ++k) d = _mm512_dpbusd_epi32(d, wv[4 + k], _mm512_set1_epi32(load_i32(qh + 4 * k)));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dw, _mm512_set1_ps(xa[t].d[b])), acc[t]);
        acc[t] = _mm512_fmadd_ps(cw, _mm512_set1_ps(xa[t].s[b]), acc[t]);
      }
    }
    for (int t = 0; t < NR; ++t) {
      alignas(64) float v[16];
      _mm512_store_ps(v, acc[t]);
      for (int L = 0; L < 16; ++L) out[perm16(L)][t] = v[L];
    }
  }
};


// ---------------------------------------------------------------- K-quants x A8K

// The 12 packed bytes of Q4_K / Q5_K scales -> sc[0..7] (low 8 bytes) and m[0..7] (high 8 bytes).
inline __m128i unpack_k4_scales(const uint8_t* s) {
  uint32_t u[3];
  std::memcpy(u, s, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3f;
  const uint32_t m_lo = u[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] & 0xc0c0c0c0) >> 2);
  const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] & 0xc0c0c0c0) >> 2);
  return _mm_setr_epi32(int(sc_lo), int(sc_hi), int(m_lo), int(m_hi));
}

// byte shuffles selecting sub-block scales for the 16 int32 lanes of one 64-element chunk
inline __m128i k4_scale_idx(int c) {  // lanes 0-7: sub-block 2c, lanes 8-15: 2c+1
  const char a = char(2 * c), b = char(2 * c + 1);
  return _mm_setr_epi8(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
}
inline __m128i q6_scale_idx(int c) {  // 4 lanes per 16-element sub-block 4c..4c+3
  const char a = char(4 * c), b = char(4 * c + 1), e = char(4 * c + 2), f = char(4 * c + 3);
  return _mm_setr_epi8(a, a, a, a, b, b, b, b, e, e, e, e, f, f, f, f);
}

template <bool kFive>
struct Q45KTile {
  static constexpr int MR = 1;
  static constexpr int kTokens = 8;  // 8 isum + 8 acc zmm: the unpacked weights feed 8 tokens
  static constexpr int BS = kFive ? 176 : 144;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    tile_range<NR>(cols, 0, cols, w, x, out);
  }
  template <int NR>
  static void tile_range(int64_t cols, int64_t c0, int64_t c1, const uint8_t* const* w, const uint8_t* const* x,
                         float out[][kTileTokens]) {
    const int64_t sb0 = c0 / 256, sb1 = c1 / 256;
    __m512 acc[NR];
    A8KRow xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8KRow(x[t], cols);
    for (int t = 0; t < NR; ++t) acc[t] = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    const __m128i dup_idx = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      const uint8_t* blk = w[0] + sb * BS;
      for (int l = 0; l < BS; l += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kDecodePrefetch + l), _MM_HINT_T0);
      const float d = half(blk), dmin = half(blk + 2);
      const __m128i scm = unpack_k4_scales(blk + 4);
      const __m256i m16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, dup_idx));  // m[j] for each bsum of 16
      const uint8_t* qh = blk + 16;
      const uint8_t* ql = blk + (kFive ? 48 : 16);
      __m256i qhv;
      if (kFive) qhv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
      __m512i isum[NR];
      for (int t = 0; t < NR; ++t) isum[t] = zero;
      for (int c = 0; c < 4; ++c) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32 * c));
        __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q, lo4)),
                                        _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4), 1);
        if (kFive) {
          const __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qhv), qhv, 1);
          const __m512i sel = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8(char(1 << (2 * c)))),
                                                 _mm256_set1_epi8(char(2 << (2 * c))), 1);
          wv = _mm512_mask_add_epi8(wv, _mm512_test_epi8_mask(hz, sel), wv, _mm512_set1_epi8(16));
        }
        const __m512i s = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(scm, k4_scale_idx(c)));
        for (int t = 0; t < NR; ++t) {
          const __m512i xv = _mm512_loadu_si512(xa[t].qs + sb * 256 + 64 * c);
          isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_dpbusd_epi32(zero, wv, xv), s);
        }
      }
      for (int t = 0; t < NR; ++t) {
        const float dx = xa[t].d[sb];
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].bsums + 16 * sb));
        const __m256 msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(m16, bs));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_set1_ps(d * dx), acc[t]);
        acc[t] = _mm512_fnmadd_ps(_mm512_zextps256_ps512(msum), _mm512_set1_ps(dmin * dx), acc[t]);
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = _mm512_reduce_add_ps(acc[t]);
  }
};

struct Q6KTile {
  static constexpr int MR = 1;
  static constexpr int kTokens = 8;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    tile_range<NR>(cols, 0, cols, w, x, out);
  }
  template <int NR>
  static void tile_range(int64_t cols, int64_t c0, int64_t c1, const uint8_t* const* w, const uint8_t* const* x,
                         float out[][kTileTokens]) {
    const int64_t sb0 = c0 / 256, sb1 = c1 / 256;
    __m512 acc[NR];
    A8KRow xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8KRow(x[t], cols);
    for (int t = 0; t < NR; ++t) acc[t] = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    const __m512i lo4 = _mm512_set1_epi8(0x0F), hmask = _mm512_set1_epi8(0x30);
    // qh bits 0-1 / 2-3 of byte l go to codes l / l+32 of the first chunk of a half, bits 4-5 /
    // 6-7 to the second chunk: shift the two copies of qh by different amounts into bits 4-5.
    const __m512i shl0 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr1 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      const uint8_t* blk = w[0] + sb * 210;
      for (int l = 0; l < 210; l += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kDecodePrefetch + l), _MM_HINT_T0);
      const float d = half(blk + 208);
      const __m128i scv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
      __m512i isum[NR];
      for (int t = 0; t < NR; ++t) isum[t] = zero;
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
        const __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
        for (int p = 0; p < 2; ++p) {
          const int c = 2 * h + p;
          const __m512i lo = p == 0 ? _mm512_and_si512(ql, lo4) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), lo4);
          const __m512i hi = p == 0 ? _mm512_sllv_epi16(hz, shl0) : _mm512_srlv_epi16(hz, shr1);
          const __m512i wv = _mm512_or_si512(lo, _mm512_and_si512(hi, hmask));
          const __m512i s = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(scv, q6_scale_idx(c))), lo16);
          for (int t = 0; t < NR; ++t) {
            const __m512i xv = _mm512_loadu_si512(xa[t].qs + sb * 256 + 64 * c);
            isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_dpbusd_epi32(zero, wv, xv), s);
          }
        }
      }
      const __m256i sc16 = _mm256_cvtepi8_epi16(scv);
      for (int t = 0; t < NR; ++t) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].bsums + 16 * sb));
        const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);  // 32 * sum sc_i bsum_i
        const __m512i tot = _mm512_sub_epi32(isum[t], _mm512_zextsi256_si512(off));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_set1_ps(d * xa[t].d[sb]), acc[t]);
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = _mm512_reduce_add_ps(acc[t]);
  }
};

// 4 zmm from 16 rows: v[k] = dword k (bytes 4k..4k+3) of the 16 bytes at w[r] + off, for all 16
// rows r; lane L holds row perm16(L) (a 4 x 4 transpose of 128-bit lanes x dwords).
inline void transpose16x16(const uint8_t* const* w, int64_t off, __m512i v[4]) {
  __m512i z[4];
  for (int q = 0; q < 4; ++q) {
    const int r = 4 * q;
    __m512i a = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + off)));
    a = _mm512_inserti32x4(a, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r + 1] + off)), 1);
    a = _mm512_inserti32x4(a, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r + 2] + off)), 2);
    z[q] = _mm512_inserti32x4(a, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r + 3] + off)), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm512_unpacklo_epi64(t0, t2);
  v[1] = _mm512_unpackhi_epi64(t0, t2);
  v[2] = _mm512_unpacklo_epi64(t1, t3);
  v[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Prefill tile for Q4_K / Q6_K with many tokens: 16 weight rows x up to 64 tokens (transposed
// rows as Rows16Tile). Per super-block the 16 rows' packed bytes are transposed straight from the
// file layout (16-byte runs of the 16 rows -> one zmm per 4 byte positions, lane L = row
// perm16(L)) and split into codes: 64 zmm (4 KiB, L1) hold the super-block's 256 codes of all 16
// rows, wt[p] = codes 4p..4p+3. That transpose, the gathered scales and d / dmin serve all the
// call's tokens of the group (64: the fixed part fell from ~28% / 35% of the time at 16 tokens to
// ~13% / 15% for Q4_K / Q6_K). The tokens go 8 at a time: each wt zmm is loaded once and feeds 8
// vpdpbusd against the tokens' broadcast activation dwords. bench/cpp/peak_vnni shows what else
// costs: vpmulld / vpdpwssd / FMA take a vpdpbusd slot each; loads, broadcasts, shuffles, logic,
// converts issue beside them (up to 1 per vpdpbusd). Per sub-block and token one vpmulld applies
// the rows' scales exactly in int32 (Q4_K: |32 codes x 127| <= 60960, x 63; Q6_K: |16 x 63 x 127|
// <= 128016, x 128; super-block sums < 2^29). The mins (Q4_K) / the -32 offset (Q6_K) come from
// the A8K bsums with vpdpwssd, also exact in int32. Slot bound per super-block and token: Q4_K
// 64 vpdpbusd / (64 + 8 vpmulld + 4 vpdpwssd + 3 FMA) = 0.81 of peak, Q6_K 64 / (64 + 16 + 8 + 2)
// = 0.71.
template <bool kSix>
struct RowsK16Tile {
  static constexpr int BS = kSix ? 210 : 144;
  static constexpr int kSub = kSix ? 16 : 8;   // sub-blocks per super-block
  static constexpr int kDw = 64 / kSub;         // dwords (4 codes) per sub-block

  // Per super-block state shared by the token groups.
  struct Ctx {
    const __m512i* wt;   // [64] transposed codes
    const __m512i* sc;   // [kSub] scales per lane (int32)
    const __m512i* mp;   // [4] Q4_K: min pairs for vpdpwssd against bsum pairs
    const int32_t* neg;  // Q6_K: [t * 16 + j] = -32 * bsum j of token t (the codes' -32 offset)
    __m512 dw, dm;
    int64_t sb;
    const A8KRow* xa;
    __m512* acc;
  };

  static int32_t load_i32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static __m512i byte_of(__m512i v, int b) { return _mm512_and_si512(_mm512_srli_epi32(v, 8 * b), _mm512_set1_epi32(0xFF)); }
  static __m512i sbyte_of(__m512i v, int b) { return _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * b), 24); }

  // The super-block's codes of the 16 rows (blk[r] = its first byte in row r) -> wt[64].
  static void transpose_codes(const uint8_t* const* blk, __m512i* wt) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i v[4];
    if (!kSix) {
      // qs group g (32 bytes): low nibbles = sub-block 2g, high nibbles = sub-block 2g + 1
      for (int g = 0; g < 4; ++g)
        for (int h = 0; h < 2; ++h) {
          transpose16x16(blk, 16 + 32 * g + 16 * h, v);
          for (int k = 0; k < 4; ++k) {
            wt[16 * g + 4 * h + k] = _mm512_and_si512(v[k], m4);
            wt[16 * g + 8 + 4 * h + k] = _mm512_and_si512(_mm512_srli_epi16(v[k], 4), m4);
          }
        }
    } else {
      // half h: ql[64h + l] low / high nibble = codes l / l + 64, ql[64h + 32 + l] = codes l + 32 /
      // l + 96, and bits 0-1, 2-3, 4-5, 6-7 of qh[32h + l] are bits 4-5 of codes l, +32, +64, +96.
      const __m512i m30 = _mm512_set1_epi8(0x30);
      auto code = [&](__m512i lo, __m512i hi) { return _mm512_or_si512(lo, _mm512_and_si512(hi, m30)); };
      for (int h = 0; h < 2; ++h)
        for (int c = 0; c < 2; ++c) {
          __m512i l0[4], l1[4];
          transpose16x16(blk, 64 * h + 16 * c, l0);
          transpose16x16(blk, 64 * h + 32 + 16 * c, l1);
          transpose16x16(blk, 128 + 32 * h + 16 * c, v);
          __m512i* o = wt + 32 * h + 4 * c;  // dword of code 128h + 16c + 4k
          for (int k = 0; k < 4; ++k) {
            o[k] = code(_mm512_and_si512(l0[k], m4), _mm512_slli_epi16(v[k], 4));
            o[8 + k] = code(_mm512_and_si512(l1[k], m4), _mm512_slli_epi16(v[k], 2));
            o[16 + k] = code(_mm512_and_si512(_mm512_srli_epi16(l0[k], 4), m4), v[k]);
            o[24 + k] = code(_mm512_and_si512(_mm512_srli_epi16(l1[k], 4), m4), _mm512_srli_epi16(v[k], 2));
          }
        }
    }
  }

  // T tokens (x[t0 .. t0 + T)) against the super-block in c. With few tokens each token's sum is
  // split into CH independent chains (vpdpbusd latency 4 x throughput 1 wants >= 4 in flight).
  template <int T>
  static void group(const Ctx& c, int t0) {
    constexpr int CH = T >= 6 ? 1 : T >= 3 ? 2 : 4;
    const __m512i zero = _mm512_setzero_si512();
    const int8_t* q[T];
    for (int t = 0; t < T; ++t) q[t] = c.xa[t0 + t].qs + c.sb * 256;
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = zero;
    for (int j = 0; j < kSub; ++j) {
      __m512i d[CH][T];
      for (int h = 0; h < CH; ++h)
        for (int t = 0; t < T; ++t) d[h][t] = zero;
      if (kSix)  // the sums start at -32 * sum(x): sum (q - 32) x, no per-token offset pass
        for (int t = 0; t < T; ++t) d[0][t] = _mm512_set1_epi32(c.neg[16 * (t0 + t) + j]);
#pragma GCC unroll 8
      for (int k = 0; k < kDw; ++k) {
        const __m512i wv = _mm512_load_si512(c.wt + kDw * j + k);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t)
          d[k % CH][t] = _mm512_dpbusd_epi32(d[k % CH][t], wv, _mm512_set1_epi32(load_i32(q[t] + 4 * (kDw * j + k))));
      }
      for (int t = 0; t < T; ++t) {
        __m512i s = d[0][t];
        for (int h = 1; h < CH; ++h) s = _mm512_add_epi32(s, d[h][t]);
        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(s, c.sc[j]));
      }
    }
    for (int t = 0; t < T; ++t) {
      const int16_t* bs = c.xa[t0 + t].bsums + 16 * c.sb;
      const __m512 dx = _mm512_set1_ps(c.xa[t0 + t].d[c.sb]);
      __m512i ms = zero;
      __m512& acc = c.acc[t0 + t];
      if (!kSix) {
        // 32-sums b_j = bs[2j] + bs[2j+1] (|b_j| <= 32 * 127: int16), packed in pairs
        const __m256i b16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bs));
        const __m256i b32 = _mm256_madd_epi16(b16, _mm256_set1_epi16(1));
        const __m128i bp = _mm_packs_epi32(_mm256_castsi256_si128(b32), _mm256_extracti128_si256(b32, 1));
        ms = _mm512_dpwssd_epi32(ms, c.mp[0], _mm512_broadcastd_epi32(bp));
        ms = _mm512_dpwssd_epi32(ms, c.mp[1], _mm512_set1_epi32(_mm_extract_epi32(bp, 1)));
        ms = _mm512_dpwssd_epi32(ms, c.mp[2], _mm512_set1_epi32(_mm_extract_epi32(bp, 2)));
        ms = _mm512_dpwssd_epi32(ms, c.mp[3], _mm512_set1_epi32(_mm_extract_epi32(bp, 3)));
        // dx * (dw * isum - dm * ms)
        const __m512 v = _mm512_fmsub_ps(_mm512_cvtepi32_ps(isum[t]), c.dw, _mm512_mul_ps(_mm512_cvtepi32_ps(ms), c.dm));
        acc = _mm512_fmadd_ps(v, dx, acc);
      } else {
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(c.dw, dx), acc);
      }
    }
  }

  // 16 rows (w[0..15]) x nt tokens (x[0..nt), nt <= kMaxTokens) -> out[t * 16 + L] = row perm16(L).
  // The transposed super-block and its scales serve all nt tokens: more tokens per call spread
  // that fixed cost (~28% of the time at 16 tokens for Q4_K, 35% for Q6_K) thinner.
  static constexpr int kMaxTokens = 64;
  // Super-blocks [sb0, sb1) only, adding to io[t * 16 + L] (column blocks of a long row).
  using Row = A8KRow;
  static int64_t units(int64_t cols) { return cols / 256; }
  static void tile_n(const uint8_t* const* w, const A8KRow* xa, int nt, int64_t sb0, int64_t sb1, float* io,
                     int64_t /*cols*/) {
    alignas(64) __m512 acc[kMaxTokens];
    for (int t = 0; t < nt; ++t) acc[t] = _mm512_load_ps(io + 16 * t);
    // gather offsets of the rows in lane order, relative to w[0] (a row block is far below 2 GiB)
    alignas(64) int32_t offs[16];
    for (int L = 0; L < 16; ++L) offs[L] = static_cast<int32_t>(w[perm16(L)] - w[0]);
    const __m512i voff = _mm512_load_si512(offs);
    alignas(64) __m512i wt[64], sc[kSub], mp[4];
    alignas(64) int32_t neg[kSix ? kMaxTokens * 16 : 16];
    const uint8_t* blk[16];
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      for (int r = 0; r < 16; ++r) {
        blk[r] = w[r] + sb * BS;
        for (int l = 0; l < BS; l += 64) _mm_prefetch(reinterpret_cast<const char*>(blk[r] + 2 * BS + l), _MM_HINT_T0);
      }
      // the next super-block's activations: 64 token rows are more streams than the hardware
      // prefetcher follows, and a column block's first row tile finds them in L3
      if (sb + 1 < sb1)
        for (int t = 0; t < nt; ++t)
          for (int l = 0; l < 256; l += 64) _mm_prefetch(reinterpret_cast<const char*>(xa[t].qs + (sb + 1) * 256 + l), _MM_HINT_T0);
      transpose_codes(blk, wt);
      const uint8_t* base = blk[0];
      __m512 dw, dm = _mm512_setzero_ps();
      if (!kSix) {
        const __m512i g0 = _mm512_i32gather_epi32(voff, base, 1);  // d | dmin
        const __m512i u0 = _mm512_i32gather_epi32(voff, base + 4, 1);
        const __m512i u1 = _mm512_i32gather_epi32(voff, base + 8, 1);
        const __m512i u2 = _mm512_i32gather_epi32(voff, base + 12, 1);
        dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g0));
        dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g0, 16)));
        const __m512i k3f = _mm512_set1_epi32(0x3f3f3f3f), k0f = _mm512_set1_epi32(0x0f0f0f0f),
                      k30 = _mm512_set1_epi32(0x30303030);
        const __m512i sc_lo = _mm512_and_si512(u0, k3f);
        const __m512i m_lo = _mm512_and_si512(u1, k3f);
        const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(u2, k0f), _mm512_and_si512(_mm512_srli_epi32(u0, 2), k30));
        const __m512i m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), k0f),
                                             _mm512_and_si512(_mm512_srli_epi32(u1, 2), k30));
        for (int j = 0; j < 4; ++j) sc[j] = byte_of(sc_lo, j), sc[4 + j] = byte_of(sc_hi, j);
        // m pairs (m_2i | m_2i+1 << 16) for vpdpwssd against pairs of 32-sums of the bsums
        const __m512i kff = _mm512_set1_epi32(0xFF), kff0000 = _mm512_set1_epi32(0xFF0000);
        for (int h = 0; h < 2; ++h) {
          const __m512i v = h ? m_hi : m_lo;
          mp[2 * h] = _mm512_or_si512(_mm512_and_si512(v, kff), _mm512_and_si512(_mm512_slli_epi32(v, 8), kff0000));
          mp[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(v, 16), kff),
                                          _mm512_and_si512(_mm512_srli_epi32(v, 8), kff0000));
        }
      } else {
        const __m512i g = _mm512_i32gather_epi32(voff, base + 206, 1);  // d in the high half
        dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)));
        for (int i = 0; i < 4; ++i) {
          const __m512i v = _mm512_i32gather_epi32(voff, base + 192 + 4 * i, 1);
          for (int b = 0; b < 4; ++b) sc[4 * i + b] = sbyte_of(v, b);
        }
      }
      if (kSix)
        for (int t = 0; t < nt; ++t) {
          const __m256i b16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa[t].bsums + 16 * sb));
          _mm512_store_si512(neg + 16 * t, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(_mm512_cvtepi16_epi32(b16), 5)));
        }
      const Ctx c{wt, sc, mp, neg, dw, dm, sb, xa, acc};
      int t0 = 0;
      for (; t0 + 8 <= nt; t0 += 8) group<8>(c, t0);
      switch (nt - t0) {
        case 1: group<1>(c, t0); break;
        case 2: group<2>(c, t0); break;
        case 3: group<3>(c, t0); break;
        case 4: group<4>(c, t0); break;
        case 5: group<5>(c, t0); break;
        case 6: group<6>(c, t0); break;
        case 7: group<7>(c, t0); break;
        default: break;
      }
    }
    for (int t = 0; t < nt; ++t) _mm512_store_ps(io + 16 * t, acc[t]);
  }
};

// Prefill (>= 16 tokens) with a grouped 16-row tile K (RowsK16Tile): tokens in groups of up to
// kMaxTokens, rows in 16-row tiles, the row in units of 256 columns (K::units).
// Long rows go in column blocks of kColBlock bytes of activations per group (ffn_down: 18944
// columns, 8 super-blocks per block at 64 tokens): the block's activations stay in L2 while every
// row tile of the call passes over it, instead of 64 x 18944 activation bytes crowding the row
// block's weights out of L2. A partial row tile repeats its last row; its extra results are
// dropped. A last group of 1..7 tokens runs split sums (RowsK16Tile::group, CH chains).
template <class K>
void gemm_rows16_groups(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x,
                        size_t x_stride, int64_t nx, float* y, size_t y_stride) {
  constexpr int64_t kRowTiles = 4;  // rows per pass: 64 (the driver's prefill blocks are <= 64)
  constexpr size_t kColBlock = 128u << 10;
  const int64_t nsb = K::units(cols);
  alignas(64) float acc[kRowTiles][K::kMaxTokens * 16];
  typename K::Row xa[K::kMaxTokens];
  for (int64_t t0 = 0; t0 < nx; t0 += K::kMaxTokens) {
    const int nt = static_cast<int>(std::min<int64_t>(K::kMaxTokens, nx - t0));
    for (int t = 0; t < nt; ++t) xa[t] = typename K::Row(x + (t0 + t) * x_stride, cols);
    const int64_t csb = std::max<int64_t>(1, static_cast<int64_t>(kColBlock / (256 * static_cast<size_t>(nt))));
    for (int64_t rb = 0; rb < nrows; rb += 16 * kRowTiles) {
      const int64_t rows = std::min<int64_t>(16 * kRowTiles, nrows - rb);
      const int ntile = static_cast<int>((rows + 15) / 16);
      for (int i = 0; i < ntile; ++i) std::memset(acc[i], 0, sizeof(float) * 16 * nt);
      for (int64_t s0 = 0; s0 < nsb; s0 += csb) {
        const int64_t s1 = std::min(nsb, s0 + csb);
        for (int i = 0; i < ntile; ++i) {
          const int64_t r0 = rb + 16 * i;
          const int nr = static_cast<int>(std::min<int64_t>(16, nrows - r0));
          const uint8_t* wr[16];
          for (int k = 0; k < 16; ++k) wr[k] = w + (r0 + std::min(k, nr - 1)) * w_stride;
          K::tile_n(wr, xa, nt, s0, s1, acc[i], cols);
        }
      }
      for (int i = 0; i < ntile; ++i) {
        const int64_t r0 = rb + 16 * i;
        const int nr = static_cast<int>(std::min<int64_t>(16, nrows - r0));
        for (int t = 0; t < nt; ++t) {
          float* yr = y + (t0 + t) * y_stride + r0;
          for (int L = 0; L < 16; ++L)
            if (perm16(L) < nr) yr[perm16(L)] = acc[i][16 * t + L];
        }
      }
    }
  }
}

// Q4_0 / Q8_0: the 16 x 16 tile from 16 tokens on, the 1-row group tile below that (decode).
template <class B>
void gemm_q32(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, size_t x_stride,
              int64_t nx, float* y, size_t y_stride) {
  if (nx >= 16) gemm_tiled<Rows16Tile<B>>(cols, w, w_stride, nrows, x, x_stride, nx, y, y_stride);
  else gemm_tiled<Block32GroupTile<B>>(cols, w, w_stride, nrows, x, x_stride, nx, y, y_stride);
}

template <class Tile1, bool kSix>
void gemm_k16(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, size_t x_stride,
              int64_t nx, float* y, size_t y_stride) {
  if (nx >= 16) gemm_rows16_groups<RowsK16Tile<kSix>>(cols, w, w_stride, nrows, x, x_stride, nx, y, y_stride);
  else gemm_tiled<Tile1>(cols, w, w_stride, nrows, x, x_stride, nx, y, y_stride);
}

}  // namespace

void fill_avx512(KernelSet& ks) {
  fill_avx2(ks);
  // The avx2 decode kernels read activations in the avx2 orders; this path reorders some of them
  // (quantize_type below), so none may be inherited: fill_avx512_gemv sets its own pairs.
  for (int t = 0; t < kNumTypes; ++t) ks.gemv[t] = nullptr, ks.quantize_gemv[t] = nullptr;
  ks.name = "avx512";
  ks.quantize_a8 = quantize_a8;
  ks.quantize_a8k = quantize_a8k;
  auto set = [&](DType t, GemmFn f) { ks.gemm[static_cast<int>(t)] = f; };
  set(DType::F32, gemm_tiled<FloatTile<LoadF32>>);
  set(DType::F16, gemm_tiled<FloatTile<LoadF16>>);
  set(DType::BF16, gemm_tiled<FloatTile<LoadBF16>>);
  set(DType::Q4_0, gemm_q32<Q4_0B>);
  set(DType::Q4_1, gemm_tiled<Block32GroupTile<Q4_1B>>);
  set(DType::Q5_0, gemm_tiled<Block32GroupTile<Q5_0B>>);
  set(DType::Q5_1, gemm_tiled<Block32GroupTile<Q5_1B>>);
  set(DType::Q8_0, gemm_q32<Q8_0B>);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0})
    ks.quantize_type[static_cast<int>(t)] = quantize_a8p;
  set(DType::Q4_K, gemm_k16<Q45KTile<false>, false>);
  set(DType::Q5_K, gemm_tiled<Q45KTile<true>>);
  set(DType::Q6_K, gemm_k16<Q6KTile, true>);
  fill_avx512_float(ks);
  fill_avx512_gemv(ks);
}

}  // namespace kernels
}  // namespace minicpmv
