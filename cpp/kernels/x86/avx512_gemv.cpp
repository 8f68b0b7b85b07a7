// AVX-512 single-token (decode) kernels: KernelSet::gemv, used by matmul() when n == 1.
//
// Decode streams every weight byte from DRAM exactly once, so these loops are built to retire
// fewer instructions per weight byte than the token tiles of avx512.cpp (which amortise their
// unpacking over up to 8 tokens and pay for it with inserts, shuffles and a scale vector per 64
// codes). Integer semantics are those of avx512.cpp: vpdpbusd on the unsigned codes, per-sub-block
// scales in int32 with vpdpwssd (a vpdpbusd lane is |sum of 4 products| <= 4 * 63 * 128 < 2^15,
// so it is exact as the low int16 of the pair, and the scale vector's high int16 is zero), mins /
// Q6_K's -32 from the Q8_K bsums, one f32 FMA per super-block and row.
//
// Q4_K: qs holds 4 runs of 32 bytes, run k = sub-block 2k (low nibbles) and 2k + 1 (high). One
//   64-byte load covers runs 2g, 2g + 1, so AND gives [sub-block 4g | 4g + 2] and shift + AND
//   [4g + 1 | 4g + 3]. quantize_gemv stores the activation codes in that order (per 128 codes:
//   sub-blocks 4g, 4g + 2, 4g + 1, 4g + 3; d and bsums unchanged), so each weight vector meets a
//   plain 64-byte activation load: no inserts or lane shuffles.
// Q6_K: ql's low nibbles are codes 0..63 of a half, high nibbles 64..127 in order, so the
//   natural activation order fits; qh is broadcast to both 256-bit halves and shifted per half.
// Scale vectors come from one masked vpermw each (AVX512BW; vpermb would need VBMI, which the
// avx512 path does not require) of the super-block's scales widened to int16 once; Q4_K's mins
// meet the 8 sums of 32 activation codes (from the bsums, once per super-block for all rows) in
// one vpmaddwd against the same widened scales.
// Rows go kStreams at a time, one from each of kStreams contiguous parts of the row range (see
// gemv_k): sequential streams for the prefetchers, activation loads and bsums shared.
// Q8_0: see q32_rows; Q4_0: see q40_rows (weight-stream order). The scalar twins are the ref kernels (kernels/ref); the avx512
// quantizers' bytes are checked against the scalar ones (test_kernels), the kernels against ref.
#include <immintrin.h>

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cmath>
#include <cstring>
#include <vector>

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

// Decode streams the weights: ask for them this far ahead of use (bytes per row stream).
// Measured (1 thread, quiet machine, best of 5, GB/s at 512 / 768 / 1024 / 1536): Q4_K 3584x3584
// 20.5 / 22.7 / 23.2 / 23.2, 3584x18944 19.6 / 21.0 / 21.2 / 21.2; Q6_K 152064x3584 22.7 / 23.5 /
// 22.8 / 22.0; 2560 and 3584 no better.
constexpr int kPrefetch = 1024;
// Row streams per pass (gemv_k). Measured on Zen 4 (1 thread, DRAM-resident weights, loaded
// machine, Q4_K GB/s vs the avx512.cpp tile): 3584 cols: 1 stream 14.5, 2: 18.3, 4: 20.2 (tile
// 15.0); 18944 cols: 1: 9.4, 2: 12.9, 4: 15.0 (tile 10.4); 6 and 8 streams no better.
constexpr int kStreams = 4;

inline void prefetch_sb(const uint8_t* p, int bytes) {
  for (int l = 0; l < bytes; l += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch + l), _MM_HINT_T0);
}

// Position of code e (0..255) of a super-block in the Q4_K gemv activation order.
inline int q4k_pos(int e) {
  const int j = e / 32, g = j / 4, jj = j % 4;
  return 128 * g + 32 * ((jj >> 1) | ((jj & 1) << 1)) + e % 32;
}

