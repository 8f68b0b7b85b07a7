// Full (bidirectional, unmasked) multi-head attention over f32 Q/K/V, as used by the SigLIP
// encoder blocks and the resampler's cross attention. (The LLM's causal, KV-cached attention lives
// with qwen2.) Heads are column slices of the rows: head h of row i is row_i[h*head_dim, +head_dim).
//
//   out_h = softmax(Q_h K_h^T * scale) V_h        for every head h
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/matmul.h"

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
  // false: the kernels::matmul path even where the flash kernel exists (benchmarks, comparisons).
  bool flash = true;
  // The flash kernel's bf16 variant (vdpbf16ps: q, K, V and the probabilities rounded to bf16,
  // f32 sums and softmax) where the CPU has AVX512_BF16; ignored elsewhere (and with
  // MINICPMV_ATTENTION_BF16=0). 1.6x the f32 flash kernel on the tower's shape (34 vs 54 ms at 1
  // thread), 1.5x on the resampler's (12.6 vs 19.0 ms). The approximate vision options switch it on
  // (siglip.cpp, resampler.cpp: "bf16" dot products or Q8_0 matrices); tests/test_vision_perf.py's
  // references model its rounding (tests/reference/flash_bf16_ref.py).
  bool bf16 = false;
};

// On the AVX-512 and AVX2 paths (kernels::active_isa()), not int8: the flash-style kernel of
// kernels/vision_attention.h, one task per (head, block of 48 query rows), K and V of every head
// packed once into `scratch`. Otherwise both products run in kernels::matmul (f32), one task per
// (head, block of 64 query rows) spread over the pool (also when MINICPMV_ATTENTION_FLASH=0:
// benchmarks of the two). `scratch` holds every head's packed K_h and V_h^T (2 * n_kv * n_heads * head_dim
// floats); it grows on the first call for a larger n_kv and is reused afterwards.
void attention_full(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                    ThreadPool& pool, std::vector<float>& scratch);

// The flash kernel on a given path: Isa::Ref runs its scalar twin, Isa::Avx2 / Avx512 the SIMD
// ones (tests, benchmarks); s.bf16 picks the bf16 variant (Ref, or Avx512 with AVX512_BF16). InvalidArgument for a path without a flash kernel or that this CPU cannot run.
void attention_full_flash(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                          ThreadPool& pool, std::vector<float>& scratch, kernels::Isa isa);

}  // namespace model
}  // namespace minicpmv
