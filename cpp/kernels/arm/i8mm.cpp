// ARMv8.6 i8mm path: the dotprod kernels (every i8mm core has dotprod), plus smmla tiles for
// Q4_0 / Q8_0 when several tokens are multiplied (prefill): smmla multiplies a 2 x 8 int8 block
// of two weight rows by an 8 x 2 block of two tokens into a 2 x 2 int32 tile, so each weight
// load serves two tokens and each activation load two rows, with one scale FMA per 2 x 2 block.
// Decode (one token) keeps the sdot tile. Other types: the dotprod kernels.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels/kernel_set.h"
#include "kernels/tiles.h"
#include "quant/f16.h"

namespace minicpmv {
namespace kernels {
namespace {

struct DotProd {
  static int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
};

#include "kernels/arm/neon_kernels.h"

// 32 signed codes of one block as two 16-byte halves
template <int kType>  // 0: Q4_0, 2: Q8_0
inline void block_codes(const uint8_t* blk, int8x16_t& lo, int8x16_t& hi) {
  if (kType == 2) {
    lo = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 2));
    hi = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 18));
  } else {
    const uint8x16_t q = vld1q_u8(blk + 2);
    lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
  }
}

// [a[0..7], b[0..7]] and [a[8..15], b[8..15]]
inline int8x16_t zip_lo(int8x16_t a, int8x16_t b) {
  return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}
inline int8x16_t zip_hi(int8x16_t a, int8x16_t b) {
  return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

template <int kType>
struct MmlaTile {
  static constexpr int MR = 2;
  static constexpr int BS = kType == 0 ? 18 : 34;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    if (NR == 1) {  // one token: smmla would waste half of its work
      float o0[1][kTileTokens], o1[1][kTileTokens];
      Block32Tile<DotProd, kType>::template tile<1>(cols, w, x, o0);
      Block32Tile<DotProd, kType>::template tile<1>(cols, w + 1, x, o1);
      out[0][0] = o0[0][0];
      out[1][0] = o1[0][0];
      return;
    }
    constexpr int NP = (NR + 1) / 2;  // token pairs; an odd last token is paired with itself
    const int64_t nb = cols / 32;
    float32x4_t acc[NP];  // lanes: (row 0, tok 2p), (row 0, tok 2p+1), (row 1, tok 2p), (row 1, tok 2p+1)
    A8Row xa[2 * NP];
    for (int t = 0; t < 2 * NP; ++t) xa[t] = A8Row(x[t < NR ? t : NR - 1], cols);
    for (int p = 0; p < NP; ++p) acc[p] = vdupq_n_f32(0.f);
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* b0 = w[0] + b * BS;
      const uint8_t* b1 = w[1] + b * BS;
      int8x16_t r0l, r0h, r1l, r1h;
      block_codes<kType>(b0, r0l, r0h);
      block_codes<kType>(b1, r1l, r1h);
      const int8x16_t a0 = zip_lo(r0l, r1l), a1 = zip_hi(r0l, r1l), a2 = zip_lo(r0h, r1h), a3 = zip_hi(r0h, r1h);
      const float d0 = half(b0), d1 = half(b1);
      const float32x4_t dwv = {d0, d0, d1, d1};
      for (int p = 0; p < NP; ++p) {
        const int8_t* x0 = xa[2 * p].qs + 32 * b;
        const int8_t* x1 = xa[2 * p + 1].qs + 32 * b;
        const int8x16_t x0l = vld1q_s8(x0), x0h = vld1q_s8(x0 + 16), x1l = vld1q_s8(x1), x1h = vld1q_s8(x1 + 16);
        int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), a0, zip_lo(x0l, x1l));
        s = vmmlaq_s32(s, a1, zip_hi(x0l, x1l));
        s = vmmlaq_s32(s, a2, zip_lo(x0h, x1h));
        s = vmmlaq_s32(s, a3, zip_hi(x0h, x1h));
        const float e0 = xa[2 * p].d[b], e1 = xa[2 * p + 1].d[b];
        const float32x4_t dxv = {e0, e1, e0, e1};
        acc[p] = vfmaq_f32(acc[p], vcvtq_f32_s32(s), vmulq_f32(dwv, dxv));
      }
    }
    for (int p = 0; p < NP; ++p) {
      float v[4];
      vst1q_f32(v, acc[p]);
      for (int i = 0; i < 2; ++i) {
        if (2 * p < NR) out[i][2 * p] = v[2 * i];
        if (2 * p + 1 < NR) out[i][2 * p + 1] = v[2 * i + 1];
      }
    }
  }
};

}  // namespace

void fill_i8mm(KernelSet& ks) {
  fill_common<DotProd>(ks, "i8mm");
  ks.gemm[static_cast<int>(DType::Q4_0)] = gemm_tiled<MmlaTile<0>>;
  ks.gemm[static_cast<int>(DType::Q8_0)] = gemm_tiled<MmlaTile<2>>;
}

}  // namespace kernels
}  // namespace minicpmv
