// AVX-512 kernels for float weights x f32 activations (registered for F32 only: see
// fill_avx512_float), and the opt-in bf16 dot-product kernel (kernels/bf16_dot.h).
//
// Prefill (>= kPackMinTokens = 128 tokens): a register-blocked GEMM with the weight rows transposed into
// the zmm lanes. Per k-chunk of kKc columns the call's row block (<= 64 rows from matmul.cpp) is
// widened to f32 once (vcvtph2ps / shift: exact) and packed k-major, [k][16 * MV rows]; the micro
// tile then holds MV x NR = 2 x 12 accumulators (32 rows x 12 tokens), and each k step is MV vector
// loads, NR broadcast activations and MV * NR FMAs. So every weight element is converted once per
// call instead of once per 4-token tile, and no horizontal reductions remain: the 16 lanes are 16
// output rows, stored straight into Y (rows are contiguous there). Accumulation is f32 FMA along k
// in order, per lane: the result differs from the scalar twin (kernels/ref) by f32 reordering only.
// Fewer tokens (decode, short prompts): a 4-row x up-to-4-token dot tile (k in the lanes,
// horizontal sum at the end), which streams each weight row once without packing.
//
// bf16 dot (vdpbf16ps): same tile with the weights packed as (k, k+1) bf16 pairs per lane and the
// activations pre-rounded to bf16 by the caller; vdpbf16ps does 2 products per lane per
// instruction at the FMA's rate, so twice the f32 peak (measured here: 116 vs 233 GFLOP/s/core).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/bf16_dot.h"
#include "kernels/kernel_set.h"
#include "kernels/tiles.h"
#include "quant/types.h"

namespace minicpmv {
namespace kernels {
namespace {

// Tile shape: 2 x 16 rows x 12 tokens = 24 zmm accumulators (+ 2 weight vectors + 1 broadcast).
// 4 x 6 and 3 x 8 (same 24 accumulators) measured within noise (+-5%) of it on Zen 4; 2 x 16 rows
// divides the driver's 64-row blocks. (VF_* override them for tuning builds; note the templates
// need -O3, as the Release build uses: at -O2 GCC keeps the accumulator arrays in memory, 2.5x
// slower.)
#ifndef VF_KC
#define VF_KC 128
#define VF_NR 12
#define VF_MV 2
#endif
constexpr int kKc = VF_KC;  // k columns per packed chunk: 128 x 64 rows x 4 B = 32 KiB (L1)
constexpr int kNr = VF_NR;  // tokens per micro tile
constexpr int kMv = VF_MV;  // 16-row vectors per micro tile
constexpr int kPackMinTokens = 128;  // below: the dot tile. The packing (scalar transposing
                                     // stores) costs ~ as much as 16-32 tokens of FMAs: 3584 x 3584
                                     // f16 at 64 tokens 21 ms packed vs 16 ms dot tile; at 1024 even

// 64-byte aligned per-thread scratch for the packed chunk.
template <class T>
T* scratch(size_t n) {
  thread_local std::vector<uint8_t> buf;
  const size_t bytes = n * sizeof(T) + 64;
  if (buf.size() < bytes) buf.resize(bytes);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

// Exact widening of 16 weights to f32 (masked loads read nothing past the row).
struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m512 load_full(const uint8_t* p, int64_t j) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + j); }
  static __m512 load(const uint8_t* p, int64_t j, __mmask16 k) {
    return _mm512_maskz_loadu_ps(k, reinterpret_cast<const float*>(p) + j);
  }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m512 load_full(const uint8_t* p, int64_t j) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * j)));
  }
  static __m512 load(const uint8_t* p, int64_t j, __mmask16 k) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p + 2 * j));
  }
};
struct LoadBF16 {  // bf16 -> f32 is a 16-bit shift
  static constexpr int kBytes = 2;
  static __m512 load_full(const uint8_t* p, int64_t j) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * j));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load(const uint8_t* p, int64_t j, __mmask16 k) {
    const __m256i h = _mm256_maskz_loadu_epi16(k, p + 2 * j);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1); }

// ---------------------------------------------------------------- packed f32 GEMM

// Rows [r0, r0 + 16 * mv) (rows >= nrows read as zero), columns [k0, k0 + kc) -> dst[k][16 * mv].
// Each row is widened 16 columns at a time and its values written down the k-major column.
template <class L>
void pack_rows_f32(const uint8_t* w, size_t ws, int64_t nrows, int64_t r0, int mv, int64_t k0, int kc, float* dst) {
  const int width = 16 * mv;
  alignas(64) float tmp[kKc];
  for (int i = 0; i < width; ++i) {
    const int64_t r = r0 + i;
    if (r >= nrows) {
      for (int k = 0; k < kc; ++k) dst[k * width + i] = 0.f;
      continue;
    }
    const uint8_t* row = w + r * ws;
    for (int k = 0; k < kc; k += 16) _mm512_store_ps(tmp + k, L::load(row, k0 + k, lanes(kc - k)));
    for (int k = 0; k < kc; ++k) dst[k * width + i] = tmp[k];
  }
}

