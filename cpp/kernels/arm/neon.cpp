// Plain ARMv8 NEON kernels (no dotprod): int8 products by widening multiply (smull, |p| <= 2^14)
// and pairwise accumulate into int32 (sadalp). The kernels themselves are in neon_kernels.h.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels/kernel_set.h"
#include "kernels/tiles.h"
#include "quant/f16.h"

namespace minicpmv {
namespace kernels {
namespace {

struct DotNeon {
  static int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
  }
};

#include "kernels/arm/neon_kernels.h"

}  // namespace

void fill_neon(KernelSet& ks) { fill_common<DotNeon>(ks, "neon"); }

}  // namespace kernels
}  // namespace minicpmv
