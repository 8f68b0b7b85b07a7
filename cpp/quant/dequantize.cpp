// Dequantization of every supported block format to f32 (layouts: quant/blocks.h).
//
// Results are bit-exact with gguf-py's gguf.quants.dequantize (and ggml's dequantize_row_*):
// each element is computed with the same f32 operations in the same order, e.g. Q4_K is
// (d * sc) * q - (dmin * m), never d * (sc * q). Fused multiply-add would change the last bit,
// so contraction is switched off for this file (GCC fuses a * b + c by default on aarch64).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cstring>
#include <string>

#include "minicpmv/error.h"
#include "quant/blocks.h"
#include "quant/f16.h"
#include "quant/quant.h"

namespace minicpmv {
namespace {

void dequant_q4_0(const block_q4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK4_0) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0x0f) - 8) * d;
      y[j + QK4_0 / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const block_q4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK4_1) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < QK4_1 / 2; ++j) {
      y[j] = d * static_cast<float>(x[i].qs[j] & 0x0f) + m;
      y[j + QK4_1 / 2] = d * static_cast<float>(x[i].qs[j] >> 4) + m;
    }
  }
}

// The fifth bit of element j of a Q5_0 / Q5_1 block is bit j of the little-endian u32 qh.
inline uint32_t load_qh(const uint8_t* qh) {
  return uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
}

void dequant_q5_0(const block_q5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK5_0) {
    const float d = fp16_to_fp32(x[i].d);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < QK5_0 / 2; ++j) {
      const int q0 = (x[i].qs[j] & 0x0f) | ((qh >> j) & 1) << 4;
      const int q1 = (x[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
      y[j] = static_cast<float>(q0 - 16) * d;
      y[j + QK5_0 / 2] = static_cast<float>(q1 - 16) * d;
    }
  }
}

void dequant_q5_1(const block_q5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK5_1) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < QK5_1 / 2; ++j) {
      const int q0 = (x[i].qs[j] & 0x0f) | ((qh >> j) & 1) << 4;
      const int q1 = (x[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
      y[j] = d * static_cast<float>(q0) + m;
      y[j + QK5_1 / 2] = d * static_cast<float>(q1) + m;
    }
  }
}

void dequant_q8_0(const block_q8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK8_0) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < QK8_0; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void dequant_q4_K(const block_q4_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d), dmin = fp16_to_fp32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    for (int g = 0; g < 4; ++g, q += 32) {  // group g: sub-blocks 2g (low nibbles), 2g+1 (high)
      uint8_t sc, m;
      get_scale_min_k4(2 * g, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      get_scale_min_k4(2 * g + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dequant_q5_K(const block_q5_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d), dmin = fp16_to_fp32(x[i].dmin);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    for (int g = 0; g < 4; ++g, ql += 32) {
      uint8_t sc, m;
      get_scale_min_k4(2 * g, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      get_scale_min_k4(2 * g + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      const int b1 = 2 * g, b2 = 2 * g + 1;  // bit of qh[l] holding the fifth bit
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((ql[l] & 0x0f) | ((qh[l] >> b1) & 1) << 4) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * static_cast<float>((ql[l] >> 4) | ((qh[l] >> b2) & 1) << 4) - m2;
    }
  }
}

// Q6_K: each half (128 elements) uses 64 bytes of ql and 32 of qh. Element l + 32k of the half
// (k = 0..3) takes its low 4 bits from ql[l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2)
// and its top 2 bits from bits 2k..2k+1 of qh[l]; its scale is scales[8 half + 2k + l / 16].
void dequant_q6_K(const block_q6_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      const int8_t* sc = x[i].scales + 8 * h;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int lo = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0x0f;
          const int q = (lo | ((qh[l] >> (2 * k)) & 3) << 4) - 32;
          const float ds = d * static_cast<float>(sc[2 * k + l / 16]);
          y[32 * k + l] = ds * static_cast<float>(q);
        }
      }
    }
  }
}

}  // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  const TypeTraits& tr = type_traits(type);
  if (n < 0 || n % tr.block_size != 0)
    throw InvalidArgument(std::string("dequantize ") + tr.name + ": " + std::to_string(n) +
                          " elements is not a multiple of the block size " +
                          std::to_string(tr.block_size));
  const int64_t nb = n / tr.block_size;
  switch (type) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
      return;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
      return;
    }
    case DType::Q4_0: return dequant_q4_0(static_cast<const block_q4_0*>(src), dst, nb);
    case DType::Q4_1: return dequant_q4_1(static_cast<const block_q4_1*>(src), dst, nb);
    case DType::Q5_0: return dequant_q5_0(static_cast<const block_q5_0*>(src), dst, nb);
    case DType::Q5_1: return dequant_q5_1(static_cast<const block_q5_1*>(src), dst, nb);
    case DType::Q8_0: return dequant_q8_0(static_cast<const block_q8_0*>(src), dst, nb);
    case DType::Q4_K: return dequant_q4_K(static_cast<const block_q4_K*>(src), dst, nb);
    case DType::Q5_K: return dequant_q5_K(static_cast<const block_q5_K*>(src), dst, nb);
    case DType::Q6_K: return dequant_q6_K(static_cast<const block_q6_K*>(src), dst, nb);
    default:
      throw InvalidArgument(std::string("dequantize: type ") + tr.name + " is not supported");
  }
}

}  // namespace minicpmv