// A8K quantization (kernel_set.h; same values as ref::quantize_a8k), codes stored in the Q4_K
// gemv order (q4k_pos).
void quantize_a8k_q4k(const float* x, uint8_t* dst, int64_t cols) {
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
    while (k < 255 && std::fabs(xb[k]) != amax) ++k;
    const float iscale = -127.f / xb[k];
    const __m512 vs = _mm512_set1_ps(iscale);
    for (int g = 0; g < 16; ++g) {
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * g), vs));  // nearest even
      q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
      const int pos = q4k_pos(16 * g);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 256 * b + pos), _mm512_cvtepi32_epi8(q));
      bsums[16 * b + g] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
    dd[b] = 1.f / iscale;
  }
}

// The 12 packed bytes of Q4_K scales -> sc[0..7] (bytes 0..7) and m[0..7] (bytes 8..15).
inline __m128i unpack_k4_scales(const uint8_t* s) {
  uint32_t u[3];
  std::memcpy(u, s, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3f;
  const uint32_t m_lo = u[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] & 0xc0c0c0c0) >> 2);
  const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] & 0xc0c0c0c0) >> 2);
  return _mm_setr_epi32(int(sc_lo), int(sc_hi), int(m_lo), int(m_hi));
}

// vpermw index: int32 lanes 0-7 take word a, lanes 8-15 word b (only word 0 of a lane is kept)
inline __m512i lane_pair_idx(int a, int b) {
  return _mm512_inserti64x4(_mm512_set1_epi32(a), _mm256_set1_epi32(b), 1);
}
constexpr __mmask32 kWord0 = 0x55555555u;  // word 0 of every int32 lane

template <int R>
void q4k_rows(int64_t nsb, const uint8_t* w, size_t ws, const A8KRow& xa, float* y, int64_t ys) {
  constexpr int BS = 144;
  const __m512i zero = _mm512_setzero_si512(), m4 = _mm512_set1_epi8(0x0F);
  const __m512i ia0 = lane_pair_idx(0, 2), ib0 = lane_pair_idx(1, 3), ia1 = lane_pair_idx(4, 6),
                ib1 = lane_pair_idx(5, 7);
  __m512 acc[R];
  __m256 macc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps(), macc[r] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const int8_t* xq = xa.qs + 256 * sb;
    const __m512i xa0 = _mm512_load_si512(xq), xb0 = _mm512_load_si512(xq + 64);
    const __m512i xa1 = _mm512_load_si512(xq + 128), xb1 = _mm512_load_si512(xq + 192);
    // the 8 sums of 32 codes as int16 in the high half, against m[0..7] in the rows' scale words
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa.bsums + 16 * sb));
    const __m256i b32 = _mm256_inserti128_si256(_mm256_setzero_si256(),
                                                _mm256_cvtepi32_epi16(_mm256_madd_epi16(bs, _mm256_set1_epi16(1))), 1);
    const __m128 dx = _mm_set1_ps(xa.d[sb]);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * ws + sb * BS;
      prefetch_sb(blk, BS);
      uint32_t dm;
      std::memcpy(&dm, blk, 4);
      const __m128 ddx = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm))), dx);  // d dx, dmin dx
      const __m128i scm = unpack_k4_scales(blk + 4);
      const __m256i s16 = _mm256_cvtepu8_epi16(scm);  // sc[0..7], m[0..7] as int16
      const __m512i s512 = _mm512_castsi256_si512(s16);
      const __m512i v0 = _mm512_loadu_si512(blk + 16), v1 = _mm512_loadu_si512(blk + 80);
      const __m512i pa0 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(v0, m4), xa0);
      const __m512i pb0 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4), xb0);
      const __m512i pa1 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(v1, m4), xa1);
      const __m512i pb1 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4), xb1);
      __m512i i0 = _mm512_madd_epi16(pa0, _mm512_maskz_permutexvar_epi16(kWord0, ia0, s512));
      __m512i i1 = _mm512_madd_epi16(pb0, _mm512_maskz_permutexvar_epi16(kWord0, ib0, s512));
      i0 = _mm512_dpwssd_epi32(i0, pa1, _mm512_maskz_permutexvar_epi16(kWord0, ia1, s512));
      i1 = _mm512_dpwssd_epi32(i1, pb1, _mm512_maskz_permutexvar_epi16(kWord0, ib1, s512));
      const __m256 msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, b32));  // lanes 4-7: m * b32 pairs
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), _mm512_broadcastss_ps(ddx), acc[r]);
      macc[r] = _mm256_fmadd_ps(msum, _mm256_broadcastss_ps(_mm_movehdup_ps(ddx)), macc[r]);
    }
  }
  for (int r = 0; r < R; ++r)
    y[r * ys] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[r], _mm512_zextps256_ps512(macc[r])));
}

