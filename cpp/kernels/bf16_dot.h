// Opt-in bf16 dot-product matmul (VisionEncoder's weights = "bf16"): Y = bf16(X) . W^T with W stored
// as BF16 and the activations rounded to bf16 (nearest even) once per call, products of bf16 pairs
// accumulated in f32 (vdpbf16ps: twice the f32 FMA rate). NOT the faithful f32-activation product
// kernels::matmul gives for BF16 weights: it is a separate entry point so BF16 weights stored in a
// file keep their exact path. Needs AVX512_BF16 (cpu::features().avx512_bf16) and the avx512 path.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/matmul.h"

namespace minicpmv {
class ThreadPool;

namespace kernels {

// This CPU and build can run matmul_bf16_dot.
bool bf16_dot_available();
// W: BF16 [rows x cols]; X: n rows of cols floats; Y: n rows of rows floats.
// InvalidArgument if W is not BF16 or !bf16_dot_available().
void matmul_bf16_dot(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool);

// The scalar twin (tests): the same rounding of X, the same pair products summed in f32 along k.
void matmul_bf16_dot_ref(const Weight& W, const float* X, int64_t n, float* Y);

#if defined(MINICPMV_X86)
// x86/avx512_float.cpp. xb: nx rows of bf16 activations, xbs elements apart, cols (+1 if odd,
// zero) long. Y[t * ys + r] for r < nrows.
void gemm_bf16_dot_avx512(int64_t cols, const uint8_t* w, size_t ws, int64_t nrows, const uint16_t* xb, size_t xbs,
                          int64_t nx, float* y, size_t ys);
void round_bf16_avx512(const float* x, uint16_t* dst, int64_t n);
#endif

}  // namespace kernels
}  // namespace minicpmv
