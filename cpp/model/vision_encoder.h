// The whole vision path of MiniCPM-V 2.6 for one image: slicing (vision/) -> per slice SigLIP tower
// -> resampler -> query_num embeddings of the LLM width per slice, in the LLM's placeholder order
// (overview first, then the grid cells row-major).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model/mmproj.h"
#include "model/resampler.h"
#include "model/siglip.h"
#include "vision/image.h"
#include "vision/slicing.h"

namespace minicpmv {
class ThreadPool;

namespace model {

struct EncodedImage {
  vision::SliceLayout layout;
  std::vector<vision::TgtSize> tgt_sizes;  // (h, w) in patches per slice
  std::vector<float> embeddings;           // [n_slices, query_num, embed_dim]
};

// One call at a time per encoder (calls from several threads are serialized: the buffers and the
// pool are shared).
class VisionEncoder {
 public:
  // n_threads <= 0: one per core. weights: "auto" | "native" | "q8_0" (WeightFormat in mmproj.h:
  // "auto" converts f16 / f32 matrices to Q8_0 at load when the CPU has fast int8 dot products).
  // The default stays "native" for now: the API (python/minicpmv_edge/api.py) and its exact-logit
  // tests (tests/test_chat.py) are written against the stored weights; they opt in to "auto".
  explicit VisionEncoder(const std::string& mmproj_path, int n_threads = 0, const std::string& weights = "native");
  ~VisionEncoder();

  const Mmproj& mmproj() const { return *m_; }
  ThreadPool& pool() { return *pool_; }

  // patches [h*w, patch_dim] (normalized) -> out [query_num, embed_dim]
  void encode_patches(const float* patches, int64_t h, int64_t w, float* out);
  // patches -> out [h*w, hidden]: the tower alone (for tests and peers)
  void vision_tower(const float* patches, int64_t h, int64_t w, float* out);
  // hidden [h*w, hidden] (tower output) -> out [query_num, embed_dim]: the resampler alone
  void resample(const float* hidden, int64_t h, int64_t w, float* out);
  // A whole RGB image: slice, normalize, encode every slice.
  EncodedImage encode_image(const vision::RgbImage& img, int max_slice_nums = 9);

 private:
  void encode_slice(const float* patches, int64_t h, int64_t w, float* out);  // caller holds mu_
  void renormalize(std::vector<float>& patches) const;

  std::unique_ptr<ThreadPool> pool_;  // before m_: the load-time conversion uses it
  std::shared_ptr<Mmproj> m_;
  SiglipTower tower_;
  Resampler resampler_;
  std::vector<float> hidden_;  // tower output of the current slice
  std::mutex mu_;
};

}  // namespace model
}  // namespace minicpmv
