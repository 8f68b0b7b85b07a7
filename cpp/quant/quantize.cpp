// Quantization to the types the converter writes, plus the Q8_0 activation quantizer.
//
// F16 / BF16 / Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 are byte-identical with gguf-py's
// gguf.quants.quantize (which mirrors ggml's quantize_row_*_ref): same f32 operations in the same
// order, no fused multiply-add (switched off below: GCC fuses a * b + c by default on aarch64),
// and float -> integer conversions that reproduce numpy's on x86 (see to_u8 / to_i8) so that even
// degenerate blocks (scales that overflow or underflow) give the same bytes. K-quants: quantize_k.cpp.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "minicpmv/error.h"
#include "quant/blocks.h"
#include "quant/f16.h"
#include "quant/quant.h"
#include "quant/quantize_k.h"
#include "runtime/threadpool.h"

namespace minicpmv {
namespace {

// numpy's float32 -> int8 / uint8 cast truncates through int32; NaN and values outside int32 give
// INT32_MIN (x86 cvttss2si), whose low byte is 0. C++'s direct cast would be undefined there.
inline uint8_t to_u8(float v) {
  if (!(v > -2147483648.f && v < 2147483648.f)) return 0;
  return static_cast<uint8_t>(static_cast<uint32_t>(static_cast<int32_t>(v)));
}
inline int8_t to_i8(float v) { return static_cast<int8_t>(to_u8(v)); }

inline float inverse_or_zero(float d) { return d != 0 ? 1.0f / d : 0.0f; }

// Index of the first element of largest magnitude (numpy argmax of abs / ggml's strict '<').
inline int argmax_abs(const float* x, int n) {
  int im = 0;
  float amax = std::fabs(x[0]);
  for (int j = 1; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      im = j;
    }
  return im;
}

inline void min_max(const float* x, int n, float* mn, float* mx) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < n; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

// Q4_0: d = max / -8 with max the signed value of largest magnitude, so that value maps to
// q = 0 exactly (-8 d) and the rest to trunc(x / d + 8.5) (round half up), clipped to 15.
void quant_q4_0(const float* x, block_q4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK4_0) {
    const float d = x[argmax_abs(x, QK4_0)] / -8;
    const float id = inverse_or_zero(d);
    y[i].d = fp32_to_fp16(d);
    uint8_t q[QK4_0];
    for (int j = 0; j < QK4_0; ++j) {
      const uint8_t v = to_u8(std::trunc(x[j] * id + 8.5f));
      q[j] = v < 15 ? v : 15;
    }
    for (int j = 0; j < QK4_0 / 2; ++j) y[i].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

// Q4_1: affine over [min, max]: d = (max - min) / 15, m = min, q = trunc((x - min) / d + 0.5).
void quant_q4_1(const float* x, block_q4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK4_1) {
    float mn, mx;
    min_max(x, QK4_1, &mn, &mx);
    const float d = (mx - mn) / 15;
    const float id = inverse_or_zero(d);
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(mn);
    uint8_t q[QK4_1];
    for (int j = 0; j < QK4_1; ++j) {
      const uint8_t v = to_u8(std::trunc((x[j] - mn) * id + 0.5f));
      q[j] = v < 15 ? v : 15;
    }
    for (int j = 0; j < QK4_1 / 2; ++j) y[i].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

// Packs 32 five-bit values: low nibbles as Q4_0, fifth bits into the little-endian u32 qh.
inline void pack_q5(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>(q[j] >> 4) << j;
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(h >> (8 * k));
}

void quant_q5_0(const float* x, block_q5_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK5_0) {
    const float d = x[argmax_abs(x, QK5_0)] / -16;
    const float id = inverse_or_zero(d);
    y[i].d = fp32_to_fp16(d);
    uint8_t q[QK5_0];
    for (int j = 0; j < QK5_0; ++j) {
      const uint8_t v = to_u8(std::trunc(x[j] * id + 16.5f));
      q[j] = v < 31 ? v : 31;
    }
    pack_q5(q, y[i].qs, y[i].qh);
  }
}

void quant_q5_1(const float* x, block_q5_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK5_1) {
    float mn, mx;
    min_max(x, QK5_1, &mn, &mx);
    const float d = (mx - mn) / 31;
    const float id = inverse_or_zero(d);
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(mn);
    uint8_t q[QK5_1];
    for (int j = 0; j < QK5_1; ++j) {
      const uint8_t v = to_u8(std::trunc((x[j] - mn) * id + 0.5f));
      q[j] = v < 31 ? v : 31;
    }
    pack_q5(q, y[i].qs, y[i].qh);
  }
}

// Quantized types refuse inf / NaN: they would silently poison a whole block's scale.
void check_finite(DType type, const float* x, int64_t n, int64_t first, int64_t cols) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      const int64_t at = first + i;
      throw InvalidArgument(std::string("quantize to ") + type_name(type) + ": non-finite value " +
                            std::to_string(x[i]) + " at row " + std::to_string(at / cols) +
                            ", column " + std::to_string(at % cols));
    }
  }
}