template <int R>
void q6k_rows(int64_t nsb, const uint8_t* w, size_t ws, const A8KRow& xa, float* y, int64_t ys) {
  constexpr int BS = 210;
  const __m512i zero = _mm512_setzero_si512(), m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // qh bits 0-1 / 2-3 of byte l go to codes l / l + 32 of the first 64 codes of a half, bits 4-5 /
  // 6-7 to the second 64: shift the two copies of qh by different amounts into bits 4-5.
  const __m512i shl0 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shr1 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
  // vpermw index: for 64 codes c, int32 lane k (codes 4k..4k+3) takes scale 4c + k / 4
  __m512i sidx[4];
  for (int c = 0; c < 4; ++c) {
    alignas(64) int16_t ix[32];
    for (int k = 0; k < 16; ++k) ix[2 * k] = ix[2 * k + 1] = static_cast<int16_t>(4 * c + k / 4);
    sidx[c] = _mm512_load_si512(ix);
  }
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const int8_t* xq = xa.qs + 256 * sb;
    __m512i xv[4];
    for (int c = 0; c < 4; ++c) xv[c] = _mm512_load_si512(xq + 64 * c);
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa.bsums + 16 * sb));
    const float dx = xa.d[sb];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w + r * ws + sb * BS;
      prefetch_sb(blk, BS + 64);
      const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
      const __m512i s512 = _mm512_castsi256_si512(sc16);
      __m512i is[2] = {zero, zero};
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
        const __m512i hz = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h)));
        // (lo & 0x0F) | (hi & 0x30) as one ternary op where lo is already clean
        const __m512i w0 = _mm512_ternarylogic_epi32(_mm512_and_si512(ql, m4), _mm512_sllv_epi16(hz, shl0), m30, 0xF8);
        const __m512i w1 = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                                     _mm512_srlv_epi16(hz, shr1), m30, 0xF8);
        is[0] = _mm512_dpwssd_epi32(is[0], _mm512_dpbusd_epi32(zero, w0, xv[2 * h]),
                                    _mm512_maskz_permutexvar_epi16(kWord0, sidx[2 * h], s512));
        is[1] = _mm512_dpwssd_epi32(is[1], _mm512_dpbusd_epi32(zero, w1, xv[2 * h + 1]),
                                    _mm512_maskz_permutexvar_epi16(kWord0, sidx[2 * h + 1], s512));
      }
      const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);  // 32 * sum sc_i bsum_i
      const __m512i tot = _mm512_sub_epi32(_mm512_add_epi32(is[0], is[1]), _mm512_zextsi256_si512(off));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_set1_ps(half(blk + 208) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ys] = _mm512_reduce_add_ps(acc[r]);
}

// A rows kernel: R rows whose blocks start ws bytes apart, results to y[0], y[ys], ...
using RowsFn = void (*)(int64_t nsb, const uint8_t* w, size_t ws, const A8KRow& xa, float* y, int64_t ys);

// nrows rows as R interleaved streams: the rows are cut into R equal contiguous parts and one
// pass takes row i of every part, so each of the R streams reads memory sequentially (row after
// row) and the R streams give R times the memory-level parallelism of one. (Taking R adjacent
// rows instead was 1.5x slower on 3584-column rows: R streams crossing the same 4 KiB pages.)
// The rows left over (nrows % R) go one at a time. gemv is only called with nx == 1.
template <RowsFn RowsR, RowsFn Rows1, int R>
void gemv_k(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, size_t, int64_t,
            float* y, size_t) {
  const A8KRow xa(x, cols);
  const int64_t nsb = cols / 256, part = nrows / R;
  for (int64_t r = 0; r < part; ++r) RowsR(nsb, w + r * w_stride, part * w_stride, xa, y + r, part);
  for (int64_t r = R * part; r < nrows; ++r) Rows1(nsb, w + r * w_stride, w_stride, xa, y + r, 1);
}

