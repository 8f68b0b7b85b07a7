#include "ops/fast_math.h"

// The clamps below are float compares; under GCC's default -ftrapping-math it will not turn them
// into branch-free min/max inside a loop, and the loops calling exp_one stay scalar (measured:
// "control flow in loop", 4x slower). We never read the FP exception flags, so let it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/f16.h"

namespace minicpmv::ops {
namespace {

constexpr int64_t kChunk = 256;  // elements per pass over a stack buffer

// e^x = 2^k * e^r with k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2] (Cody-Waite split
// of ln 2 so r is exact to float precision), e^r by its degree-6 Taylor polynomial (remainder
// r^7/7! < 1.3e-7 relative). The rounding uses the 1.5 * 2^23 trick and the 2^k factor is built
// in the exponent bits: everything is plain arithmetic the vectorizer handles.
inline float exp_one(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float kf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - kf * 0.693145751953125f) - kf * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace

void exp_fast(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = exp_one(x[i]);
}

float max_fast(const float* x, int64_t n) {
  float m8[8];
  for (int l = 0; l < 8; ++l) m8[l] = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) m8[l] = x[i + l] > m8[l] ? x[i + l] : m8[l];
  float mx = m8[0];
  for (int l = 1; l < 8; ++l) mx = std::max(mx, m8[l]);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

// One pass per chunk: shift, exponentiate, accumulate, while the chunk is in L1.
float exp_shift_sum_fast(float* x, int64_t n, float shift) {
  float s8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float tail = 0.0f;
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = std::min(kChunk, n - i0);
    float* v = x + i0;
    for (int64_t i = 0; i < m; ++i) v[i] = exp_one(v[i] - shift);
    int64_t i = 0;
    for (; i + 8 <= m; i += 8)
      for (int l = 0; l < 8; ++l) s8[l] += v[i + l];
    for (; i < m; ++i) tail += v[i];
  }
  return (((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7]))) + tail;
}

void quantize_q8_0_fast(const float* x, void* blocks, int64_t n) {
  block_q8_0* y = static_cast<block_q8_0*>(blocks);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* v = x + b * 32;
    float m8[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 running maxima: a vector, not a serial chain
    for (int i = 0; i < 32; i += 8)
      for (int l = 0; l < 8; ++l) {
        const float a = std::fabs(v[i + l]);
        m8[l] = a > m8[l] ? a : m8[l];
      }
    float amax = m8[0];
    for (int l = 1; l < 8; ++l) amax = m8[l] > amax ? m8[l] : amax;
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = fp32_to_fp16(d);
    int32_t q[32];  // codes staged in a local array: stores through int8_t* may alias x
    for (int i = 0; i < 32; ++i) {
      // roundf (half away from zero) without the libm call: truncate, then step by the exact
      // remainder (|a| <= 127.5, so t and a - t are exact).
      const float a = v[i] * id;
      const float t = static_cast<float>(static_cast<int32_t>(a));
      const float f = a - t;
      const float r = t + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f);
      q[i] = static_cast<int32_t>(r);
    }
    for (int i = 0; i < 32; ++i) y[b].qs[i] = static_cast<int8_t>(q[i]);
  }
}

void softmax_fast(float* x, int64_t n, float scale) {
  if (n <= 0) return;
  float m8[8];
  for (int l = 0; l < 8; ++l) m8[l] = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) m8[l] = x[i + l] > m8[l] ? x[i + l] : m8[l];
  float mx = m8[0];
  for (int l = 1; l < 8; ++l) mx = std::max(mx, m8[l]);
  for (; i < n; ++i) mx = std::max(mx, x[i]);

  for (i = 0; i < n; ++i) x[i] = (x[i] - mx) * scale;  // scale > 0: the max is unchanged
  exp_fast(x, x, n);
  float s8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (i = 0; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) s8[l] += x[i + l];
  float sum = ((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7]));
  for (; i < n; ++i) sum += x[i];
  const float inv = 1.0f / sum;
  for (i = 0; i < n; ++i) x[i] *= inv;
}

// tanh(u) = 1 - 2 / (e^{2u} + 1); u is clamped to +-9 where tanh is 1 to float precision (and
// e^{2u} stays finite).
void gelu_tanh_fast(float* x, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  float e[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = std::min(kChunk, n - i0);
    float* v = x + i0;
    for (int64_t i = 0; i < m; ++i) {
      const float u = k * (v[i] + 0.044715f * v[i] * v[i] * v[i]);
      const float c = u < -9.0f ? -9.0f : u;
      e[i] = 2.0f * (c > 9.0f ? 9.0f : c);
    }
    exp_fast(e, e, m);
    for (int64_t i = 0; i < m; ++i) v[i] = 0.5f * v[i] * (2.0f - 2.0f / (e[i] + 1.0f));
  }
}

void swiglu_fast(float* gate, const float* up, int64_t n) {
  float e[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = std::min(kChunk, n - i0);
    float* g = gate + i0;
    for (int64_t i = 0; i < m; ++i) e[i] = -g[i];
    exp_fast(e, e, m);
    for (int64_t i = 0; i < m; ++i) g[i] = g[i] / (1.0f + e[i]) * up[i0 + i];
  }
}

}  // namespace minicpmv::ops
