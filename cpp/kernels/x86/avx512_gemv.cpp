// AVX-512 single-token (decode) kernels: KernelSet::gemv. Empty for now: decode uses the tiles
// of avx512.cpp.
#include "kernels/kernel_set.h"

namespace minicpmv {
namespace kernels {

void fill_avx512_gemv(KernelSet&) {}

}  // namespace kernels
}  // namespace minicpmv
