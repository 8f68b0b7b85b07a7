// Internal to kernels/: the table of functions one ISA path provides, and the activation layouts
// the quantized kernels consume. matmul.cpp owns the driver (activation quantization, threading,
// cache blocking); each ISA file fills a KernelSet.
//
// Activation layouts (one per row of X, 64-byte aligned rows, written by quantize_a8 / a8k):
//   A8  (partner of the 32-blocks: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0) = Q8_0 semantics, planar:
//         int8 qs[cols] | float d[cols/32] | float s[cols/32]
//       d = fp16(max|x| / 127) (the value a Q8_0 block would store), q = round_half_away(x * 127/max|x|),
//       s = d * sum(q) (Q8_1's s: folds the weights' offset -8/-16/-128 or their min m into one FMA).
//   A8K (partner of Q4_K Q5_K Q6_K) = Q8_K semantics, planar:
//         int8 qs[cols] | float d[cols/256] | int16 bsums[cols/16]
//       per 256: max = the element of largest |x| (with its sign), iscale = -127/max (as current
//       ggml: no code reaches -128, and results agree bit for bit with llama.cpp),
//       q = min(127, nearest_even(iscale * x)), d = 1/iscale, bsums = sums of each 16 q.
//   F32 (partner of F32 F16 BF16): X itself, no copy.
// Planar rather than interleaved blocks so a SIMD load of 64 activation bytes is 64 values.
// A path may reorder the codes within qs for its own unpacking (KernelSet::quantize_type; the
// avx512 path groups runs of 4 blocks, see quantize_a8p in x86/avx512.cpp); d, s, bsums stay.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace minicpmv {
namespace kernels {

enum class ActKind { F32, A8, A8K };

inline ActKind act_kind(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
      return ActKind::A8;
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
      return ActKind::A8K;
    default:
      return ActKind::F32;
  }
}

inline size_t align64(size_t n) { return (n + 63) & ~size_t(63); }

inline size_t act_row_bytes(ActKind k, int64_t cols) {
  switch (k) {
    case ActKind::A8: return align64(cols + 2 * 4 * (cols / 32));
    case ActKind::A8K: return align64(cols + 4 * (cols / 256) + 2 * (cols / 16));
    default: return cols * 4;
  }
}

// Views into one A8 / A8K activation row.
struct A8Row {
  const int8_t* qs = nullptr;
  const float* d = nullptr;
  const float* s = nullptr;
  A8Row() = default;
  A8Row(const uint8_t* p, int64_t cols)
      : qs(reinterpret_cast<const int8_t*>(p)),
        d(reinterpret_cast<const float*>(p + cols)),
        s(reinterpret_cast<const float*>(p + cols) + cols / 32) {}
};
struct A8KRow {
  const int8_t* qs = nullptr;
  const float* d = nullptr;
  const int16_t* bsums = nullptr;
  A8KRow() = default;
  A8KRow(const uint8_t* p, int64_t cols)
      : qs(reinterpret_cast<const int8_t*>(p)),
        d(reinterpret_cast<const float*>(p + cols)),
        bsums(reinterpret_cast<const int16_t*>(p + cols + 4 * (cols / 256))) {}
};

// Y[t * y_stride + r] = dot(W row r, X row t) for r < nrows, t < nx.
// W rows are w_stride bytes apart (raw blocks), X rows x_stride bytes apart in the partner layout.
using GemmFn = void (*)(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows,
                        const uint8_t* x, size_t x_stride, int64_t nx, float* y, size_t y_stride);
// One f32 row of `cols` -> one activation row in the partner layout.
using QuantizeFn = void (*)(const float* x, uint8_t* dst, int64_t cols);

constexpr int kNumTypes = 31;  // indexable by DType id (ids < 31)

struct KernelSet {
  const char* name;
  QuantizeFn quantize_a8 = nullptr;
  QuantizeFn quantize_a8k = nullptr;
  GemmFn gemm[kNumTypes] = {};
  // A path may keep the activations of some weight types in its own variant of the A8 layout
  // (same size, same values, codes reordered); nullptr = quantize_a8 / quantize_a8k by act_kind.
  QuantizeFn quantize_type[kNumTypes] = {};
  // Optional single-token (decode, n == 1) kernels: memory-bound, so a path may use a different
  // loop (and activation order, quantize_gemv) than its prefill tiles. nullptr = gemm[] and the
  // activation quantizer above.
  // quantize_gemv may also use a layout of its own (at most act_row_bytes(act_kind(type)) bytes,
  // the buffer matmul gives it; e.g. the avx512 Q4_0 one puts the codes in the weights' byte-stream
  // order and stores no s: x86/avx512_gemv.cpp). matmul_multi shares an activation buffer only
  // between weights with the same quantizer, so each gemv meets the layout of its own quantizer.
  GemmFn gemv[kNumTypes] = {};
  QuantizeFn quantize_gemv[kNumTypes] = {};
};

enum class Isa;
// The table of one path (matmul.cpp; the path must be available on this CPU).
const KernelSet& kernel_set_for(Isa isa);

// Filled by each ISA file (ref always; the others only on their architecture).
void fill_ref(KernelSet& ks);
#if defined(MINICPMV_X86)
void fill_avx2(KernelSet& ks);    // starts from ref, overrides what it vectorises
void fill_avx512(KernelSet& ks);  // starts from avx2
void fill_avx2_gemv(KernelSet& ks);     // x86/avx2_gemv.cpp: decode kernels, called by fill_avx2
void fill_avx512_gemv(KernelSet& ks);   // x86/avx512_gemv.cpp: decode kernels, called by fill_avx512
void fill_avx512_float(KernelSet& ks);  // x86/avx512_float.cpp: F32/F16/BF16 weights, called by fill_avx512
#endif
#if defined(MINICPMV_ARM)
void fill_neon(KernelSet& ks);
void fill_dotprod(KernelSet& ks);
void fill_i8mm(KernelSet& ks);
#endif

// The activation quantizer of a path (tests check it equals the scalar one byte for byte).
enum class Isa;
void quantize_activation_row(Isa isa, ActKind kind, const float* x, uint8_t* dst, int64_t cols);

// Scalar helpers shared by the ref kernels and by ISA kernels for their tails.
namespace ref {
void quantize_a8(const float* x, uint8_t* dst, int64_t cols);
void quantize_a8k(const float* x, uint8_t* dst, int64_t cols);
// Q4_K / Q5_K 6-bit scale and min of sub-block j (0..7).
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
}  // namespace ref

}  // namespace kernels
}  // namespace minicpmv
