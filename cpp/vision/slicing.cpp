// Slice planning reproduces the HF Python size math step for step: true division in double,
// round() half to even, int() truncation, math.log / math.sqrt / math.ceil. Compiled with
// -ffp-contract=off (CMakeLists.txt) so no multiply-add is fused into a differently rounded FMA.
#include "vision/slicing.h"

#include <cmath>
#include <limits>
#include <string>

#include "minicpmv/error.h"
#include "vision/resize.h"

namespace minicpmv::vision {

long long py_round(double x) {
  const double f = std::floor(x);
  const double d = x - f;  // exact for the magnitudes used here
  if (d > 0.5) return (long long)f + 1;
  if (d < 0.5) return (long long)f;
  return std::fmod(f, 2.0) == 0.0 ? (long long)f : (long long)f + 1;
}

long long ensure_divide(double length, int p) {
  const long long q = py_round(length / p) * p;
  return q > p ? q : p;
}

namespace {

struct SizeLL {
  long long width, height;
};

// find_best_resize: aspect kept, area about S^2 (only shrinks unless allow_upscale), sides
// rounded to multiples of P. w, h are integral (ints, or the exact float cell sizes).
SizeLL find_best_resize(double w, double h, int S, int P, bool allow_upscale) {
  if (w * h > double(S) * double(S) || allow_upscale) {
    const double r = w / h;
    h = std::trunc(double(S) / std::sqrt(r));
    w = std::trunc(h * r);
  }
  return {ensure_divide(w, P), ensure_divide(h, P)};
}

SizeLL get_refine_size(long long W, long long H, int gx, int gy, int S, int P) {
  const long long rw = ensure_divide(double(W), gx);
  const long long rh = ensure_divide(double(H), gy);
  const SizeLL best = find_best_resize(double(rw) / gx, double(rh) / gy, S, P, /*allow_upscale=*/true);
  return {best.width * gx, best.height * gy};
}

Size to_size(SizeLL s, const char* what) {
  constexpr long long kMax = std::numeric_limits<int>::max();
  if (s.width > kMax || s.height > kMax)
    throw InvalidArgument(std::string("plan_slices: ") + what + " size overflows int");
  return {int(s.width), int(s.height)};
}

}  // namespace

SliceLayout plan_slices(int width, int height, const SliceOptions& opt) {
  check_image_size(width, height, "plan_slices");
  if (opt.max_slice_nums < 1)
    throw InvalidArgument("plan_slices: max_slice_nums must be >= 1, got " + std::to_string(opt.max_slice_nums));
  if (opt.scale_resolution < 1 || opt.scale_resolution > (1 << 16))
    throw InvalidArgument("plan_slices: scale_resolution must be in 1..65536, got " +
                          std::to_string(opt.scale_resolution));
  if (opt.patch_size < 1 || opt.patch_size > opt.scale_resolution)
    throw InvalidArgument("plan_slices: patch_size must be in 1..scale_resolution, got " +
                          std::to_string(opt.patch_size));
  const int S = opt.scale_resolution, P = opt.patch_size, M = opt.max_slice_nums;
  const long long W = width, H = height;

  // get_sliced_grid
  const double log_ratio = std::log(double(W) / double(H));
  const double ratio = double(W * H) / double((long long)S * S);
  const double ceil_ratio = std::ceil(ratio);
  const long long multiple = ceil_ratio < M ? (long long)ceil_ratio : M;

  SliceLayout out;
  if (multiple <= 1 || opt.never_split) {
    // Small image: no grid; the overview is upscaled to about S^2 pixels.
    out.source = to_size(find_best_resize(double(W), double(H), S, P, /*allow_upscale=*/true), "source");
    return out;
  }
  int best_cols = 1, best_rows = 1;
  double min_error = std::numeric_limits<double>::infinity();
  for (long long n : {multiple - 1, multiple, multiple + 1}) {
    if (n == 1 || n > M) continue;
    for (long long m = 1; m <= n; ++m) {
      if (n % m) continue;
      const double error = std::fabs(log_ratio - std::log(double(m) / double(n / m)));
      if (error < min_error) {  // strictly smaller: the first grid wins ties
        best_cols = int(m);
        best_rows = int(n / m);
        min_error = error;
      }
    }
  }
  out.sliced = true;
  out.grid_cols = best_cols;
  out.grid_rows = best_rows;
  out.source = to_size(find_best_resize(double(W), double(H), S, P, /*allow_upscale=*/false), "source");
  out.refine = to_size(get_refine_size(W, H, best_cols, best_rows, S, P), "refine");
  out.cell = {out.refine.width / best_cols, out.refine.height / best_rows};
  return out;
}

SliceLayout plan_slices(int width, int height, int max_slice_nums, int scale_resolution, int patch_size,
                        bool never_split) {
  SliceOptions opt;
  opt.max_slice_nums = max_slice_nums;
  opt.scale_resolution = scale_resolution;
  opt.patch_size = patch_size;
  opt.never_split = never_split;
  return plan_slices(width, height, opt);
}

TgtSize tgt_size(Size slice, int patch_size) {
  if (patch_size < 1 || slice.width % patch_size || slice.height % patch_size)
    throw InvalidArgument("tgt_size: slice " + std::to_string(slice.width) + "x" +
                          std::to_string(slice.height) + " is not a multiple of patch_size " +
                          std::to_string(patch_size));
  return {slice.height / patch_size, slice.width / patch_size};
}

SlicedImage slice_image(const RgbImage& img, const SliceOptions& opt) {
  SlicedImage out;
  out.layout = plan_slices(img.width, img.height, opt);
  const SliceLayout& L = out.layout;
  // Source and refine images are each resized directly from the original (as HF does).
  out.slices.push_back(resize_bicubic(img, L.source.width, L.source.height, opt.resize_order));
  if (!L.sliced) return out;
  const RgbImage refine = resize_bicubic(img, L.refine.width, L.refine.height, opt.resize_order);
  for (int r = 0; r < L.grid_rows; ++r)
    for (int c = 0; c < L.grid_cols; ++c)
      out.slices.push_back(crop(refine, c * L.cell.width, r * L.cell.height, L.cell.width, L.cell.height));
  return out;
}

}  // namespace minicpmv::vision
