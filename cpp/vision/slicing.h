// MiniCPM-V 2.6 image slicing (HF MiniCPMVImageProcessor.slice_image, spec section 5): an
// overview ("source") image of about scale_resolution^2 pixels plus, for large images, a
// cols x rows grid of cells cut from a "refine" image, every side a multiple of patch_size.
// The size math follows Python exactly (double arithmetic, round half to even, int() truncation),
// so grids and sizes match the reference for every input size.
#pragma once
#include <vector>

#include "vision/image.h"
#include "vision/resize.h"

namespace minicpmv::vision {

struct Size {
  int width = 0;
  int height = 0;
  bool operator==(const Size& o) const { return width == o.width && height == o.height; }
  bool operator!=(const Size& o) const { return !(*this == o); }
};

struct SliceOptions {
  int max_slice_nums = 9;      // M: at most this many cells (HF allows a per-call override)
  int scale_resolution = 448;  // S: slices hold about S*S pixels
  int patch_size = 14;         // P: every slice side is a multiple of P
  bool never_split = false;    // true: never slice, only the (upscaled) overview
  PassOrder resize_order = PassOrder::pillow13;  // which Pillow version's resize to reproduce
};

struct SliceLayout {
  bool sliced = false;  // false: only the source image, no grid
  int grid_cols = 0;    // slice_grid = (cols, rows) when sliced
  int grid_rows = 0;
  Size source;          // overview image size
  Size refine;          // when sliced: size the image is resized to before cutting (cols*cell, rows*cell)
  Size cell;            // when sliced: size of each cell
  int n_slices() const { return 1 + (sliced ? grid_cols * grid_rows : 0); }
};

// Plans the slicing of a W x H image; pure size math, no pixels.
SliceLayout plan_slices(int width, int height, const SliceOptions& opt = {});
SliceLayout plan_slices(int width, int height, int max_slice_nums, int scale_resolution = 448,
                        int patch_size = 14, bool never_split = false);

// tgt_size of one slice: (rows, cols) of patches = (H / P, W / P).
struct TgtSize {
  int h = 0;
  int w = 0;
};
TgtSize tgt_size(Size slice, int patch_size = 14);

struct SlicedImage {
  SliceLayout layout;
  std::vector<RgbImage> slices;  // source first, then the grid cells row-major (top row left to right)
};

// Resizes (Pillow-exact bicubic) and cuts img as planned by plan_slices.
SlicedImage slice_image(const RgbImage& img, const SliceOptions& opt = {});

// Python semantics used by the size math, exposed for tests.
long long py_round(double x);                   // round(): half to even
long long ensure_divide(double length, int p);  // max(round(length / p) * p, p)

}  // namespace minicpmv::vision
