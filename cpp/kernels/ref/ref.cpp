// Scalar reference of every kernel: the oracle the SIMD paths are tested against, and the
// fallback on CPUs without them. Each dot product follows the block layout in quant/blocks.h
// directly (no dequantize_row), sums integer products per block exactly, and scales in float.
#include <cmath>
#include <cstring>

#include "kernels/kernel_set.h"
#include "quant/blocks.h"
#include "quant/f16.h"

namespace minicpmv {
namespace kernels {
namespace ref {

void quantize_a8(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 32;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  float* ss = dd + nb;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int q = static_cast<int>(std::round(xb[j] * id));  // half away from zero, as Q8_0
      qs[b * 32 + j] = static_cast<int8_t>(q);
      sum += q;
    }
    dd[b] = fp16_to_fp32(fp32_to_fp16(d));
    ss[b] = dd[b] * static_cast<float>(sum);  // exact: |sum| < 2^12, d has 11 significant bits
  }
}

void quantize_a8k(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 256;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  int16_t* bsums = reinterpret_cast<int16_t*>(dst + cols + 4 * nb);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 256;
    int8_t* q = qs + b * 256;
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < 256; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0.f) {
      dd[b] = 0.f;
      std::memset(q, 0, 256);
      for (int g = 0; g < 16; ++g) bsums[b * 16 + g] = 0;
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < 256; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * xb[j]));  // round half to even
      q[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += q[g * 16 + j];
      bsums[b * 16 + g] = static_cast<int16_t>(s);
    }
    dd[b] = 1.f / iscale;
  }
}

}  // namespace ref

namespace {

template <class Block>
const Block* blocks(const uint8_t* w) {
  return reinterpret_cast<const Block*>(w);
}

float dot_f32(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const float* a = reinterpret_cast<const float*>(w);
  const float* b = reinterpret_cast<const float*>(x);
  float s = 0.f;
  for (int64_t j = 0; j < cols; ++j) s += a[j] * b[j];
  return s;
}

float dot_f16(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const uint16_t* a = reinterpret_cast<const uint16_t*>(w);
  const float* b = reinterpret_cast<const float*>(x);
  float s = 0.f;
  for (int64_t j = 0; j < cols; ++j) s += fp16_to_fp32(a[j]) * b[j];
  return s;
}

float dot_bf16(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const uint16_t* a = reinterpret_cast<const uint16_t*>(w);
  const float* b = reinterpret_cast<const float*>(x);
  float s = 0.f;
  for (int64_t j = 0; j < cols; ++j) s += bf16_to_fp32(a[j]) * b[j];
  return s;
}

float dot_q4_0(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8Row a(x, cols);
  const block_q4_0* bw = blocks<block_q4_0>(w);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const int8_t* q = a.qs + b * 32;
    int sumi = 0;
    for (int j = 0; j < 16; ++j)
      sumi += ((bw[b].qs[j] & 0xF) - 8) * q[j] + ((bw[b].qs[j] >> 4) - 8) * q[j + 16];
    s += fp16_to_fp32(bw[b].d) * a.d[b] * static_cast<float>(sumi);
  }
  return s;
}

// Q4_1: (d q + m) . (dx qx) = d dx sum(q qx) + m s, with s = dx sum(qx).
float dot_q4_1(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8Row a(x, cols);
  const block_q4_1* bw = blocks<block_q4_1>(w);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const int8_t* q = a.qs + b * 32;
    int sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += (bw[b].qs[j] & 0xF) * q[j] + (bw[b].qs[j] >> 4) * q[j + 16];
    s += fp16_to_fp32(bw[b].d) * a.d[b] * static_cast<float>(sumi) + fp16_to_fp32(bw[b].m) * a.s[b];
  }
  return s;
}

template <class Block>
int q5_value(const Block& blk, int j) {  // element j (0..31) of a Q5_0 / Q5_1 block, 0..31
  uint32_t qh;
  std::memcpy(&qh, blk.qh, 4);
  const int lo = j < 16 ? (blk.qs[j] & 0xF) : (blk.qs[j - 16] >> 4);
  return lo | (((qh >> j) & 1) << 4);
}

float dot_q5_0(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8Row a(x, cols);
  const block_q5_0* bw = blocks<block_q5_0>(w);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const int8_t* q = a.qs + b * 32;
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += (q5_value(bw[b], j) - 16) * q[j];
    s += fp16_to_fp32(bw[b].d) * a.d[b] * static_cast<float>(sumi);
  }
  return s;
}

float dot_q5_1(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8Row a(x, cols);
  const block_q5_1* bw = blocks<block_q5_1>(w);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const int8_t* q = a.qs + b * 32;
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += q5_value(bw[b], j) * q[j];
    s += fp16_to_fp32(bw[b].d) * a.d[b] * static_cast<float>(sumi) + fp16_to_fp32(bw[b].m) * a.s[b];
  }
  return s;
}