// acc[t][v] (+)= sum_k wp[k][16 v + lane] * x[t][k]; Y[t][16 v + lane] = acc, the last vector
// masked to `last` rows.
template <int MV, int NR>
void micro_f32(int kc, const float* wp, const float* const* xk, float* y, size_t ys, __mmask16 last, bool load_y) {
  __m512 acc[NR][MV];
  for (int t = 0; t < NR; ++t)
    for (int v = 0; v < MV; ++v) {
      const __mmask16 m = v == MV - 1 ? last : __mmask16(0xFFFF);
      acc[t][v] = load_y ? _mm512_maskz_loadu_ps(m, y + t * ys + 16 * v) : _mm512_setzero_ps();
    }
  for (int k = 0; k < kc; ++k) {
    __m512 wv[MV];
    for (int v = 0; v < MV; ++v) wv[v] = _mm512_load_ps(wp + (k * MV + v) * 16);
    for (int t = 0; t < NR; ++t) {
      const __m512 xb = _mm512_set1_ps(xk[t][k]);
      for (int v = 0; v < MV; ++v) acc[t][v] = _mm512_fmadd_ps(wv[v], xb, acc[t][v]);
    }
  }
  for (int t = 0; t < NR; ++t)
    for (int v = 0; v < MV; ++v) {
      const __mmask16 m = v == MV - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(y + t * ys + 16 * v, m, acc[t][v]);
    }
}

template <int MV, int NR>
void micro_f32_nt(int nt, int kc, const float* wp, const float* const* xk, float* y, size_t ys, __mmask16 last,
                  bool load_y) {
  if constexpr (NR > 1) {
    if (nt < NR) return micro_f32_nt<MV, NR - 1>(nt, kc, wp, xk, y, ys, last, load_y);
  }
  micro_f32<MV, NR>(kc, wp, xk, y, ys, last, load_y);
}

void micro_f32_any(int mv, int nt, int kc, const float* wp, const float* const* xk, float* y, size_t ys,
                   __mmask16 last, bool load_y) {
  switch (mv) {
    case 1: return micro_f32_nt<1, kNr>(nt, kc, wp, xk, y, ys, last, load_y);
    case 2: return micro_f32_nt<2, kNr>(nt, kc, wp, xk, y, ys, last, load_y);
    case 3: if constexpr (kMv >= 3) return micro_f32_nt<3, kNr>(nt, kc, wp, xk, y, ys, last, load_y); break;
    case 4: if constexpr (kMv >= 4) return micro_f32_nt<4, kNr>(nt, kc, wp, xk, y, ys, last, load_y); break;
  }
}

template <class L>
void gemm_packed(int64_t cols, const uint8_t* w, size_t ws, int64_t nrows, const uint8_t* x, size_t xs, int64_t nx,
                 float* y, size_t ys) {
  const int64_t tile_rows = 16 * kMv;
  const int64_t ntiles = (nrows + tile_rows - 1) / tile_rows;
  float* packed = scratch<float>(static_cast<size_t>(ntiles * tile_rows * kKc));
  for (int64_t k0 = 0; k0 < cols; k0 += kKc) {
    const int kc = static_cast<int>(std::min<int64_t>(kKc, cols - k0));
    for (int64_t ti = 0; ti < ntiles; ++ti) {
      const int64_t r0 = ti * tile_rows;
      const int mv = static_cast<int>(std::min<int64_t>(kMv, (nrows - r0 + 15) / 16));
      pack_rows_f32<L>(w, ws, nrows, r0, mv, k0, kc, packed + ti * tile_rows * kKc);
    }
    for (int64_t t0 = 0; t0 < nx; t0 += kNr) {
      const int nt = static_cast<int>(std::min<int64_t>(kNr, nx - t0));
      const float* xk[kNr];
      for (int t = 0; t < kNr; ++t)
        xk[t] = reinterpret_cast<const float*>(x + (t0 + std::min(t, nt - 1)) * xs) + k0;
      for (int64_t ti = 0; ti < ntiles; ++ti) {
        const int64_t r0 = ti * tile_rows;
        const int64_t rows_here = std::min(tile_rows, nrows - r0);
        const int mv = static_cast<int>((rows_here + 15) / 16);
        const __mmask16 last = lanes(rows_here - 16 * (mv - 1));
        micro_f32_any(mv, nt, kc, packed + ti * tile_rows * kKc, xk, y + t0 * ys + r0, ys, last, k0 > 0);
      }
    }
  }
}

