// Scalar twin of the packed Q8_0 tile (kernels/packed_q8.h): per lane, per block, the exact int32
// sum of (w + 128) * a plus c, then one fused multiply-add by d_w * d_a, in block order.
#include <cmath>
#include <cstring>

#include "kernels/packed_q8.h"

namespace minicpmv::kernels::packed {

void gemm_tile_ref(const uint8_t* panel, int64_t nb, const uint8_t* group, int64_t nt, float* y, size_t ys,
                   int64_t nrows) {
  for (int64_t t = 0; t < nt; ++t) {
    float acc[kPanelRows] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* wb = panel + b * kBlockBytes;
      const uint8_t* ab = group + b * kActBlockBytes;
      const int8_t* q = reinterpret_cast<const int8_t*>(ab + 32 * t);
      float da, dw[kPanelRows];
      int32_t c;
      std::memcpy(&da, ab + 512 + 4 * t, 4);
      std::memcpy(&c, ab + 576 + 4 * t, 4);
      std::memcpy(dw, wb + 512, sizeof(dw));
      for (int L = 0; L < kPanelRows; ++L) {
        int32_t s = c;
        for (int k = 0; k < 8; ++k)
          for (int j = 0; j < 4; ++j) s += static_cast<int32_t>(wb[64 * k + 4 * L + j]) * q[4 * k + j];
        acc[L] = std::fma(static_cast<float>(s), dw[L] * da, acc[L]);
      }
    }
    for (int64_t L = 0; L < nrows; ++L) y[t * ys + L] = acc[L];
  }
}

}  // namespace minicpmv::kernels::packed
