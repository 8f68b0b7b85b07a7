// Causal grouped-query attention over a KV cache (the Qwen2 decoder's attention step), and the
// f32 -> f16 row conversion that fills that cache.
//
//   out[i, h] = softmax_t(scale * q[i, h] . K[t, h / group]) V[t, h / group],   t < n_past + i + 1
//
// for query position i < n_q (RoPE already applied) and query head h < n_head; group =
// n_head / n_head_kv query heads share one KV head. The cache holds the positions 0 .. n_past +
// n_q - 1 (this block's own keys/values are stored before attending).
//
// Work is split into (KV head, block of query positions) items: one item converts each K row and V
// row of its KV head to f32 once and uses it for all `group` query heads of all its query positions,
// with an online (flash-style) softmax over tiles of positions, so no score row of the whole context
// is materialised. The SIMD paths need head_dim % 16 == 0 (every Qwen2 / SigLIP size is: each ISA's
// vectors then tile a head without tails); other head sizes fall back to the scalar block.
#pragma once
#include <cstdint>

#include "kernels/matmul.h"
#include "quant/types.h"

namespace minicpmv {
class ThreadPool;

namespace kernels {

struct GqaArgs {
  // Query head h of position i starts at q + i * q_stride + h * head_dim (f32); out likewise.
  const float* q = nullptr;
  int64_t q_stride = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
  // KV head g of cached position t starts at k + (t * kv_stride + g * kv_head_stride) elements;
  // kv_head_stride 0 means head_dim (the heads of a position side by side in one row).
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_stride = 0;
  int64_t kv_head_stride = 0;
  DType kv_type = DType::F16;  // F16 or F32
  int64_t n_q = 0, n_past = 0;
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0;
  float scale = 1.0f;

  int64_t head_stride() const { return kv_head_stride ? kv_head_stride : head_dim; }
};

// InvalidArgument for unsupported shapes (head_dim <= 0, n_head % n_head_kv != 0, kv_type not
// F16/F32, null pointers, strides too small) or a path this CPU cannot run.
void gqa_attention(const GqaArgs& a, ThreadPool& pool);
void gqa_attention(const GqaArgs& a, ThreadPool& pool, Isa isa);

// y[i] = fp32_to_fp16(x[i]) (round to nearest even, the same bits as quant/f16.h for every finite
// or infinite input; NaN stays NaN).
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n, Isa isa);

// Internal: the pieces each ISA file provides (attention.cpp dispatches and threads them).
namespace attn {

// One work item: KV head `kv_head`, query positions [i0, i1). `scratch` holds scratch_floats()
// floats (per thread, reused across items).
using BlockFn = void (*)(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch);
using F16RowFn = void (*)(const float* x, uint16_t* y, int64_t n);

constexpr int64_t kTile = 64;     // cached positions per online-softmax step
constexpr int64_t kQBlock = 16;    // query positions per work item (prefill)

// Floats of scratch one item of n_rows = group * (i1 - i0) query rows needs: the SIMD paths keep
// a K and a V tile, a tile of scores and an accumulator per row; the ref path one score row of the
// whole visible context (n_seen positions).
inline int64_t scratch_floats(bool ref, int64_t n_rows, int64_t head_dim, int64_t n_seen) {
  return (ref ? n_seen : 2 * kTile * head_dim + n_rows * (kTile + head_dim + 2)) + 64;
}

void block_ref(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch);
void f16_row_ref(const float* x, uint16_t* y, int64_t n);
#if defined(MINICPMV_X86)
void block_avx2(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch);
void block_avx512(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch);
void f16_row_avx2(const float* x, uint16_t* y, int64_t n);
void f16_row_avx512(const float* x, uint16_t* y, int64_t n);
#endif
#if defined(MINICPMV_ARM)
void block_neon(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch);
void f16_row_neon(const float* x, uint16_t* y, int64_t n);
#endif

}  // namespace attn
}  // namespace kernels
}  // namespace minicpmv