// ---------------------------------------------------------------- 32-blocks (Q8_0) x A8

// The activations are avx512.cpp's grouped A8 layout (quantize_a8p, kept as the gemv quantizer):
// within every full group of 16 blocks, each run of 4 blocks stores codes 0..15 of the 4 blocks,
// then codes 16..31. So 4 blocks of Q4_0 nibbles unpack with one AND and one shift + AND, Q8_0
// with two sets of 4 16-byte loads. Per 16 blocks and row: 8 vpdpbusd, a 4 x 4 transpose-add to
// the 16 block sums, one convert + FMA with the 16 scales dw * dx (lane j = block perm16(j)), and
// the offset (-8 / -128 per code) via the activation's s = dx * sum(q): one FMA per 16 blocks.
inline __m512i load4x16(const uint8_t* p, int stride) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + stride)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * stride)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * stride)), 3);
}

struct Q8_0G {  // codes as unsigned: w ^ 0x80 = w + 128
  static constexpr int BS = 34;
  static constexpr float kOffset = 128.f;
  static void unpack4(const uint8_t* b, __m512i& lo, __m512i& hi) {
    const __m512i f = _mm512_set1_epi8(char(0x80));
    lo = _mm512_xor_si512(load4x16(b + 2, BS), f);
    hi = _mm512_xor_si512(load4x16(b + 18, BS), f);
  }
  static __m256i unpack1(const uint8_t* b) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)), _mm256_set1_epi8(char(0x80)));
  }
};

template <class B, int R>
void q32_rows(int64_t nb, const uint8_t* w, size_t ws, const A8Row& xa, float* y, int64_t ys) {
  const int64_t nb16 = nb & ~int64_t(15);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i pidx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i goff = _mm512_mullo_epi32(pidx, _mm512_set1_epi32(B::BS));  // lane j -> block perm16(j)
  __m512 acc[R], cacc[R];
  for (int r = 0; r < R; ++r) acc[r] = cacc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < nb16; g += 16) {
    const __m512 xd = _mm512_permutexvar_ps(pidx, _mm512_loadu_ps(xa.d + g));
    const __m512 xs = _mm512_loadu_ps(xa.s + g);
    const int8_t* xq = xa.qs + 32 * g;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* pg = w + r * ws + g * B::BS;
      prefetch_sb(pg, 16 * B::BS);
      __m512i p[4];
      for (int s = 0; s < 4; ++s) {
        __m512i lo, hi;
        B::unpack4(pg + 4 * s * B::BS, lo, hi);
        p[s] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, _mm512_load_si512(xq + 128 * s)), hi,
                                   _mm512_load_si512(xq + 128 * s + 64));
      }
      // p[s]: 4 lanes per block of run s -> 16 block sums, block perm16(j) in lane j
      const __m512i u01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
      const __m512i u23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
      const __m512i sum = _mm512_add_epi32(_mm512_unpacklo_epi64(u01, u23), _mm512_unpackhi_epi64(u01, u23));
      const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(goff, pg, 1)));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw, xd), acc[r]);
      cacc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pidx, dw), xs, cacc[r]);  // dw natural order
    }
  }
  float tail[R];
  for (int r = 0; r < R; ++r) tail[r] = 0.f;
  for (int64_t b = nb16; b < nb; ++b) {  // blocks after the last full group: natural order
    const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(xa.qs + 32 * b));
    for (int r = 0; r < R; ++r) {
      const uint8_t* pb = w + r * ws + b * B::BS;
      const __m256i d = _mm256_dpbusd_epi32(_mm256_setzero_si256(), B::unpack1(pb), xv);
      const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
      const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
      const int dot = _mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, _MM_SHUFFLE(2, 3, 0, 1))));
      const float dw = half(pb);
      tail[r] += dw * (xa.d[b] * static_cast<float>(dot) - B::kOffset * xa.s[b]);
    }
  }
  // cacc holds sum dw * s; the offset term is -kOffset times it
  for (int r = 0; r < R; ++r)
    y[r * ys] = _mm512_reduce_add_ps(_mm512_fnmadd_ps(cacc[r], _mm512_set1_ps(B::kOffset), acc[r])) + tail[r];
}

