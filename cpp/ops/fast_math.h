// Branch-free exp / softmax / GELU-tanh for the vision encoder's hot loops: a 1024-token slice
// needs ~16M exponentials (softmax) and ~4M tanh (GELU) per block, where libm's scalar calls
// cost more than the rest of the elementwise work. Written as plain loops the compiler
// vectorizes for the baseline ISA (no intrinsics); ops.h keeps the libm versions as the
// reference they are tested against (tests/cpp/test_fast_math.cpp).
#pragma once
#include <cstdint>

namespace minicpmv::ops {

// y = e^x elementwise (x == y allowed). Relative error < 4e-7 (~3 ulp) for x in [-87, 88];
// below -87.3 the result flushes to e^-87.3 ~ 1.2e-38 instead of a denormal/zero.
void exp_fast(const float* x, float* y, int64_t n);

// In place softmax(scale * x) over n values, scale > 0 (max-subtracted, float32 sums in 8 lanes).
void softmax_fast(float* x, int64_t n, float scale = 1.0f);

// Largest of x[0..n), n >= 1 (8 running maxima: the compiler vectorizes it).
float max_fast(const float* x, int64_t n);

// x[i] = e^(x[i] - shift) in place; returns the float32 sum of the results (8 partial sums).
// The pieces of softmax_fast for callers that normalize later (attention scales its 72-wide
// output row by 1/sum instead of the 1024-wide probability row).
float exp_shift_sum_fast(float* x, int64_t n, float shift);

// n finite floats (a multiple of 32) -> n/32 Q8_0 blocks (34 bytes each: fp16 d = amax/127, then
// roundf(x * (1/d)) as int8): the same bytes as quantize_row(Q8_0) (and gguf-py), but written
// for the vectorizer (no libm roundf / fmaxf calls) and without its finiteness check.
void quantize_q8_0_fast(const float* x, void* blocks, int64_t n);

// In place 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tanh from exp_fast.
// Absolute error < 1e-6 * max(1, |x|).
void gelu_tanh_fast(float* x, int64_t n);

// Qwen2's SwiGLU: gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x) with e^-x from
// exp_fast (clamped at e^88.3, so very negative x gives ~x * 4.5e-39 instead of 0).
// Absolute error < 1e-6 * max(1, |gate|) * |up| against the libm version (ops::silu, ops::mul).
void swiglu_fast(float* gate, const float* up, int64_t n);

}  // namespace minicpmv::ops