// n elements (whole blocks) starting `first` elements into a matrix of `cols` columns.
void quantize_span(DType type, const float* x, void* dst, int64_t n, int64_t first, int64_t cols) {
  const TypeTraits& tr = type_traits(type);
  const int64_t nb = n / tr.block_size;
  switch (type) {
    case DType::F32:
      std::memcpy(dst, x, static_cast<size_t>(n) * 4);
      return;
    case DType::F16: {
      uint16_t* y = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
      return;
    }
    case DType::BF16: {
      uint16_t* y = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
      return;
    }
    default:
      break;
  }
  check_finite(type, x, n, first, cols);
  switch (type) {
    case DType::Q4_0: return quant_q4_0(x, static_cast<block_q4_0*>(dst), nb);
    case DType::Q4_1: return quant_q4_1(x, static_cast<block_q4_1*>(dst), nb);
    case DType::Q5_0: return quant_q5_0(x, static_cast<block_q5_0*>(dst), nb);
    case DType::Q5_1: return quant_q5_1(x, static_cast<block_q5_1*>(dst), nb);
    case DType::Q8_0: return quantize_row_q8_0(x, static_cast<block_q8_0*>(dst), n);
    case DType::Q4_K: return detail::quantize_blocks_q4_K(x, static_cast<block_q4_K*>(dst), nb);
    case DType::Q5_K: return detail::quantize_blocks_q5_K(x, static_cast<block_q5_K*>(dst), nb);
    case DType::Q6_K: return detail::quantize_blocks_q6_K(x, static_cast<block_q6_K*>(dst), nb);
    default:
      throw InvalidArgument(std::string("quantize: cannot write type ") + tr.name);
  }
}

void check_quantize_args(DType type, int64_t rows, int64_t cols) {
  if (!can_quantize(type))
    throw InvalidArgument(std::string("quantize: cannot write type ") + type_traits(type).name);
  const int64_t bs = type_traits(type).block_size;
  if (rows < 0 || cols < 0 || cols % bs != 0)
    throw InvalidArgument(std::string("quantize to ") + type_name(type) + ": shape " +
                          std::to_string(rows) + " x " + std::to_string(cols) +
                          " (columns must be a multiple of the block size " + std::to_string(bs) + ")");
}

}  // namespace

// Q8_0: d = max|x| / 127, q = round half away from zero (roundf) of x / d; d == 0 gives q = 0.
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n) {
  const int64_t nb = n / QK8_0;
  for (int64_t i = 0; i < nb; ++i, x += QK8_0) {
    float amax = 0;
    for (int j = 0; j < QK8_0; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = inverse_or_zero(d);
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = to_i8(std::round(x[j] * id));
  }
}

bool can_quantize(DType type) {
  switch (type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K:
    case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

void quantize_row(DType type, const float* src, void* dst, int64_t n) {
  check_quantize_args(type, 1, n);
  quantize_span(type, src, dst, n, 0, n > 0 ? n : 1);
}

void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols,
                   ThreadPool* pool) {
  check_quantize_args(type, rows, cols);
  if (rows == 0 || cols == 0) return;
  // Blocks never straddle rows (cols is a multiple of the block size) and every format here
  // quantizes each block on its own, so the matrix is one run of blocks, split in chunks of about
  // 16k elements: small enough to balance 2-8 threads on a single row, large enough that the
  // hand-out cost vanishes.
  const TypeTraits& tr = type_traits(type);
  const int64_t total_blocks = rows * (cols / tr.block_size);
  const int64_t grain = std::max<int64_t>(1, 16384 / tr.block_size);
  ThreadPool& tp = pool ? *pool : default_pool();
  char* out = static_cast<char*>(dst);
  tp.parallel_for(total_blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t first = b0 * tr.block_size;
    quantize_span(type, src + first, out + b0 * tr.type_size,
                  (b1 - b0) * tr.block_size, first, cols);
  });
}

}  // namespace minicpmv
