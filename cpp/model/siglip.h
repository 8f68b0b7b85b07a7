// SigLIP-400M "navit" vision tower of MiniCPM-V 2.6, one slice at a time (spec section 3):
// patch embedding (one matmul) + bucketed position rows -> n pre-LN encoder blocks -> post LN.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/mmproj.h"

namespace minicpmv {
class ThreadPool;

namespace model {

// Row of the position table for each patch of an h x w grid, row-major (i = r*w + c), as HF
// MiniCPM-V computes it (torch float32 arange + bucketize; see siglip.cpp). In exact arithmetic:
//   pos_id = floor(side*r/h)*side + floor(side*c/w)       (llama.cpp's closed form)
// but HF's float32 rounding moves some exact ties one row down (e.g. h = 25). For h or w > side
// neighbouring patches share a row.
void vision_position_ids(int64_t h, int64_t w, int64_t side, int32_t* ids);

class SiglipTower {
 public:
  explicit SiglipTower(std::shared_ptr<const Mmproj> mmproj);

  // patches: [h*w, 3*14*14] normalized floats, (c, ky, kx) order within a patch, patches
  // row-major over the grid. out: [h*w, hidden] (the post-LN last hidden state).
  void forward(const float* patches, int64_t h, int64_t w, float* out, ThreadPool& pool);

 private:
  void reserve(int64_t n);
  void embed(const float* patches, int64_t h, int64_t w, ThreadPool& pool);
  void encoder_block(const VisionLayerWeights& L, int64_t n, ThreadPool& pool);

  std::shared_ptr<const Mmproj> m_;
  int64_t capacity_ = 0;  // tokens the buffers hold; they grow only for a larger slice
  std::vector<float> x_, xn_, q_, k_, v_, attn_, ffn_;  // [n, hidden] except ffn_ [n, intermediate]
  int64_t ffn_stride_ = 0;        // widest fc2 input (> intermediate after a padded Q8_0 conversion)
  std::vector<float> ffn_pad_;    // [n, ffn_stride_] fc2 input when padded, else unused
  std::vector<int32_t> pos_ids_;
  std::vector<float> attn_scratch_;
};

}  // namespace model
}  // namespace minicpmv
