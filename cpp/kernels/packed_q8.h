// Q8_0 weights repacked for the int8 GEMM of the vision tower (kernels::Layout::Q8Rows16).
//
// The tower's matmuls are compute-bound (1024 tokens per slice), and on the stored Q8_0 rows the
// AVX-512 tile spends more instructions transposing 16 rows per block than multiplying (~0.47 of
// the vpdpbusd peak). Repacked once at load, a block of 16 rows is 8 ready vpdpbusd operands:
//
//   panel p = rows [16p, 16p + 16), for each 32-block b of the columns, 576 bytes:
//     8 x 64 bytes  vector k, lane L = codes 4k .. 4k+3 of row 16p + L in block b, plus 128 (u8)
//     16 x f32      the rows' block scales d (the Q8_0 f16 scale, widened exactly)
//   rows past the matrix's are zero codes with d = 0.
//
// Activations: A8 semantics (kernel_set.h: Q8_0 blocks, d rounded to f16), interleaved by groups of
// 16 tokens so a tile reads them at fixed offsets: group g, block b, 640 bytes:
//     16 x 32 bytes  the tokens' codes q in block b
//     16 x f32       their d
//     16 x i32       their c = -128 * sum(q), so the unsigned weight codes need no float correction:
//   sum_j (w_j + 128) a_j + c = sum_j w_j a_j        (int32, exact)
//   y[t][r] = sum_b fma(float(isum_b), d_w[r][b] * d_a[t][b])      in block order
// The scalar twin (gemm_tile_ref) computes exactly that per lane, so the SIMD kernel matches it
// bit for bit; against the stored-row Q8_0 kernels the results differ only in float rounding
// (those fold the +128 back in f32).
//
// Same numbers as the stored Q8_0 weights, 1.125 bytes per weight instead of 1.0625.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/matmul.h"

namespace minicpmv {
class ThreadPool;

namespace kernels::packed {

constexpr int64_t kPanelRows = 16;
constexpr size_t kBlockBytes = 8 * 64 + 16 * 4;  // 576 per panel and 32-block

inline int64_t panels(int64_t rows) { return (rows + kPanelRows - 1) / kPanelRows; }
inline size_t panel_bytes(int64_t cols) { return static_cast<size_t>(cols / 32) * kBlockBytes; }
inline size_t packed_bytes(int64_t rows, int64_t cols) { return static_cast<size_t>(panels(rows)) * panel_bytes(cols); }

// The packed layout of a row-major Q8_0 matrix (row r at q8 + r * row_bytes). A Weight of layout
// Q8Rows16 that owns the packed bytes. InvalidArgument unless w is Q8_0 in the Rows layout.
Weight pack_q8_0(const Weight& w, ThreadPool& pool);

constexpr int64_t kGroupTokens = 16;
constexpr size_t kActBlockBytes = 16 * 32 + 16 * 4 + 16 * 4;  // 640 per token group and 32-block
inline size_t act_group_bytes(int64_t cols) { return static_cast<size_t>(cols / 32) * kActBlockBytes; }

// The products of W (layout Q8Rows16) on path isa: Avx512 runs the VNNI tile, every other path the
// scalar twin. Called by kernels::matmul / matmul_multi (weights of this layout; argument checks
// done there).
void matmul(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool, Isa isa);
void matmul_multi(const MatmulOut* outs, int count, const float* X, int64_t n, ThreadPool& pool, Isa isa);

// n rows of X (cols floats each) -> ceil(n / 16) activation groups (the last one zero-padded) at
// A, act_group_bytes(cols) apart, quantized by path isa's A8 quantizer (bit-identical on all).
void quantize_groups(const float* X, int64_t n, int64_t cols, uint8_t* A, ThreadPool& pool, Isa isa);

// One tile: a token group (16 tokens, the first nt stored) against one panel of nb blocks:
// y[t * ys + r] for t < nt, r < nrows (<= 16). The scalar twin and the AVX-512 VNNI one.
using TileFn = void (*)(const uint8_t* panel, int64_t nb, const uint8_t* group, int64_t nt, float* y, size_t ys,
                        int64_t nrows);
void gemm_tile_ref(const uint8_t* panel, int64_t nb, const uint8_t* group, int64_t nt, float* y, size_t ys,
                   int64_t nrows);
#if defined(MINICPMV_X86)
void gemm_tile_avx512(const uint8_t* panel, int64_t nb, const uint8_t* group, int64_t nt, float* y, size_t ys,
                      int64_t nrows);
#endif

}  // namespace kernels::packed
}  // namespace minicpmv
