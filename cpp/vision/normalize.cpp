#include "vision/normalize.h"

#include <array>
#include <string>

#include "minicpmv/error.h"

namespace minicpmv::vision {
namespace {

// All 256 values, each computed as HF does in float32: (float(u) / 255 - 0.5) / 0.5.
const std::array<float, 256>& table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> v{};
    for (int u = 0; u < 256; ++u) {
      volatile float x = float(u) / 255.0f;  // volatile: keep the float32 rounding of each step
      volatile float y = x - 0.5f;
      v[u] = y / 0.5f;
    }
    return v;
  }();
  return t;
}

void check(const RgbImage& img, const char* what) {
  check_image_size(img.width, img.height, what);
  if (img.data.size() != size_t(img.width) * img.height * 3)
    throw InvalidArgument(std::string(what) + ": pixel buffer holds " + std::to_string(img.data.size()) +
                          " bytes, expected " + std::to_string(size_t(img.width) * img.height * 3));
}

}  // namespace

float normalize_value(uint8_t u) { return table()[u]; }

std::vector<float> normalize_chw(const RgbImage& img) {
  check(img, "normalize_chw");
  const auto& t = table();
  const size_t plane = size_t(img.width) * img.height;
  std::vector<float> out(plane * 3);
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) out[c * plane + i] = t[img.data[i * 3 + c]];
  return out;
}

std::vector<float> normalize_patches(const RgbImage& img, int patch_size) {
  check(img, "normalize_patches");
  const int P = patch_size;
  if (P < 1 || img.width % P || img.height % P)
    throw InvalidArgument("normalize_patches: image " + std::to_string(img.width) + "x" +
                          std::to_string(img.height) + " is not a multiple of patch_size " +
                          std::to_string(P));
  const auto& t = table();
  const int rows = img.height / P, cols = img.width / P;
  const size_t patch_len = size_t(3) * P * P;
  std::vector<float> out(size_t(rows) * cols * patch_len);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      float* dst = &out[(size_t(r) * cols + c) * patch_len];
      for (int ky = 0; ky < P; ++ky) {
        const uint8_t* src = img.row(r * P + ky) + size_t(c) * P * 3;
        for (int kx = 0; kx < P; ++kx)
          for (int ch = 0; ch < 3; ++ch) dst[(size_t(ch) * P + ky) * P + kx] = t[src[kx * 3 + ch]];
      }
    }
  return out;
}

}  // namespace minicpmv::vision
