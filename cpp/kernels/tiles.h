// Internal to kernels/: the loop every SIMD gemm shares. Tokens go in groups of up to K::kTokens
// (default 4, at most kTileTokens; the inner tile width NR is a template parameter so the
// accumulators live in registers), weight rows
// in groups of K::MR. The token group's activations stay in L1 while the row block (sized by
// matmul.cpp to fit L2) is swept; a partial row group repeats its last row and drops the extra
// results, so every tile runs the full-width code.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace minicpmv {
namespace kernels {

// K: struct with `static constexpr int MR;` and
//   template <int NR> static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x,
//                                      float out[][kTileTokens]);   // out[r][t]
//   optionally `static constexpr int kTokens;` (tokens per tile group, <= kTileTokens).
constexpr int kTileTokens = 16;

template <class K, class = void>
struct tokens_of : std::integral_constant<int, 4> {};
template <class K>
struct tokens_of<K, std::void_t<decltype(K::kTokens)>> : std::integral_constant<int, K::kTokens> {};
template <class K, int NR>
void gemm_rows(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* const* x,
               float* y, size_t y_stride) {
  constexpr int MR = K::MR;
  for (int64_t r0 = 0; r0 < nrows; r0 += MR) {
    const int nr = static_cast<int>(std::min<int64_t>(MR, nrows - r0));
    const uint8_t* wr[MR];
    for (int i = 0; i < MR; ++i) wr[i] = w + (r0 + std::min(i, nr - 1)) * w_stride;
    float out[MR][kTileTokens];
    K::template tile<NR>(cols, wr, x, out);
    for (int t = 0; t < NR; ++t)
      for (int i = 0; i < nr; ++i) y[t * y_stride + r0 + i] = out[i][t];
  }
}

// gemm_rows<K, nt> for a run-time nt in 1..N
template <class K, int N>
void gemm_rows_n(int nt, int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* const* x,
                 float* y, size_t y_stride) {
  if constexpr (N > 1) {
    if (nt < N) return gemm_rows_n<K, N - 1>(nt, cols, w, w_stride, nrows, x, y, y_stride);
  }
  gemm_rows<K, N>(cols, w, w_stride, nrows, x, y, y_stride);
}

template <class K>
void gemm_tiled(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x,
                size_t x_stride, int64_t nx, float* y, size_t y_stride) {
  constexpr int G = tokens_of<K>::value;
  static_assert(G >= 1 && G <= kTileTokens, "tile token group");
  for (int64_t t0 = 0; t0 < nx; t0 += G) {
    const int nt = static_cast<int>(std::min<int64_t>(G, nx - t0));
    const uint8_t* xr[kTileTokens];
    for (int t = 0; t < kTileTokens; ++t) xr[t] = x + (t0 + std::min(t, nt - 1)) * x_stride;
    gemm_rows_n<K, G>(nt, cols, w, w_stride, nrows, xr, y + t0 * y_stride, y_stride);
  }
}

}  // namespace kernels
}  // namespace minicpmv
