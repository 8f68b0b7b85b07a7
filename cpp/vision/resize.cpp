// Pillow-exact bicubic resize. Every floating-point step below is the same operation, in the same
// order, as Pillow's C code: a reordered or fused (FMA) step can move a coefficient by one ulp,
// which occasionally flips a fixed-point coefficient and then an output pixel. This file is
// therefore compiled with -ffp-contract=off (CMakeLists.txt), as x86-64 Pillow wheels effectively
// are (no FMA in the x86-64 baseline).
#include "vision/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "minicpmv/error.h"

namespace minicpmv::vision {
namespace {

// Fixed point of the coefficients: 32-bit accumulator = 8 bits of pixel + 2 bits of headroom
// (the cubic kernel has negative lobes, so partial sums exceed the pixel range) + 22 bits.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output index: the first input index and the number of taps, and ksize fixed-point
// coefficients (zero beyond the taps).
struct Coefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> k;
};

Coefficients precompute(int in_size, int out_size) {
  // Pillow takes the box (0, 0, in_w, in_h) as float and subtracts in float.
  const float in0 = 0.0f, in1 = float(in_size);
  const double scale = double(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;  // bicubic support 2, widened when shrinking
  Coefficients c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);  // truncation toward zero, as the C cast does
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = bicubic_kernel((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* k = &c.k[size_t(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      // Round half away from zero to fixed point (the product by 2^22 is exact).
      k[x] = v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t acc) {
  int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor, negatives clip to 0 below
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Resamples rows [y0, y0 + rows) of src horizontally into dst (width out_w, `rows` rows).
void resample_horizontal(const RgbImage& src, int y0, int rows, const Coefficients& c, RgbImage& dst) {
  const int out_w = dst.width;
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src.row(y0 + y);
    uint8_t* out = dst.row(y);
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &c.k[size_t(xx) * c.ksize];
      const uint8_t* p = in + size_t(c.first[xx]) * 3;
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0, n = c.count[xx]; x < n; ++x) {
        s0 += p[3 * x + 0] * k[x];
        s1 += p[3 * x + 1] * k[x];
        s2 += p[3 * x + 2] * k[x];
      }
      out[3 * xx + 0] = clip8(s0);
      out[3 * xx + 1] = clip8(s1);
      out[3 * xx + 2] = clip8(s2);
    }
  }
}

// Vertical pass; `first` indices of c are relative to src row 0 minus `offset`.
void resample_vertical(const RgbImage& src, int offset, const Coefficients& c, RgbImage& dst) {
  const size_t n = size_t(dst.width) * 3;
  std::vector<int32_t> acc(n);
  for (int yy = 0; yy < dst.height; ++yy) {
    const int32_t* k = &c.k[size_t(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), int32_t(1) << (kPrecisionBits - 1));
    // Integer sums are exact (no overflow: |sum| < 2^31 by the headroom bits), so accumulating
    // row by row gives Pillow's per-pixel sums in any order.
    for (int y = 0, cnt = c.count[yy]; y < cnt; ++y) {
      const uint8_t* in = src.row(c.first[yy] - offset + y);
      const int32_t ky = k[y];
      for (size_t i = 0; i < n; ++i) acc[i] += in[i] * ky;
    }
    uint8_t* out = dst.row(yy);
    for (size_t i = 0; i < n; ++i) out[i] = clip8(acc[i]);
  }
}

}  // namespace

bool vertical_pass_first(int in_w, int in_h, int out_w, int out_h, PassOrder order) {
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
  // pixels as the width does (less work in the second pass); older Pillow always ran the
  // horizontal pass first. The order matters because the intermediate image is clipped to uint8.
  // (Rule checked against Pillow 13.0.0 on boundary cases, see tests/test_preprocess.py.)
  if (order == PassOrder::horizontal_first) return false;
  return in_h > out_h && (long long)(in_h - out_h) > 2LL * (in_w - out_w);
}

RgbImage resize_bicubic(const RgbImage& img, int width, int height, PassOrder order) {
  check_image_size(img.width, img.height, "resize_bicubic input");
  check_image_size(width, height, "resize_bicubic output");
  if (img.data.size() != size_t(img.width) * img.height * 3)
    throw InvalidArgument("resize_bicubic: pixel buffer holds " + std::to_string(img.data.size()) +
                          " bytes, expected " + std::to_string(size_t(img.width) * img.height * 3));
  const bool need_horizontal = width != img.width;
  const bool need_vertical = height != img.height;
  if (!need_horizontal && !need_vertical) return img;

  const Coefficients vert = precompute(img.height, height);
  if (!need_horizontal) {
    RgbImage out(width, height);
    resample_vertical(img, 0, vert, out);
    return out;
  }
  const Coefficients horiz = precompute(img.width, width);
  if (!need_vertical) {
    RgbImage out(width, height);
    resample_horizontal(img, 0, height, horiz, out);
    return out;
  }
  if (vertical_pass_first(img.width, img.height, width, height, order)) {
    RgbImage tmp(img.width, height);
    resample_vertical(img, 0, vert, tmp);
    RgbImage out(width, height);
    resample_horizontal(tmp, 0, height, horiz, out);
    return out;
  }
  // Horizontal pass only over the source rows the vertical pass reads (as Pillow does; the
  // values are the same either way).
  const int y_first = vert.first[0];
  const int y_last = vert.first[height - 1] + vert.count[height - 1];
  RgbImage tmp(width, y_last - y_first);
  resample_horizontal(img, y_first, y_last - y_first, horiz, tmp);
  RgbImage out(width, height);
  resample_vertical(tmp, y_first, vert, out);
  return out;
}

}  // namespace minicpmv::vision
