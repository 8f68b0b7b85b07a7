// Internal to kernels/: the loop every SIMD gemm shares. Tokens go in groups of up to 4 (the
// inner tile width NR, a template parameter so the accumulators live in registers), weight rows
// in groups of K::MR. The token group's activations stay in L1 while the row block (sized by
// matmul.cpp to fit L2) is swept; a partial row group repeats its last row and drops the extra
// results, so every tile runs the full-width code.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace minicpmv {
namespace kernels {

// K: struct with `static constexpr int MR;` and
//   template <int NR> static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x,
//                                      float out[][4]);   // out[r][t]
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
