// Scalar reference of the grouped-query attention block and of f32 -> f16 rows (the oracle the
// SIMD paths are tested against): per query row, the plain two-pass softmax over every visible
// position with libm exp, K and V converted exactly by quant/f16.h.
#include <cmath>

#include "kernels/attention.h"
#include "quant/f16.h"

namespace minicpmv {
namespace kernels {
namespace attn {
namespace {

inline float at(const void* p, DType type, int64_t j) {
  return type == DType::F16 ? fp16_to_fp32(static_cast<const uint16_t*>(p)[j]) : static_cast<const float*>(p)[j];
}

}  // namespace

void block_ref(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scores) {
  const int64_t hd = a.head_dim, group = a.n_head / a.n_head_kv;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t n_kv = a.n_past + i + 1;
    for (int64_t g = 0; g < group; ++g) {
      const int64_t h = kv_head * group + g;
      const float* q = a.q + i * a.q_stride + h * hd;
      float* out = a.out + i * a.out_stride + h * hd;
      float mx = -INFINITY;
      for (int64_t t = 0; t < n_kv; ++t) {
        const int64_t base = t * a.kv_stride + kv_head * a.head_stride();
        float dot = 0.0f;
        for (int64_t j = 0; j < hd; ++j) dot += q[j] * at(a.k, a.kv_type, base + j);
        scores[t] = dot * a.scale;
        mx = std::fmax(mx, scores[t]);
      }
      float sum = 0.0f;
      for (int64_t t = 0; t < n_kv; ++t) sum += scores[t] = std::exp(scores[t] - mx);
      for (int64_t j = 0; j < hd; ++j) out[j] = 0.0f;
      for (int64_t t = 0; t < n_kv; ++t) {
        const int64_t base = t * a.kv_stride + kv_head * a.head_stride();
        for (int64_t j = 0; j < hd; ++j) out[j] += scores[t] * at(a.v, a.kv_type, base + j);
      }
      for (int64_t j = 0; j < hd; ++j) out[j] /= sum;
    }
  }
}

void f16_row_ref(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace attn
}  // namespace kernels
}  // namespace minicpmv
