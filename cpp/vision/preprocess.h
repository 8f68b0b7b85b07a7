// One image -> what the vision tower consumes: the slices of slice_image, each as normalised
// patches [tgt_size.h * tgt_size.w, 3 * P * P] (see normalize_patches) with its tgt_size, in the
// order their embeddings fill the prompt (source first, then cells row-major).
#pragma once
#include <vector>

#include "vision/slicing.h"

namespace minicpmv::vision {

struct SlicePatches {
  TgtSize tgt_size;            // (rows, cols) of patches
  std::vector<float> patches;  // [tgt_size.h * tgt_size.w, 3 * patch_size^2], row-major patches
};

struct PreprocessedImage {
  SliceLayout layout;
  std::vector<SlicePatches> slices;
};

PreprocessedImage preprocess_image(const RgbImage& img, const SliceOptions& opt = {});

}  // namespace minicpmv::vision