template <class B, int R>
void gemv_q32(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, size_t, int64_t,
              float* y, size_t) {
  const A8Row xa(x, cols);
  const int64_t nb = cols / 32, part = nrows / R;
  for (int64_t r = 0; r < part; ++r) q32_rows<B, R>(nb, w + r * w_stride, part * w_stride, xa, y + r, part);
  for (int64_t r = R * part; r < nrows; ++r) q32_rows<B, 1>(nb, w + r * w_stride, w_stride, xa, y + r, 1);
}


// ---------------------------------------------------------------- Q4_0 x A8 in weight-stream order
//
// A Q4_0 row is read as what it is in memory: a stream of 18-byte blocks (f16 d, 16 bytes of
// nibbles), cut into 64-byte chunks at any block phase. quantize_gemv stores the activation codes
// in the same stream order (kernel_set.h's A8 values, another layout of the same size):
//   float d[nb] | per full 64-byte chunk c of the weight row: lo[64] hi[64] | last partial chunk
//   of r = 18 nb % 64 bytes: lo[r] hi[r]
// where lo[p] / hi[p] is the code that meets the low / high nibble of weight byte p (qs byte k of
// block b at p = 18 b + 2 + k: codes 32 b + k and 32 b + k + 16), and 0 against the 2 bytes of d.
// 36 code bytes + 4 of d per block = 40 nb <= act_row_bytes(A8). So per 64 weight bytes and row:
// one load, AND, shift + AND, two vpdpbusd (no inserts, gathers or shuffles of codes), and every
// int32 lane holds codes of one block only (blocks start at 18 b; lane 4j..4j+3 of a chunk belongs
// to block floor(p / 18)). The -8 offset enters as an int32 start value per lane, -8 * (sum of the
// lane's codes), computed once per chunk for the R rows of a pass (2 vpdpbusd against 8s): the
// lane sums are the exact integers of ref. Lane j's scale dw * dx: one vpermt2w picks the lane's
// f16 d out of (previous chunk, this chunk) (d of the lane's block starts at most 16 bytes before
// the chunk), dx comes from one vpermps per chunk and pass. Per chunk and row: convert, multiply,
// FMA. The lane patterns repeat every 9 chunks (576 bytes = 32 blocks): kQ40 holds the 9 index
// vectors of each kind. The last partial chunk is read with masked loads (weights and codes), its
// lanes past the row get dx = 0. From L2 (1 thread, cpu time) this runs at 30-34 GB/s, the Q4_K
// kernel at 29-30 and the previous Q4_0 one (q32_rows) at ~21.
struct Q40Tables {
  int16_t widx[9][32];  // vpermt2w: word j (< 16) = 32 + (18 b(j) - 64 c) / 2, b(j) = lane j's block
  int32_t didx[9][16];  // vpermps: b(j) - b(0)
};
constexpr Q40Tables make_q40_tables() {
  Q40Tables t{};
  for (int ph = 0; ph < 9; ++ph) {
    const int c0 = 64 * ph, b0 = c0 / 18;
    for (int j = 0; j < 16; ++j) {
      const int b = (c0 + 4 * j) / 18;
      t.widx[ph][j] = static_cast<int16_t>(32 + (18 * b - c0) / 2);
      t.widx[ph][16 + j] = 0;
      t.didx[ph][j] = b - b0;
    }
  }
  return t;
}
alignas(64) constexpr Q40Tables kQ40 = make_q40_tables();

