// Internal to kernels/: the loop every SIMD gemm shares. Tokens go in groups of up to 4 (the
// inner tile width NR, a template parameter so the accumulators live in registers), weight rows
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
//                                      float out[][4]);   // out[r][t]
// A tile may declare `static constexpr int64_t kChunk` and a
//   template <int NR> static void tile_range(cols, c0, c1, w, x, out)   (columns [c0, c1))
// to have prefill (>= 4 tokens) split the columns into chunks of kChunk: then one tile's weights
// plus its tokens' activations fit in L1 even on long rows (ffn_down: 18944 columns), and the
// partial sums are added into Y chunk after chunk. Decode keeps whole rows (one weight stream).
template <class K, class = void>
struct chunk_of : std::integral_constant<int64_t, 0> {};
template <class K>
struct chunk_of<K, std::void_t<decltype(K::kChunk)>> : std::integral_constant<int64_t, K::kChunk> {};

template <class K, int NR>
void gemm_rows_range(int64_t cols, int64_t c0, int64_t c1, bool add, const uint8_t* w, size_t w_stride,
                     int64_t nrows, const uint8_t* const* x, float* y, size_t y_stride) {
  constexpr int MR = K::MR;
  for (int64_t r0 = 0; r0 < nrows; r0 += MR) {
    const int nr = static_cast<int>(std::min<int64_t>(MR, nrows - r0));
    const uint8_t* wr[MR];
    for (int i = 0; i < MR; ++i) wr[i] = w + (r0 + std::min(i, nr - 1)) * w_stride;
    float out[MR][4];
    K::template tile_range<NR>(cols, c0, c1, wr, x, out);
    for (int t = 0; t < NR; ++t)
      for (int i = 0; i < nr; ++i) {
        float& dst = y[t * y_stride + r0 + i];
        dst = add ? dst + out[i][t] : out[i][t];
      }
  }
}

template <class K, int NR>
void gemm_rows(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* const* x,
               float* y, size_t y_stride) {
  constexpr int MR = K::MR;
  for (int64_t r0 = 0; r0 < nrows; r0 += MR) {
    const int nr = static_cast<int>(std::min<int64_t>(MR, nrows - r0));
    const uint8_t* wr[MR];
    for (int i = 0; i < MR; ++i) wr[i] = w + (r0 + std::min(i, nr - 1)) * w_stride;
    float out[MR][4];
    K::template tile<NR>(cols, wr, x, out);
    for (int t = 0; t < NR; ++t)
      for (int i = 0; i < nr; ++i) y[t * y_stride + r0 + i] = out[i][t];
  }
}

template <class K>
void gemm_tiled(int64_t cols, const uint8_t* w, size_t w_stride, int64_t nrows, const uint8_t* x,
                size_t x_stride, int64_t nx, float* y, size_t y_stride) {
  if constexpr (chunk_of<K>::value > 0) {
    constexpr int64_t kc = chunk_of<K>::value;
    if (nx >= 4 && cols > kc) {
      for (int64_t c0 = 0; c0 < cols; c0 += kc) {
        const int64_t c1 = std::min(cols, c0 + kc);
        for (int64_t t0 = 0; t0 < nx; t0 += 4) {
          const int nt = static_cast<int>(std::min<int64_t>(4, nx - t0));
          const uint8_t* xr[4];
          for (int t = 0; t < 4; ++t) xr[t] = x + (t0 + std::min(t, nt - 1)) * x_stride;
          float* yt = y + t0 * y_stride;
          const bool add = c0 > 0;
          switch (nt) {
            case 1: gemm_rows_range<K, 1>(cols, c0, c1, add, w, w_stride, nrows, xr, yt, y_stride); break;
            case 2: gemm_rows_range<K, 2>(cols, c0, c1, add, w, w_stride, nrows, xr, yt, y_stride); break;
            case 3: gemm_rows_range<K, 3>(cols, c0, c1, add, w, w_stride, nrows, xr, yt, y_stride); break;
            default: gemm_rows_range<K, 4>(cols, c0, c1, add, w, w_stride, nrows, xr, yt, y_stride); break;
          }
        }
      }
      return;
    }
  }
  for (int64_t t0 = 0; t0 < nx; t0 += 4) {
    const int nt = static_cast<int>(std::min<int64_t>(4, nx - t0));
    const uint8_t* xr[4];
    for (int t = 0; t < 4; ++t) xr[t] = x + (t0 + std::min(t, nt - 1)) * x_stride;
    float* yt = y + t0 * y_stride;
    switch (nt) {
      case 1: gemm_rows<K, 1>(cols, w, w_stride, nrows, xr, yt, y_stride); break;
      case 2: gemm_rows<K, 2>(cols, w, w_stride, nrows, xr, yt, y_stride); break;
      case 3: gemm_rows<K, 3>(cols, w, w_stride, nrows, xr, yt, y_stride); break;
      default: gemm_rows<K, 4>(cols, w, w_stride, nrows, xr, yt, y_stride); break;
    }
  }
}

}  // namespace kernels
}  // namespace minicpmv
