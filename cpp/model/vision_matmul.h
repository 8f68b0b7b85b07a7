// The matmul of the vision tower and resampler matrices (siglip.cpp, resampler.cpp).
// VisionEncoder's weights = "bf16" converts the f16 / f32 matrices to BF16 copies at load and runs
// them on bf16 dot products (kernels/bf16_dot.h: activations rounded to bf16, f32 accumulation);
// every other matrix, and every other option, goes through kernels::matmul. The choice travels as
// a scope around each forward pass (a flag of the calling thread), because the tower and resampler
// classes are built from the Mmproj alone and carry no options.
#pragma once
#include <cstdint>

#include "kernels/bf16_dot.h"
#include "kernels/matmul.h"

namespace minicpmv::model {

inline bool& bf16_dot_flag() {
  thread_local bool on = false;
  return on;
}

// While alive (on the constructing thread), BF16 vision matrices use the bf16 dot-product kernels.
class Bf16DotScope {
 public:
  explicit Bf16DotScope(bool on) : prev_(bf16_dot_flag()) { bf16_dot_flag() = on; }
  ~Bf16DotScope() { bf16_dot_flag() = prev_; }
  Bf16DotScope(const Bf16DotScope&) = delete;
  Bf16DotScope& operator=(const Bf16DotScope&) = delete;

 private:
  bool prev_;
};

inline void vision_matmul(const kernels::Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool) {
  if (bf16_dot_flag() && W.type() == DType::BF16) return kernels::matmul_bf16_dot(W, X, n, Y, pool);
  kernels::matmul(W, X, n, Y, pool);
}

// Several matrices of the same width over one X (q, k, v): one activation quantization and one
// pool job where the kernels allow (kernels::matmul_multi: bit-identical to separate calls).
inline void vision_matmul_multi(const kernels::MatmulOut* outs, int count, const float* X, int64_t n,
                                ThreadPool& pool) {
  bool bf16 = false;
  for (int i = 0; i < count; ++i) bf16 = bf16 || (bf16_dot_flag() && outs[i].w->type() == DType::BF16);
  if (!bf16) return kernels::matmul_multi(outs, count, X, n, pool);
  for (int i = 0; i < count; ++i) vision_matmul(*outs[i].w, X, n, outs[i].y, pool);
}

}  // namespace minicpmv::model
