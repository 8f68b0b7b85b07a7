// Block formats: dequantize every supported type to f32, quantize to the types the converter
// writes. Layouts are documented in quant/blocks.h; results are bit-exact with gguf-py
// (gguf.quants) for dequantization and for Q8_0 / Q4_0 quantization.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace minicpmv {
class ThreadPool;

// n elements (a multiple of the type's block size) from `src` (raw blocks) to `dst`.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Types quantize_rows can write: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K (and Q4_1/Q5_0/Q5_1/Q5_K
// where implemented). Returns false for the others.
bool can_quantize(DType type);

// rows x cols f32 (row-major) -> rows * row_size(type, cols) bytes, rows split across the pool.
// cols must be a multiple of the block size (InvalidArgument otherwise).
void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols,
                   ThreadPool* pool = nullptr);

}  // namespace minicpmv
