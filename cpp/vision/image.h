// An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B (HWC). Python decodes files and
// converts every PIL mode to RGB (.convert("RGB")) before handing pixels to the engine; the engine
// never sees alpha, palettes or CMYK.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace minicpmv::vision {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> data;  // height * width * 3

  RgbImage() = default;
  RgbImage(int w, int h) : width(w), height(h), data(size_t(w) * size_t(h) * 3) {}
  uint8_t* row(int y) { return data.data() + size_t(y) * size_t(width) * 3; }
  const uint8_t* row(int y) const { return data.data() + size_t(y) * size_t(width) * 3; }
};

// Largest accepted side. Keeps every size product exact in double (W*H < 2^44) and every box
// coordinate exact in float (Pillow passes the resize box as float).
constexpr int kMaxImageSide = 1 << 22;

// Throws InvalidArgument if w or h is outside [1, kMaxImageSide]; `what` names the argument.
void check_image_size(int w, int h, const char* what);

// The rectangle [x, x+w) x [y, y+h) of img (must lie inside img), as a new image.
RgbImage crop(const RgbImage& img, int x, int y, int w, int h);

}  // namespace minicpmv::vision
