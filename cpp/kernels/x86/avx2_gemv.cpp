// AVX2 single-token (decode) kernels: KernelSet::gemv of the avx2 path, used by matmul() when
// n == 1 (laptops with AVX2 + FMA + F16C and no AVX-512).
//
// Decode reads every weight byte from DRAM once, so as in avx512_gemv.cpp the loops take
// kStreams rows per pass, one from each of kStreams contiguous parts of the row range (4
// sequential streams for the prefetchers, the activation loads shared), and prefetch each
// stream kPrefetch bytes ahead. Integer semantics are those of the avx2.cpp tiles:
// vpmaddubsw (u8 x s8 -> s16 pairs) then vpmaddwd, with the unsigned operand kept small enough
// that a pair never saturates (|pair| < 2^15):
//  - Q4_K: codes 0..15 x |a| <= 127 (A8K codes never reach -128): pair <= 3810; the sub-block
//    scale (<= 63) is the vpmaddwd multiplier, so int32 sums per super-block; mins from the bsums.
//  - Q6_K: codes 0..63: pair <= 16002; -32 offset from the bsums (32 * sum sc * bsum).
//  - Q4_0: codes 0..15; two blocks per vector (see q4_0_rows), the -8 offset from the A8 s.
//  - Q8_0: sign trick |w| (<= 128) x sign(w) * a (|a| <= 127): pair <= 32512.
// Every kernel reads the activations in their natural A8 / A8K order, so the path needs no
// quantize_gemv (it stays nullptr: matmul() then uses the avx2 quantizers, as for the tiles).
// The sub-block scale vectors come from one vpshufb each (a word broadcast within each 128-bit
// lane) of the super-block's scales widened to int16 once per row.
// The scalar twins are the ref kernels (kernels/ref); test_kernels compares every path with them.
#include <immintrin.h>

#include <cstring>

#include "kernels/kernel_set.h"

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

// Same distance as avx512_gemv.cpp (bytes ahead per row stream).
constexpr int kPrefetch = 1024;
constexpr int kStreams = 4;

inline void prefetch_span(const uint8_t* p, int bytes) {
  for (int l = 0; l < bytes; l += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch + l), _MM_HINT_T0);
}

// vpshufb index: int16 word j of each 128-bit lane, broadcast within that lane
alignas(32) const uint8_t kWordIdx[8][32] = {
#define MCV_W(j) {2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1, \
                  2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1,2*j,2*j+1}
    MCV_W(0), MCV_W(1), MCV_W(2), MCV_W(3), MCV_W(4), MCV_W(5), MCV_W(6), MCV_W(7)
#undef MCV_W
};
inline __m256i word_bcast(__m256i v, int j) {
  return _mm256_shuffle_epi8(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(kWordIdx[j])));
}

// ---------------------------------------------------------------- Q4_K x A8K

// The 12 packed bytes of Q4_K scales (dwords u0 u1 u2) -> sc[0..7] (bytes 0..7) and m[0..7]
// (bytes 8..15): sc[0..3] = u0 & 63, sc[4..7] = (u2 & 15) | (u0 >> 6) << 4, m[0..3] = u1 & 63,
// m[4..7] = (u2 >> 4) | (u1 >> 6) << 4 (bytewise), as ref::scale_min_k4. Vector form: two byte
// shuffles, two shifts, AND / AND / OR. (Measured as fast as the scalar form, which needs ~2x the
// uops with its inserts but no vector constants; kept for the uop count.)
// Reads 16 bytes from s: the 4 after the scales are the block's first codes (ignored).
inline __m128i unpack_k4_scales(const uint8_t* s) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7));
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                   _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i hi = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(lo, hi);
}

