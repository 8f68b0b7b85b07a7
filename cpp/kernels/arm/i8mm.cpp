// ARMv8.6 i8mm path. For now it runs the dotprod kernels (every i8mm core has dotprod); a
// smmla-based 2x2 tile for prefill (n > 1) is the planned addition.
#include "kernels/kernel_set.h"

namespace minicpmv {
namespace kernels {

void fill_i8mm(KernelSet& ks) {
  fill_dotprod(ks);
  ks.name = "i8mm";
}

}  // namespace kernels
}  // namespace minicpmv
