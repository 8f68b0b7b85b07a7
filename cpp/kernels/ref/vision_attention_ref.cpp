// Scalar twin of the flash-style full attention (kernels/vision_attention.h) and the head packing.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/vision_attention.h"
#include "quant/f16.h"

namespace minicpmv::kernels::vattn {

void pack_keys(const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n_kv, int64_t d,
               int64_t j0, int64_t j1, float* kt, float* vp) {
  const int64_t dp = padded_dim(d);
  for (int64_t j = j0; j < j1; ++j) {
    float* strip = kt + (j / 16) * d * 16 + (j % 16);
    float* vrow = vp + j * dp;
    if (j < n_kv) {
      const float* kr = k + j * k_stride;
      for (int64_t c = 0; c < d; ++c) strip[c * 16] = kr[c];
      std::memcpy(vrow, v + j * v_stride, sizeof(float) * d);
    } else {
      for (int64_t c = 0; c < d; ++c) strip[c * 16] = 0.0f;
      std::fill(vrow, vrow + d, 0.0f);
    }
    std::fill(vrow + d, vrow + dp, 0.0f);
  }
}

void block_ref(const Block& b, float* scratch) {
  const int64_t d = b.d, dp = padded_dim(d), nkp = padded_keys(b.n_kv);
  float* sc = scratch;                 // [rows][kTile]
  float* o = sc + kRows * kTile;       // [rows][dp]
  float* m = o + kRows * dp;           // running max per row
  float* l = m + kRows;                // running sum per row
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::fill(o, o + b.rows * dp, 0.0f);
  std::fill(m, m + b.rows, neg_inf);
  std::fill(l, l + b.rows, 0.0f);
  for (int64_t j0 = 0; j0 < nkp; j0 += kTile) {
    const int64_t w = std::min(kTile, nkp - j0), valid = std::min(w, b.n_kv - j0);
    for (int64_t r = 0; r < b.rows; ++r) {
      const float* qr = b.q + r * d;
      float* s = sc + r * kTile;
      for (int64_t j = 0; j < w; ++j) {
        const float* strip = b.kt + ((j0 + j) / 16) * d * 16 + ((j0 + j) % 16);
        float acc = 0.0f;
        for (int64_t c = 0; c < d; ++c) acc += qr[c] * strip[c * 16];
        s[j] = j < valid ? acc : neg_inf;
      }
      float mx = neg_inf;
      for (int64_t j = 0; j < w; ++j) mx = std::max(mx, s[j]);
      const float m_new = std::max(m[r], mx);
      const float alpha = m[r] == neg_inf ? 0.0f : std::exp(m[r] - m_new);
      float sum = 0.0f;
      for (int64_t j = 0; j < w; ++j) sum += (s[j] = std::exp(s[j] - m_new));
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      float* orow = o + r * dp;
      for (int64_t c = 0; c < dp; ++c) orow[c] *= alpha;
      for (int64_t j = 0; j < w; ++j) {
        const float* vrow = b.vp + (j0 + j) * dp;
        for (int64_t c = 0; c < dp; ++c) orow[c] += s[j] * vrow[c];
      }
    }
  }
  for (int64_t r = 0; r < b.rows; ++r) {
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < d; ++c) b.out[r * b.out_stride + c] = o[r * dp + c] * inv;
  }
}

void pack_keys_bf16(const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n_kv, int64_t d,
                    int64_t j0, int64_t j1, uint16_t* ktb, uint16_t* vpb) {
  const int64_t dp = padded_dim(d), d2 = half_dim(d);
  for (int64_t j = j0; j < j1; ++j) {
    uint16_t* strip = ktb + (j / 16) * d2 * 32 + (j % 16) * 2;  // + c2 * 32 + (c & 1)
    const float* kr = k + j * k_stride;
    const float* vr = v + j * v_stride;
    for (int64_t c = 0; c < 2 * d2; ++c)
      strip[(c / 2) * 32 + (c & 1)] = j < n_kv && c < d ? fp32_to_bf16(kr[c]) : uint16_t(0);
    uint16_t* vpair = vpb + (j / 2) * dp * 2 + (j & 1);  // + c * 2
    for (int64_t c = 0; c < dp; ++c) vpair[c * 2] = j < n_kv && c < d ? fp32_to_bf16(vr[c]) : uint16_t(0);
  }
}

void queries_bf16(const float* q, int64_t q_stride, int64_t rows, int64_t d, float scale, uint32_t* q2) {
  const int64_t d2 = half_dim(d);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = q + r * q_stride;
    for (int64_t c2 = 0; c2 < d2; ++c2) {
      const uint32_t lo = fp32_to_bf16(src[2 * c2] * scale);
      const uint32_t hi = 2 * c2 + 1 < d ? fp32_to_bf16(src[2 * c2 + 1] * scale) : 0u;
      q2[r * d2 + c2] = lo | (hi << 16);
    }
  }
}

void block_bf16_ref(const Block& b, float* scratch) {
  const int64_t d = b.d, dp = padded_dim(d), d2 = half_dim(d), nkp = padded_keys(b.n_kv);
  float* sc = scratch;
  float* o = sc + kRows * kTile;
  float* m = o + kRows * dp;
  float* l = m + kRows;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::fill(o, o + b.rows * dp, 0.0f);
  std::fill(m, m + b.rows, neg_inf);
  std::fill(l, l + b.rows, 0.0f);
  for (int64_t j0 = 0; j0 < nkp; j0 += kTile) {
    const int64_t w = std::min(kTile, nkp - j0), valid = std::min(w, b.n_kv - j0);
    for (int64_t r = 0; r < b.rows; ++r) {
      const uint32_t* qr = b.q2 + r * d2;
      float* s = sc + r * kTile;
      for (int64_t j = 0; j < w; ++j) {
        const uint16_t* strip = b.ktb + ((j0 + j) / 16) * d2 * 32 + ((j0 + j) % 16) * 2;
        float acc = 0.0f;
        for (int64_t c2 = 0; c2 < d2; ++c2) {
          acc += bf16_to_fp32(static_cast<uint16_t>(qr[c2])) * bf16_to_fp32(strip[c2 * 32]);
          acc += bf16_to_fp32(static_cast<uint16_t>(qr[c2] >> 16)) * bf16_to_fp32(strip[c2 * 32 + 1]);
        }
        s[j] = j < valid ? acc : neg_inf;
      }
      float mx = neg_inf;
      for (int64_t j = 0; j < w; ++j) mx = std::max(mx, s[j]);
      const float m_new = std::max(m[r], mx);
      const float alpha = m[r] == neg_inf ? 0.0f : std::exp(m[r] - m_new);
      float sum = 0.0f;
      for (int64_t j = 0; j < w; ++j) sum += (s[j] = std::exp(s[j] - m_new));
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      float* orow = o + r * dp;
      for (int64_t c = 0; c < dp; ++c) orow[c] *= alpha;
      for (int64_t j = 0; j < w; ++j) {
        const float p = bf16_to_fp32(fp32_to_bf16(s[j]));
        const uint16_t* vpair = b.vpb + ((j0 + j) / 2) * dp * 2 + ((j0 + j) & 1);
        for (int64_t c = 0; c < dp; ++c) orow[c] += p * bf16_to_fp32(vpair[c * 2]);
      }
    }
  }
  for (int64_t r = 0; r < b.rows; ++r) {
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < d; ++c) b.out[r * b.out_stride + c] = o[r * dp + c] * inv;
  }
}

}  // namespace minicpmv::kernels::vattn
