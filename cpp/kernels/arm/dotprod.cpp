// ARMv8.2 dotprod kernels: int8 products with sdot (4 products per int32 lane per instruction).
// The kernels themselves are in neon_kernels.h.
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

}  // namespace

void fill_dotprod(KernelSet& ks) { fill_common<DotProd>(ks, "dotprod"); }

}  // namespace kernels
}  // namespace minicpmv
