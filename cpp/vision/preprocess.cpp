#include "vision/preprocess.h"

#include "vision/normalize.h"

namespace minicpmv::vision {

PreprocessedImage preprocess_image(const RgbImage& img, const SliceOptions& opt) {
  SlicedImage sliced = slice_image(img, opt);
  PreprocessedImage out;
  out.layout = sliced.layout;
  out.slices.reserve(sliced.slices.size());
  for (RgbImage& s : sliced.slices) {
    SlicePatches p;
    p.tgt_size = tgt_size({s.width, s.height}, opt.patch_size);
    p.patches = normalize_patches(s, opt.patch_size);
    out.slices.push_back(std::move(p));
    s = RgbImage();  // free the pixels as soon as they are converted
  }
  return out;
}

}  // namespace minicpmv::vision