inline __m512 round_half_away(__m512 v) {  // as std::round (and avx512.cpp's A8 quantizer)
  const __m512 a = _mm512_abs_ps(v);
  __m512 f = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(a, f), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  f = _mm512_mask_add_ps(f, up, f, _mm512_set1_ps(1.f));
  return _mm512_or_ps(f, _mm512_and_ps(v, _mm512_castsi512_ps(_mm512_set1_epi32(int(0x80000000u)))));
}

// A8 quantization (same d and codes as ref::quantize_a8; s is not stored: the kernel sums the
// codes itself) into the Q4_0 stream order above.
void quantize_a8_q40(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 32, bytes = 18 * nb, nfull = bytes / 64, rem = bytes % 64;
  float* dd = reinterpret_cast<float*>(dst);
  uint8_t* codes = dst + 4 * nb;
  thread_local std::vector<uint8_t> tmp;  // the lo and hi streams, linear
  if (tmp.size() < static_cast<size_t>(2 * bytes)) tmp.resize(2 * bytes);
  uint8_t* lo = tmp.data();
  uint8_t* hi = lo + bytes;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvttps_epi32(round_half_away(_mm512_mul_ps(v0, vid)));
    const __m512i q1 = _mm512_cvttps_epi32(round_half_away(_mm512_mul_ps(v1, vid)));
    dd[b] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    lo[18 * b] = lo[18 * b + 1] = hi[18 * b] = hi[18 * b + 1] = 0;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + 18 * b + 2), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hi + 18 * b + 2), _mm512_cvtepi32_epi8(q1));
  }
  for (int64_t c = 0; c < nfull; ++c) {
    _mm512_storeu_si512(codes + 128 * c, _mm512_loadu_si512(lo + 64 * c));
    _mm512_storeu_si512(codes + 128 * c + 64, _mm512_loadu_si512(hi + 64 * c));
  }
  if (rem) {
    std::memcpy(codes + 128 * nfull, lo + 64 * nfull, rem);
    std::memcpy(codes + 128 * nfull + rem, hi + 64 * nfull, rem);
  }
}

// Prefetch distance per row stream. Measured (1 thread, DRAM-resident, loaded machine, interleaved
// runs, GB/s at 128 / 256 / 512 / 1024 / 2048): 18944x3584 25.5 / 27 / 28 / 16-23 / 17-24,
// 3584x18944 18 / 19 / 20.5 / 13-20 / 19.5; 3584x3584 at 384 / 512 / 640: 27.5 / 27 / 17-24.
// (Precomputing the per-chunk offsets and dx for all rows once per call, instead of per pass of
// 4 rows, ran 1.1x faster from L2 but 0.92x on 3584x18944 from DRAM: 42 KiB more for L1.)
constexpr int kPrefetchQ40 = 512;

// One 64-byte chunk (or the masked tail) for R rows; the activation side is shared by the rows.
template <int R, bool kTail>
inline void q40_chunk(const uint8_t* w, size_t ws, const float* xd, const uint8_t* xc, int64_t c, int rem,
                      __m512i* prev, __m512* acc) {
  const int ph = static_cast<int>(c % 9);
  const __m512i zero = _mm512_setzero_si512(), m4 = _mm512_set1_epi8(0x0F);
  const __mmask64 bm = kTail ? _bzhi_u64(~0ull, rem) : ~0ull;
  __m512i xl, xh;
  if (kTail) {
    xl = _mm512_maskz_loadu_epi8(bm, xc + 128 * c);
    xh = _mm512_maskz_loadu_epi8(bm, xc + 128 * c + rem);
  } else {
    xl = _mm512_loadu_si512(xc + 128 * c);
    xh = _mm512_loadu_si512(xc + 128 * c + 64);
  }
  const __m512i eight = _mm512_set1_epi8(8);
  const __m512i negb = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, eight, xl), eight, xh));
  const __m512 dxv = _mm512_loadu_ps(xd + (64 * c) / 18);  // within the row: d precedes the codes
  const __m512i didx = _mm512_load_si512(kQ40.didx[ph]);
  // tail: lanes past the row would take dx of blocks >= nb (code bytes): zero them
  const __m512 dxl = kTail ? _mm512_maskz_permutexvar_ps(static_cast<__mmask16>(_bzhi_u32(~0u, (rem + 3) / 4)), didx, dxv)
                           : _mm512_permutexvar_ps(didx, dxv);
  const __m512i widx = _mm512_load_si512(kQ40.widx[ph]);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* p = w + r * ws + 64 * c;
    const __m512i v = kTail ? _mm512_maskz_loadu_epi8(bm, p) : _mm512_loadu_si512(p);
    if (!kTail) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchQ40), _MM_HINT_T0);
    const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    const __m512i isum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(negb, lo, xl), hi, xh);
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(prev[r], widx, v)));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, dxl), acc[r]);
    prev[r] = v;
  }
}

