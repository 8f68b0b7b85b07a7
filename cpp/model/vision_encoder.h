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
  // n_threads <= 0: one per core. weights: "auto" | "native" | "q8_0" | "bf16":
  //   native: as stored (f16 kernels with f32 activations: the faithful path, ~5e-4 relative RMS
  //           error on the slice embeddings vs an f32 reference).
  //   q8_0:   f16 / f32 matrices quantized to Q8_0 at load, int8 activations (~1.5e-2); on the
  //           avx512 path the tower's (and the resampler's kv) Q8_0 matrices, converted or stored,
  //           are repacked for the int8 GEMM (kernels/packed_q8.h, same numbers).
  //   bf16:   f16 / f32 matrices converted to bf16 at load, activations rounded to bf16 per matmul,
  //           f32 accumulation (vdpbf16ps; 5.2e-3 at the real widths, 2 blocks). Needs AVX512_BF16
  //           and the avx512 kernel path; elsewhere it falls back to native with a line on stderr.
  //   Both approximate options (and a file whose q/k/v are stored quantized) also run the
  //   attention on bf16 products where the CPU has AVX512_BF16 (model/attention_full.h).
  //   auto:   the fastest option within 1e-2 relative RMS (bf16: 5.2e-3 at the real widths, q8_0 is
  //           1.5e-2) where the CPU has AVX512_BF16; elsewhere unchanged, Mmproj::resolve (Q8_0 on
  //           fast int8 CPUs, else native), so those CPUs keep their speed.
  // The default stays "native" for now: the API (python/minicpmv_edge/api.py) and its exact-logit
  // tests (tests/test_chat.py) are written against the stored weights; they opt in to "auto".
  explicit VisionEncoder(const std::string& mmproj_path, int n_threads = 0, const std::string& weights = "native");
  ~VisionEncoder();

  const Mmproj& mmproj() const { return *m_; }
  ThreadPool& pool() { return *pool_; }
  // How the matrices run after the load: "native", "q8_0" or "bf16".
  const std::string& weights() const { return weights_; }

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
  std::string weights_;               // resolved option, set by the load
  std::vector<std::unique_ptr<uint16_t[]>> bf16_store_;  // the "bf16" copies (before m_ as well)
  std::shared_ptr<Mmproj> m_;
  SiglipTower tower_;
  Resampler resampler_;
  std::vector<float> hidden_;  // tower output of the current slice
  std::mutex mu_;
};

}  // namespace model
}  // namespace minicpmv
