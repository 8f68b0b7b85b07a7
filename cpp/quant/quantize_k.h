// Internal to quant/: the K-quant quantizers of quantize_k.cpp, called by quantize.cpp's dispatch.
// `nb` super-blocks of QK_K elements each; no validation here (quantize_row checks the input).
#pragma once
#include <cstdint>

#include "quant/blocks.h"

namespace minicpmv::detail {

void quantize_blocks_q4_K(const float* x, block_q4_K* y, int64_t nb);
void quantize_blocks_q5_K(const float* x, block_q5_K* y, int64_t nb);
void quantize_blocks_q6_K(const float* x, block_q6_K* y, int64_t nb);

}  // namespace minicpmv::detail
