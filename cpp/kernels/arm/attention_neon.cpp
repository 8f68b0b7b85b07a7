// ARMv8 NEON grouped-query attention (the algorithm is in kernels/attention_impl.h) and f32 -> f16
// rows. Base ARMv8 has the half <-> single conversions (fcvtl / fcvtn; FP16 arithmetic is not
// needed); fcvtn rounds by FPCR, round to nearest even by default, as quant/f16.h.
#include <arm_neon.h>

#include <cstring>

#include "kernels/attention.h"

namespace minicpmv {
namespace kernels {
namespace {

struct VNeon {
  using F = float32x4_t;
  static constexpr int W = 4;
  static constexpr int kRows = 4, kPos = 4, kCols = 4;
  static F zero() { return vdupq_n_f32(0.0f); }
  static F set1(float x) { return vdupq_n_f32(x); }
  static F load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static F load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static F fmadd(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F max(F a, F b) { return vmaxq_f32(a, b); }
  static F min(F a, F b) { return vminq_f32(a, b); }
  static float hsum(F v) { return vaddvq_f32(v); }
  static float hmax(F v) { return vmaxvq_f32(v); }
  static F pow2i(F kb) {
    const int32x4_t b = vaddq_s32(vreinterpretq_s32_f32(kb), vdupq_n_s32(127));
    return vreinterpretq_f32_s32(vshlq_n_s32(b, 23));
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
VNeon::F VNeon::exp(F x) {
  const uint32x4_t live = vcgeq_f32(x, vdupq_n_f32(-87.3f));
  return vreinterpretq_f32_u32(vandq_u32(live, vreinterpretq_u32_f32(exp_poly<VNeon>(x))));
}
}  // namespace

namespace attn {

void block_neon(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch) {
  attention_block<VNeon>(a, kv_head, i0, i1, scratch);
}

void f16_row_neon(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
  if (i < n) {
    float in[4] = {0, 0, 0, 0};
    uint16_t out[4];
    std::memcpy(in, x + i, (n - i) * sizeof(float));
    vst1_u16(out, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(in))));
    std::memcpy(y + i, out, (n - i) * sizeof(uint16_t));
  }
}

}  // namespace attn
}  // namespace kernels
}  // namespace minicpmv
