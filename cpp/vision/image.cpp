#include "vision/image.h"

#include <cstring>
#include <string>

#include "minicpmv/error.h"

namespace minicpmv::vision {

void check_image_size(int w, int h, const char* what) {
  if (w < 1 || h < 1 || w > kMaxImageSide || h > kMaxImageSide)
    throw InvalidArgument(std::string(what) + ": image size " + std::to_string(w) + "x" +
                          std::to_string(h) + " is outside 1.." + std::to_string(kMaxImageSide));
}

RgbImage crop(const RgbImage& img, int x, int y, int w, int h) {
  if (x < 0 || y < 0 || w < 1 || h < 1 || x + w > img.width || y + h > img.height)
    throw InvalidArgument("crop: box (" + std::to_string(x) + ", " + std::to_string(y) + ", " +
                          std::to_string(w) + "x" + std::to_string(h) + ") is not inside the " +
                          std::to_string(img.width) + "x" + std::to_string(img.height) + " image");
  RgbImage out(w, h);
  for (int r = 0; r < h; ++r) std::memcpy(out.row(r), img.row(y + r) + size_t(x) * 3, size_t(w) * 3);
  return out;
}

}  // namespace minicpmv::vision