// ---------------------------------------------------------------- dot tile (few tokens)

// 4 rows x NR tokens, k in the lanes; reduced horizontally once per output.
template <class L>
struct DotTile {
  static constexpr int MR = 4;
  template <int NR>
  static inline __attribute__((always_inline)) void step(const uint8_t* const* w, const uint8_t* const* x, int64_t j,
                                                         __mmask16 m, __m512 (&acc)[MR][NR]) {
    __m512 wv[MR];
    for (int r = 0; r < MR; ++r) {
      wv[r] = m == 0xFFFF ? L::load_full(w[r], j) : L::load(w[r], j, m);
      // decode streams each row once from DRAM: fetch ahead (as the tile this replaced did)
      _mm_prefetch(reinterpret_cast<const char*>(w[r]) + L::kBytes * j + 2048, _MM_HINT_T0);
    }
    for (int t = 0; t < NR; ++t) {
      const float* xf = reinterpret_cast<const float*>(x[t]) + j;
      const __m512 xv = m == 0xFFFF ? _mm512_loadu_ps(xf) : _mm512_maskz_loadu_ps(m, xf);
      for (int r = 0; r < MR; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    __m512 acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) acc[r][t] = _mm512_setzero_ps();
    // whole vectors unmasked (masked loads in the main loop cost 2x at 4 tokens), then the tail
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) step<NR>(w, x, j, __mmask16(0xFFFF), acc);
    if (j < cols) step<NR>(w, x, j, lanes(cols - j), acc);
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
  }
};

template <class L>
void gemm_float(int64_t cols, const uint8_t* w, size_t ws, int64_t nrows, const uint8_t* x, size_t xs, int64_t nx,
                float* y, size_t ys) {
  if (nx >= kPackMinTokens) return gemm_packed<L>(cols, w, ws, nrows, x, xs, nx, y, ys);
  gemm_tiled<DotTile<L>>(cols, w, ws, nrows, x, xs, nx, y, ys);
}

// ---------------------------------------------------------------- bf16 dot products

// Rows [r0, r0 + 16 mv), column pairs [p0, p0 + np) of BF16 weights -> dst[p][16 mv] as 32-bit
// (w[2p], w[2p+1]) pairs (the low half is the even column, as vdpbf16ps pairs them). An odd last
// column is paired with a zero.
void pack_rows_bf16(const uint8_t* w, size_t ws, int64_t cols, int64_t nrows, int64_t r0, int mv, int64_t p0, int np,
                    uint32_t* dst) {
  const int width = 16 * mv;
  for (int i = 0; i < width; ++i) {
    const int64_t r = r0 + i;
    if (r >= nrows) {
      for (int p = 0; p < np; ++p) dst[p * width + i] = 0;
      continue;
    }
    const uint16_t* row = reinterpret_cast<const uint16_t*>(w + r * ws);
    int p = 0;
    for (; p < np && 2 * (p0 + p) + 1 < cols; ++p) {
      uint32_t v;
      std::memcpy(&v, row + 2 * (p0 + p), 4);
      dst[p * width + i] = v;
    }
    for (; p < np; ++p) dst[p * width + i] = 2 * (p0 + p) < cols ? row[2 * (p0 + p)] : 0u;
  }
}

template <int MV, int NR>
void micro_bf16(int np, const uint32_t* wp, const uint32_t* const* xk, float* y, size_t ys, __mmask16 last,
                bool load_y) {
  __m512 acc[NR][MV];
  for (int t = 0; t < NR; ++t)
    for (int v = 0; v < MV; ++v) {
      const __mmask16 m = v == MV - 1 ? last : __mmask16(0xFFFF);
      acc[t][v] = load_y ? _mm512_maskz_loadu_ps(m, y + t * ys + 16 * v) : _mm512_setzero_ps();
    }
  for (int p = 0; p < np; ++p) {
    __m512bh wv[MV];
    for (int v = 0; v < MV; ++v) wv[v] = (__m512bh)_mm512_load_si512(wp + (p * MV + v) * 16);
    for (int t = 0; t < NR; ++t) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xk[t][p]));
      for (int v = 0; v < MV; ++v) acc[t][v] = _mm512_dpbf16_ps(acc[t][v], wv[v], xb);
    }
  }
  for (int t = 0; t < NR; ++t)
    for (int v = 0; v < MV; ++v) {
      const __mmask16 m = v == MV - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(y + t * ys + 16 * v, m, acc[t][v]);
    }
}

