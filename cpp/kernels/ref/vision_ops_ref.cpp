// Scalar twins of kernels/vision_ops.h (same passes, same 16 partial sums and the same exp
// polynomial as the AVX-512 versions) and the dispatch.
#include <cmath>
#include <string>

#include "kernels/vision_ops.h"
#include "minicpmv/error.h"
#include "runtime/cpu.h"

namespace minicpmv::kernels::vops {
namespace ref {
namespace {

// Two-pass mean / variance with 16 partial sums (lane i takes elements i, i + 16, ...).
void moments(const float* x, int64_t d, float& mean, float& rstd, float eps) {
  float s[16] = {};
  for (int64_t j = 0; j < d; ++j) s[j % 16] += x[j];
  float sum = 0.0f;
  for (float v : s) sum += v;
  mean = sum / static_cast<float>(d);
  float q[16] = {};
  for (int64_t j = 0; j < d; ++j) q[j % 16] += (x[j] - mean) * (x[j] - mean);
  float sq = 0.0f;
  for (float v : q) sq += v;
  rstd = 1.0f / std::sqrt(sq / static_cast<float>(d) + eps);
}

// e^x for x in [-18, 18]: x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial, times 2^n.
float exp_poly(float x) {
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return std::ldexp(p, static_cast<int>(n));
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t d, float eps) {
  float mean, rstd;
  moments(x, d, mean, rstd, eps);
  for (int64_t j = 0; j < d; ++j) y[j] = (x[j] - mean) * rstd * w[j] + b[j];
}

void residual_layer_norm(float* x, const float* r, const float* bias, const float* w, const float* b, float* y,
                         int64_t d, float eps) {
  for (int64_t j = 0; j < d; ++j) x[j] += r[j] + bias[j];
  layer_norm(x, w, b, y, d, eps);
}

void bias_gelu(const float* x, const float* bias, float* y, int64_t n, int64_t n_pad) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j] + bias[j];
    float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    u = u < -9.0f ? -9.0f : u > 9.0f ? 9.0f : u;
    y[j] = 0.5f * v * (2.0f - 2.0f / (exp_poly(2.0f * u) + 1.0f));
  }
  for (int64_t j = n; j < n_pad; ++j) y[j] = 0.0f;
}

}  // namespace ref

const RowOps& row_ops(Isa isa) {
  static const RowOps scalar{ref::layer_norm, ref::residual_layer_norm, ref::bias_gelu};
  if (isa == Isa::Ref) return scalar;
#if defined(MINICPMV_X86)
  static const RowOps wide{avx512::layer_norm, avx512::residual_layer_norm, avx512::bias_gelu};
  if (isa == Isa::Avx512 && isa_available(isa)) return wide;
#endif
  throw InvalidArgument(std::string("vision row ops: no kernels for path ") + isa_name(isa) + " on this CPU");
}

const RowOps& row_ops() { return row_ops(active_isa() == Isa::Avx512 ? Isa::Avx512 : Isa::Ref); }

}  // namespace minicpmv::kernels::vops