template <int R>
void q40_rows(int64_t nb, const uint8_t* w, size_t ws, const uint8_t* x, float* y, int64_t ys) {
  const int64_t bytes = 18 * nb, nfull = bytes / 64;
  const int rem = static_cast<int>(bytes % 64);
  const float* xd = reinterpret_cast<const float*>(x);
  const uint8_t* xc = x + 4 * nb;
  __m512 acc[R];
  __m512i prev[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps(), prev[r] = _mm512_setzero_si512();
  for (int64_t c = 0; c < nfull; ++c) q40_chunk<R, false>(w, ws, xd, xc, c, 0, prev, acc);
  if (rem) q40_chunk<R, true>(w, ws, xd, xc, nfull, rem, prev, acc);
  for (int r = 0; r < R; ++r) y[r * ys] = _mm512_reduce_add_ps(acc[r]);
}

// Rows of more than 4 KiB (ffn_down: 10656 bytes) go 8 streams at a time. Measured (1 thread,
// DRAM-resident, loaded machine, GB/s, streams 4 / 6 / 8): 3584x18944 23.4-25.2 / 18-24 / 27.8-28.8;
// 3584x3584 25-27.6 / 19.7-27.5 / 19-27.6, 18944x3584 24.6-28.2 / 18.5-27.9 / 17-27.5.
constexpr int64_t kQ40LongRow = 4096;

template <int R>
void q40_streams(int64_t nb, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, float* y) {
  const int64_t part = nrows / R;
  for (int64_t r = 0; r < part; ++r) q40_rows<R>(nb, w + r * w_stride, part * w_stride, x, y + r, part);
  for (int64_t r = R * part; r < nrows; ++r) q40_rows<1>(nb, w + r * w_stride, w_stride, x, y + r, 1);
}

void gemv_q40(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x, size_t, int64_t,
              float* y, size_t) {
  const int64_t nb = cols / 32;
  if (18 * nb > kQ40LongRow) q40_streams<8>(nb, w, w_stride, nrows, x, y);
  else q40_streams<kStreams>(nb, w, w_stride, nrows, x, y);
}

}  // namespace

void fill_avx512_gemv(KernelSet& ks) {
  const int q4k = static_cast<int>(DType::Q4_K), q6k = static_cast<int>(DType::Q6_K);
  ks.gemv[q4k] = gemv_k<q4k_rows<kStreams>, q4k_rows<1>, kStreams>;
  ks.quantize_gemv[q4k] = quantize_a8k_q4k;
  ks.gemv[q6k] = gemv_k<q6k_rows<kStreams>, q6k_rows<1>, kStreams>;
  // Q6_K keeps the natural code order: the A8K quantizer of avx512.cpp serves
  // Q8_0 uses the grouped A8 layout of avx512.cpp's quantize_type (quantize_a8p) as is; Q4_0 its
  // own stream order (quantize_a8_q40)
  ks.gemv[static_cast<int>(DType::Q4_0)] = gemv_q40;
  ks.quantize_gemv[static_cast<int>(DType::Q4_0)] = quantize_a8_q40;
  ks.gemv[static_cast<int>(DType::Q8_0)] = gemv_q32<Q8_0G, kStreams>;
}

}  // namespace kernels
}  // namespace minicpmv