// qs: 4 runs of 32 bytes, run c = sub-block 2c (low nibbles) and 2c + 1 (high nibbles): a
// 32-byte load meets the natural activation order, two 32-code vectors per load.
template <int R>
void q4k_rows(int64_t nsb, const uint8_t* w, size_t ws, const A8KRow& xa, float* y, int64_t ys) {
  constexpr int BS = 144;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const int8_t* xq = xa.qs + 256 * sb;
    // the 8 sums of 32 codes (|sum| <= 4064) as int16, against m[0..7]
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa.bsums + 16 * sb));
    const __m256i b32w = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
    const __m128i b32 = _mm_packs_epi32(_mm256_castsi256_si128(b32w), _mm256_extracti128_si256(b32w, 1));
    const __m128 dx = _mm_set1_ps(xa.d[sb]);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * ws + sb * BS;
      prefetch_span(blk, BS);
      uint32_t dm;
      std::memcpy(&dm, blk, 4);
      const __m128 ddx = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm))), dx);  // d dx, dmin dx
      const __m128i scm = unpack_k4_scales(blk + 4);
      const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));  // sc[0..7] words, both lanes
      const __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(scm, 8));
      __m256i is0 = _mm256_setzero_si256(), is1 = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * c));
        const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        const __m256i p1 = _mm256_maddubs_epi16(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + 64 * c)));
        const __m256i p2 =
            _mm256_maddubs_epi16(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + 64 * c + 32)));
        is0 = _mm256_add_epi32(is0, _mm256_madd_epi16(p1, word_bcast(sc, 2 * c)));
        is1 = _mm256_add_epi32(is1, _mm256_madd_epi16(p2, word_bcast(sc, 2 * c + 1)));
      }
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(is0, is1)),
                               _mm256_broadcastss_ps(ddx), acc[r]);
      // the mins in lanes 0-3 of the same accumulator: a separate xmm accumulator per row spilled
      // more of the 16 ymm registers (21.0 -> 21.8 GB/s hot, L2-resident rows)
      const __m128 msum = _mm_cvtepi32_ps(_mm_madd_epi16(m16, b32));
      acc[r] = _mm256_fnmadd_ps(_mm256_zextps128_ps256(msum), _mm256_set1_ps(_mm_cvtss_f32(_mm_movehdup_ps(ddx))),
                                acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ys] = hsum(acc[r]);
}

// ---------------------------------------------------------------- Q6_K x A8K

// ql's low nibbles are codes 0..63 of a half, high nibbles 64..127, qh bits 2i..2i+1 of byte l
// the high bits of code l + 32 i: natural activation order. A 32-code vector k of half h covers
// sub-blocks 8h + 2k (low lane) and 8h + 2k + 1 (high lane): the scales are widened once with the
// even ones in the low lane and the odd ones in the high lane, so one word broadcast per vector.
template <int R>
void q6k_rows(int64_t nsb, const uint8_t* w, size_t ws, const A8KRow& xa, float* y, int64_t ys) {
  constexpr int BS = 210;
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  const __m128i eo = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const int8_t* xq = xa.qs + 256 * sb;
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa.bsums + 16 * sb));
    const float dx = xa.d[sb];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * ws + sb * BS;
      prefetch_span(blk, BS + 64);
      const __m128i scv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
      const __m256i sc_eo = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scv, eo));
      __m256i is0 = _mm256_setzero_si256(), is1 = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
        const __m256i q0 = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
        const __m256i q1 = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
        const __m256i q2 =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
        const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                           _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        const int8_t* xh = xq + 128 * h;
        auto prod = [&](__m256i q, int k) {
          const __m256i p = _mm256_maddubs_epi16(q, _mm256_load_si256(reinterpret_cast<const __m256i*>(xh + 32 * k)));
          return _mm256_madd_epi16(p, word_bcast(sc_eo, 4 * h + k));
        };
        is0 = _mm256_add_epi32(is0, _mm256_add_epi32(prod(q0, 0), prod(q2, 2)));
        is1 = _mm256_add_epi32(is1, _mm256_add_epi32(prod(q1, 1), prod(q3, 3)));
      }
      const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(scv), bs), 5);  // 32 sum sc bsum
      const __m256i tot = _mm256_sub_epi32(_mm256_add_epi32(is0, is1), off);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(half(blk + 208) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ys] = hsum(acc[r]);
}

// ---------------------------------------------------------------- Q4_0 / Q8_0 x A8

// Q4_0: two blocks a, b per step. Their 16 nibble bytes go to the two lanes of one vector, so one
// AND gives codes 0..15 of a | of b and one shift + AND codes 16..31; the activations are
// regrouped to match once per step for all rows (two lane permutes). Scales [dw_a x4 | dw_b x4]
// from one vcvtph2ps; the -8 offset as dw * (-8 s / 4) in every lane of the block's half.
inline __m128i two_halves(const uint8_t* pa, const uint8_t* pb) {  // -> [ha x4, hb x4] fp16 words
  const uint32_t v = uint32_t(load_u16(pa)) | (uint32_t(load_u16(pb)) << 16);
  return _mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(v)),
                          _mm_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3));
}

