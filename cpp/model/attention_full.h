// Full (bidirectional, unmasked) multi-head attention over f32 Q/K/V, as used by the SigLIP
// encoder blocks and the resampler's cross attention. (The LLM's causal, KV-cached attention lives
// with qwen2.) Heads are column slices of the rows: head h of row i is row_i[h*head_dim, +head_dim).
//
//   out_h = softmax(Q_h K_h^T * scale) V_h        for every head h
#pragma once
#include <cstdint>
#include <vector>

namespace minicpmv {
class ThreadPool;

namespace model {

struct AttentionShape {
  int64_t n_q = 0, n_kv = 0;          // query rows, key/value rows
  int64_t n_heads = 0, head_dim = 0;
  int64_t q_stride = 0, k_stride = 0, v_stride = 0, out_stride = 0;  // floats between rows
  float scale = 1.0f;
  // Both products on the int8 kernels: K_h and V_h^T packed as Q8_0 "weights" (zero-padded to
  // whole blocks), the scaled queries and the exp(S - max) rows quantized to Q8_0 by matmul.
  // Costs ~1.5% relative RMS on the output (tests/cpp/test_vision_perf.cpp) for ~20% less time
  // on the tower's shape with today's kernels (slower for the resampler's 64 queries: packing
  // dominates). Not switched on by the models yet: kept for when the int8 kernels pull ahead.
  bool int8 = false;
};

// Both products run in kernels::matmul (f32), one task per (head, block of 64 query rows) spread
// over the pool. `scratch` holds every head's packed K_h and V_h^T (2 * n_kv * n_heads * head_dim
// floats); it grows on the first call for a larger n_kv and is reused afterwards.
void attention_full(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                    ThreadPool& pool, std::vector<float>& scratch);

}  // namespace model
}  // namespace minicpmv
