// AVX-512 kernels for float weights (F32 / F16 / BF16). Empty for now: they live in avx512.cpp.
#include "kernels/kernel_set.h"

namespace minicpmv {
namespace kernels {

void fill_avx512_float(KernelSet&) {}

}  // namespace kernels
}  // namespace minicpmv