template <int R>
void q4_0_rows(int64_t nb, const uint8_t* w, size_t ws, const A8Row& xa, float* y, int64_t ys) {
  constexpr int BS = 18;
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const __m256i xa0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xa.qs + 32 * b));
    const __m256i xb0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xa.qs + 32 * b + 32));
    const __m256i xlo = _mm256_permute2x128_si256(xa0, xb0, 0x20);  // a 0..15 | b 0..15
    const __m256i xhi = _mm256_permute2x128_si256(xa0, xb0, 0x31);  // a 16..31 | b 16..31
    const __m256 dx = _mm256_setr_m128(_mm_set1_ps(xa.d[b]), _mm_set1_ps(xa.d[b + 1]));
    const __m256 so = _mm256_setr_m128(_mm_set1_ps(-2.f * xa.s[b]), _mm_set1_ps(-2.f * xa.s[b + 1]));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* pa = w + r * ws + b * BS;
      prefetch_span(pa, 36);  // one line per step (36 bytes)
      const __m256i q = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(pa + BS + 2),
                                            reinterpret_cast<const __m128i*>(pa + 2));
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
      const __m256 dw = _mm256_cvtph_ps(two_halves(pa, pa + BS));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), _mm256_mul_ps(dw, dx), acc[r]);
      acc[r] = _mm256_fmadd_ps(dw, so, acc[r]);
    }
  }
  float tail[R] = {};
  for (; b < nb; ++b) {  // odd block count: the last block alone
    const __m128i x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(xa.qs + 32 * b));
    const __m128i x1 = _mm_load_si128(reinterpret_cast<const __m128i*>(xa.qs + 32 * b + 16));
    for (int r = 0; r < R; ++r) {
      const uint8_t* pa = w + r * ws + b * BS;
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 2)), m = _mm_set1_epi8(0x0F);
      const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(_mm_and_si128(q, m), x0),
                                      _mm_maddubs_epi16(_mm_and_si128(_mm_srli_epi16(q, 4), m), x1));
      const __m128i s = _mm_madd_epi16(p, _mm_set1_epi16(1));
      const __m128i s2 = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
      const int dot = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xb1)));
      tail[r] += half(pa) * (xa.d[b] * static_cast<float>(dot) - 8.f * xa.s[b]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ys] = hsum(acc[r]) + tail[r];
}

template <int R>
void q8_0_rows(int64_t nb, const uint8_t* w, size_t ws, const A8Row& xa, float* y, int64_t ys) {
  constexpr int BS = 34;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(xa.qs + 32 * b));
    const float dx = xa.d[b];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* pb = w + r * ws + b * BS;
      prefetch_span(pb, 34);  // one line per block
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + 2));
      const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q)), ones);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(half(pb) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ys] = hsum(acc[r]);
}

// nrows rows as R interleaved streams (as gemv_k in avx512_gemv.cpp): the rows are cut into R
// equal contiguous parts and one pass takes row i of every part; the nrows % R rows left over go
// one at a time. gemv is only called with nx == 1. Row is A8Row or A8KRow, kUnit the weight block.
template <class Row, int kUnit, void (*RowsR)(int64_t, const uint8_t*, size_t, const Row&, float*, int64_t),
          void (*Rows1)(int64_t, const uint8_t*, size_t, const Row&, float*, int64_t)>
void gemv_streams(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, size_t, int64_t,
                  float* y, size_t) {
  const Row xa(x, cols);
  const int64_t nblk = cols / kUnit, part = nrows / kStreams;
  for (int64_t r = 0; r < part; ++r) RowsR(nblk, w + r * w_stride, part * w_stride, xa, y + r, part);
  for (int64_t r = kStreams * part; r < nrows; ++r) Rows1(nblk, w + r * w_stride, w_stride, xa, y + r, 1);
}

}  // namespace

void fill_avx2_gemv(KernelSet& ks) {
  // gemv and quantize_gemv are set as pairs: these kernels read the natural A8 / A8K order of
  // the avx2 quantizers, so quantize_gemv is nullptr (matmul() falls back to quantize_a8 / a8k).
  auto set = [&](DType t, GemmFn f) {
    ks.gemv[static_cast<int>(t)] = f;
    ks.quantize_gemv[static_cast<int>(t)] = nullptr;
  };
  set(DType::Q4_K, gemv_streams<A8KRow, 256, q4k_rows<kStreams>, q4k_rows<1>>);
  set(DType::Q6_K, gemv_streams<A8KRow, 256, q6k_rows<kStreams>, q6k_rows<1>>);
  set(DType::Q4_0, gemv_streams<A8Row, 32, q4_0_rows<kStreams>, q4_0_rows<1>>);
  set(DType::Q8_0, gemv_streams<A8Row, 32, q8_0_rows<kStreams>, q8_0_rows<1>>);
}

}  // namespace kernels
}  // namespace minicpmv
