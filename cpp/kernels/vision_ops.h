// Row passes of the SigLIP tower between its matmuls (model/siglip.cpp) and the resampler's LN_kv,
// each fused so a row is read and written once, on the widest vectors the CPU has. They replace
// ops::layer_norm / ops::gelu_tanh_fast there: at 1 thread those (baseline-compiled) took ~14 ms of
// a 1024-token block (bench/cpp/bench_vision_ops breakdown), the AVX-512 ones ~3 ms.
//
// Numerics (f32): LayerNorm is two-pass (mean, then the mean of squared deviations) with 16
// partial sums per pass, as torch's f32 kernel; GELU is the tanh form with
// tanh(u) = 1 - 2 / (e^{2u} + 1), u clamped to +-9 (tanh is +-1 in f32 there), e^x a degree-7
// polynomial after range reduction (~2 ulp). tests/cpp/test_vision_perf.cpp: twins vs float64.
#pragma once
#include <cstdint>

#include "kernels/matmul.h"

namespace minicpmv::kernels::vops {

struct RowOps {
  // y = (x - mean) / sqrt(var + eps) * w + b over d values (y may be x).
  void (*layer_norm)(const float* x, const float* w, const float* b, float* y, int64_t d, float eps);
  // x += r + bias (a projection's output still lacking its bias: the residual add), then
  // y = LayerNorm(x) * w + b: the residual of one half of a block and the LN of the next (y may be r).
  void (*residual_layer_norm)(float* x, const float* r, const float* bias, const float* w, const float* b, float* y,
                              int64_t d, float eps);
  // y[j] = gelu_tanh(x[j] + bias[j]) for j < n, y[j] = 0 for n <= j < n_pad (y may be x).
  void (*bias_gelu)(const float* x, const float* bias, float* y, int64_t n, int64_t n_pad);
};

// The scalar twins (Isa::Ref; the oracle of the SIMD ones), the AVX-512 ones (Isa::Avx512; x86).
// InvalidArgument for a path without them or that this CPU cannot run.
const RowOps& row_ops(Isa isa);
// The active path's (AVX-512 where kernels::active_isa() is avx512, else the scalar twins).
const RowOps& row_ops();

namespace ref {
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t d, float eps);
void residual_layer_norm(float* x, const float* r, const float* bias, const float* w, const float* b, float* y,
                         int64_t d, float eps);
void bias_gelu(const float* x, const float* bias, float* y, int64_t n, int64_t n_pad);
}  // namespace ref
#if defined(MINICPMV_X86)
namespace avx512 {
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t d, float eps);
void residual_layer_norm(float* x, const float* r, const float* bias, const float* w, const float* b, float* y,
                         int64_t d, float eps);
void bias_gelu(const float* x, const float* bias, float* y, int64_t n, int64_t n_pad);
}  // namespace avx512
#endif

}  // namespace minicpmv::kernels::vops