float dot_q8_0(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8Row a(x, cols);
  const block_q8_0* bw = blocks<block_q8_0>(w);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const int8_t* q = a.qs + b * 32;
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += bw[b].qs[j] * q[j];
    s += fp16_to_fp32(bw[b].d) * a.d[b] * static_cast<float>(sumi);
  }
  return s;
}

// Q4_K / Q5_K: x = d sc_j q - dmin m_j per sub-block j of 32, so a super-block contributes
// dx (d sum_j sc_j sum(q qx) - dmin sum_j m_j sum(qx)), sum(qx) from the Q8_K bsums.
template <bool kFive>
float dot_q45_k(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8KRow a(x, cols);
  const size_t bsize = kFive ? sizeof(block_q5_K) : sizeof(block_q4_K);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 256; ++b) {
    const uint8_t* blk = w + b * bsize;
    uint16_t d16, dmin16;
    std::memcpy(&d16, blk, 2);
    std::memcpy(&dmin16, blk + 2, 2);
    const uint8_t* scales = blk + 4;
    const uint8_t* qh = kFive ? blk + 16 : nullptr;
    const uint8_t* ql = kFive ? blk + 48 : blk + 16;
    const int8_t* q = a.qs + b * 256;
    const int16_t* bs = a.bsums + b * 16;
    int isum = 0, msum = 0;
    for (int c = 0; c < 4; ++c) {  // 64 elements: sub-blocks 2c (low nibbles), 2c+1 (high)
      uint8_t sc1, m1, sc2, m2;
      ref::scale_min_k4(2 * c, scales, &sc1, &m1);
      ref::scale_min_k4(2 * c + 1, scales, &sc2, &m2);
      int s1 = 0, s2 = 0;
      for (int l = 0; l < 32; ++l) {
        int v1 = ql[32 * c + l] & 0xF, v2 = ql[32 * c + l] >> 4;
        if (kFive) {
          v1 += ((qh[l] >> (2 * c)) & 1) << 4;
          v2 += ((qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        s1 += v1 * q[64 * c + l];
        s2 += v2 * q[64 * c + 32 + l];
      }
      isum += sc1 * s1 + sc2 * s2;
      msum += m1 * (bs[4 * c] + bs[4 * c + 1]) + m2 * (bs[4 * c + 2] + bs[4 * c + 3]);
    }
    s += a.d[b] * (fp16_to_fp32(d16) * static_cast<float>(isum) -
                   fp16_to_fp32(dmin16) * static_cast<float>(msum));
  }
  return s;
}

// Q6_K: x = d sc_i (q - 32), 16 sub-blocks of 16 with int8 scales.
float dot_q6_k(int64_t cols, const uint8_t* w, const uint8_t* x) {
  const A8KRow a(x, cols);
  const block_q6_K* bw = blocks<block_q6_K>(w);
  float s = 0.f;
  for (int64_t b = 0; b < cols / 256; ++b) {
    const block_q6_K& blk = bw[b];
    int8_t v[256];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = blk.ql + 64 * h;
      const uint8_t* qh = blk.qh + 32 * h;
      int8_t* o = v + 128 * h;
      for (int l = 0; l < 32; ++l) {
        o[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
        o[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        o[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        o[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    const int8_t* q = a.qs + b * 256;
    int isum = 0;
    for (int i = 0; i < 16; ++i) {
      int si = 0;
      for (int l = 0; l < 16; ++l) si += v[16 * i + l] * q[16 * i + l];
      isum += blk.scales[i] * si;
    }
    s += fp16_to_fp32(blk.d) * a.d[b] * static_cast<float>(isum);
  }
  return s;
}

template <float (*Dot)(int64_t, const uint8_t*, const uint8_t*)>
void gemm(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x,
          size_t x_stride, int64_t nx, float* y, size_t y_stride) {
  for (int64_t t = 0; t < nx; ++t)
    for (int64_t r = 0; r < nrows; ++r) y[t * y_stride + r] = Dot(cols, w + r * w_stride, x + t * x_stride);
}

}  // namespace

void fill_ref(KernelSet& ks) {
  ks.name = "ref";
  ks.quantize_a8 = ref::quantize_a8;
  ks.quantize_a8k = ref::quantize_a8k;
  auto set = [&](DType t, GemmFn f) { ks.gemm[static_cast<int>(t)] = f; };
  set(DType::F32, gemm<dot_f32>);
  set(DType::F16, gemm<dot_f16>);
  set(DType::BF16, gemm<dot_bf16>);
  set(DType::Q4_0, gemm<dot_q4_0>);
  set(DType::Q4_1, gemm<dot_q4_1>);
  set(DType::Q5_0, gemm<dot_q5_0>);
  set(DType::Q5_1, gemm<dot_q5_1>);
  set(DType::Q8_0, gemm<dot_q8_0>);
  set(DType::Q4_K, gemm<dot_q45_k<false>>);
  set(DType::Q5_K, gemm<dot_q45_k<true>>);
  set(DType::Q6_K, gemm<dot_q6_k>);
}

}  // namespace kernels
}  // namespace minicpmv