template <int MV, int NR>
void micro_bf16_nt(int nt, int np, const uint32_t* wp, const uint32_t* const* xk, float* y, size_t ys,
                   __mmask16 last, bool load_y) {
  if constexpr (NR > 1) {
    if (nt < NR) return micro_bf16_nt<MV, NR - 1>(nt, np, wp, xk, y, ys, last, load_y);
  }
  micro_bf16<MV, NR>(np, wp, xk, y, ys, last, load_y);
}

void micro_bf16_any(int mv, int nt, int np, const uint32_t* wp, const uint32_t* const* xk, float* y, size_t ys,
                    __mmask16 last, bool load_y) {
  switch (mv) {
    case 1: return micro_bf16_nt<1, kNr>(nt, np, wp, xk, y, ys, last, load_y);
    case 2: return micro_bf16_nt<2, kNr>(nt, np, wp, xk, y, ys, last, load_y);
    case 3: if constexpr (kMv >= 3) return micro_bf16_nt<3, kNr>(nt, np, wp, xk, y, ys, last, load_y); break;
    case 4: if constexpr (kMv >= 4) return micro_bf16_nt<4, kNr>(nt, np, wp, xk, y, ys, last, load_y); break;
  }
}

}  // namespace

void gemm_bf16_dot_avx512(int64_t cols, const uint8_t* w, size_t ws, int64_t nrows, const uint16_t* xb, size_t xbs,
                          int64_t nx, float* y, size_t ys) {
  const int64_t tile_rows = 16 * kMv;
  const int64_t ntiles = (nrows + tile_rows - 1) / tile_rows;
  const int64_t npairs = (cols + 1) / 2;
  constexpr int kPc = kKc / 2;  // pairs per chunk: the same 32 KiB as the f32 chunk
  uint32_t* packed = scratch<uint32_t>(static_cast<size_t>(ntiles * tile_rows * kPc));
  for (int64_t p0 = 0; p0 < npairs; p0 += kPc) {
    const int np = static_cast<int>(std::min<int64_t>(kPc, npairs - p0));
    for (int64_t ti = 0; ti < ntiles; ++ti) {
      const int64_t r0 = ti * tile_rows;
      const int mv = static_cast<int>(std::min<int64_t>(kMv, (nrows - r0 + 15) / 16));
      pack_rows_bf16(w, ws, cols, nrows, r0, mv, p0, np, packed + ti * tile_rows * kPc);
    }
    for (int64_t t0 = 0; t0 < nx; t0 += kNr) {
      const int nt = static_cast<int>(std::min<int64_t>(kNr, nx - t0));
      const uint32_t* xk[kNr];
      for (int t = 0; t < kNr; ++t)
        xk[t] = reinterpret_cast<const uint32_t*>(xb + (t0 + std::min(t, nt - 1)) * xbs) + p0;
      for (int64_t ti = 0; ti < ntiles; ++ti) {
        const int64_t r0 = ti * tile_rows;
        const int64_t rows_here = std::min(tile_rows, nrows - r0);
        const int mv = static_cast<int>((rows_here + 15) / 16);
        const __mmask16 last = lanes(rows_here - 16 * (mv - 1));
        micro_bf16_any(mv, nt, np, packed + ti * tile_rows * kPc, xk, y + t0 * ys + r0, ys, last, p0 > 0);
      }
    }
  }
}

void round_bf16_avx512(const float* x, uint16_t* dst, int64_t n) {
  int64_t j = 0;
  for (; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + j));
    _mm256_mask_storeu_epi16(dst + j, m, (__m256i)h);
  }
}

// F32 only. F16 / BF16 keep avx512.cpp's 4-row x 4-token tile: it already runs at ~85% of the
// f32 FMA peak on the vision shapes (99 / 94 GOP/s for 1024 x 1152 -> 3456 / 4304 -> 1152, peak
// 116 GFLOP/s per core), and this packed GEMM measured the same or ~5% slower for them (88-93):
// converting each weight vector once per 4 tokens costs little next to the FMAs. For F32 weights
// (no conversion to save, 16 loads per 16 FMAs in the dot tile) it gains 82 -> 90 and 72 -> 88.
// (gemm_float<LoadF16 / LoadBF16> would register them; worth retrying once the packing's scalar
// transposing stores are replaced by in-register 16x16 transposes.)
void fill_avx512_float(KernelSet& ks) {
  ks.gemm[static_cast<int>(DType::F32)] = gemm_float<LoadF32>;
}

}  // namespace kernels
}  // namespace minicpmv
