// Block formats: dequantize every supported type to f32, quantize to the types the converter
// writes. Layouts are documented in quant/blocks.h; results are bit-exact with gguf-py
// (gguf.quants) for dequantization and for F16 / BF16 / Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1
// quantization. Q4_K / Q5_K / Q6_K follow llama.cpp's reference quantizers (no importance
// matrix) and came out byte-identical with llama.cpp's llama_model_quantize in
// bench/quant_rmse.py. No fused multiply-add anywhere here, so every platform writes the same bytes.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/blocks.h"
#include "quant/types.h"

namespace minicpmv {
class ThreadPool;

// n elements (a multiple of the type's block size) from `src` (raw blocks) to `dst`.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Types quantize_rows can write: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
// Returns false for the others.
bool can_quantize(DType type);

// rows x cols f32 (row-major) -> rows * row_size(type, cols) bytes, rows split across the pool.
// cols must be a multiple of the block size (InvalidArgument otherwise). Do not call it from inside
// a job running on the same pool (ThreadPool::run is not reentrant).
void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols,
                   ThreadPool* pool = nullptr);

// One row (or any run of whole blocks) of n elements, on the calling thread. Same results as
// quantize_rows. Quantized (block) types reject non-finite input with InvalidArgument; F32 / F16 /
// BF16 keep inf and NaN.
void quantize_row(DType type, const float* src, void* dst, int64_t n);

// Activation partners for the matmul kernels (scalar reference versions). No checks (hot path):
// n must be a multiple of 32 / 256 and x finite.
// Q8_0: d = max|x| / 127, q = round-half-away(x / d), as ggml's quantize_row_q8_0_ref and gguf-py.
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n);
// Q8_K: as ggml's quantize_row_q8_K_ref: max = the signed value of largest magnitude,
// iscale = -127 / max, q = min(127, nearest_int(iscale * x)) (round half to even), d = 1 / iscale
// (f32), bsums[j] = sum of q[16j .. 16j + 15]. ggml switched from -128 to -127 so that q is never
// -128 (SIMD sign tricks need a symmetric range). An all-zero block gives d = 0, q = 0, bsums = 0.
void quantize_row_q8_K(const float* x, block_q8_K* y, int64_t n);

}  // namespace minicpmv
