// The vision half of MiniCPM-V 2.6 as llama.cpp stores it: a "clip" GGUF ("mmproj") holding the
// SigLIP navit tower (v.*) and the perceiver resampler (resampler.*). Spec sections 2.2, 2.3, 9.3.
//
// Matrices stay in the mapped file (kernels::Weight views, any dtype the kernels take); the small
// vectors (biases, LayerNorm affine, the learned queries) are dequantized to f32 copies at load so
// the forward passes never care how the file stored them.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/matmul.h"

namespace minicpmv {
class ThreadPool;
}

namespace minicpmv::model {

// How the engine holds the tower and resampler matrices (VisionEncoder's `weights` option):
//   Native: as the file stores them (the f16 kernels for mmproj-model-f16.gguf).
//   Q8_0:   f32 / f16 / bf16 matrices are quantized to Q8_0 once at load, so the ~1 TOP of
//           matmuls per slice runs on the int8 dot-product kernels (quantized files stay as stored).
//   Auto:   Q8_0 when the file holds f32 / f16 / bf16 matrices and the active kernel path has fast
//           int8 dot products (avx512 VNNI, arm dotprod / i8mm), else Native.
// Accuracy of Q8_0 (int8 weights and activations) is in mmproj.cpp, next to the conversion.
enum class WeightFormat { Auto, Native, Q8_0 };
// "auto" | "native" | "q8_0"; InvalidArgument naming the accepted values otherwise.
WeightFormat weight_format_from_name(const std::string& name);
const char* weight_format_name(WeightFormat f);

struct VisionConfig {
  int64_t hidden = 0;            // clip.vision.embedding_length (1152)
  int64_t intermediate = 0;      // clip.vision.feed_forward_length (4304)
  int64_t n_layers = 0;          // v.blk.N blocks in the file (27); see Mmproj::declared_layers
  int64_t n_heads = 0;           // clip.vision.attention.head_count (16)
  int64_t head_dim = 0;          // hidden / n_heads (72)
  int64_t patch_size = 0;        // clip.vision.patch_size (14)
  int64_t image_size = 0;        // clip.vision.image_size (448: the slice scale, not the table)
  int64_t patches_per_side = 0;  // sqrt(rows of v.position_embd) (70: the 980/14 table)
  float eps = 1e-6f;             // clip.vision.attention.layer_norm_epsilon
  std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> image_std{0.5f, 0.5f, 0.5f};
  int64_t patch_dim() const { return 3 * patch_size * patch_size; }  // 588
};

struct ResamplerConfig {
  int64_t embed_dim = 0;   // rows of resampler.query's second axis (3584 = LLM hidden)
  int64_t query_num = 0;   // clip.minicpmv_query_num, else rows of resampler.query (64)
  int64_t n_heads = 0;     // embed_dim / 128 (28), as HF's init_resampler
  int64_t head_dim = 128;
  int64_t kv_dim = 0;      // vision hidden (1152)
  float eps = 1e-6f;       // HF hard-codes 1e-6 for ln_q / ln_kv / ln_post
};

struct VisionLayerWeights {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
  kernels::Weight attn_q, attn_k, attn_v, attn_out;
  std::vector<float> attn_q_b, attn_k_b, attn_v_b, attn_out_b;
  // fc1: hidden -> intermediate, fc2: intermediate -> hidden. Resolved by shape, not by the file's
  // names: llama.cpp's MiniCPM-V converter writes fc1 as "ffn_down" and fc2 as "ffn_up".
  // ffn_fc2.cols() can exceed the intermediate size after a Q8_0 conversion (4304 -> 4320: zero
  // columns up to a whole block); its input rows then hold ffn_fc2.cols() floats, the tail zero.
  kernels::Weight ffn_fc1, ffn_fc2;
  std::vector<float> ffn_fc1_b, ffn_fc2_b;
};

struct VisionWeights {
  kernels::Weight patch_embd;  // conv weight viewed as [hidden, 3*14*14], (c, ky, kx) per row
  std::vector<float> patch_embd_b;
  const gguf::TensorInfo* position_embd = nullptr;  // [patches_per_side^2, hidden], rows read per slice
  std::vector<VisionLayerWeights> layers;
  std::vector<float> post_ln_w, post_ln_b;
};

struct ResamplerWeights {
  std::vector<float> query;  // [query_num, embed_dim]
  kernels::Weight kv;        // [embed_dim, kv_dim], no bias
  std::vector<float> ln_q_w, ln_q_b, ln_kv_w, ln_kv_b, ln_post_w, ln_post_b;
  kernels::Weight attn_q, attn_k, attn_v, attn_out;  // rows of in_proj_weight / out_proj
  std::vector<float> attn_q_b, attn_k_b, attn_v_b, attn_out_b;
  kernels::Weight proj;  // stored as P^T, so x . P is a plain matmul against it
};

class Mmproj {
 public:
  // Throws FileError (missing / unreadable) or FormatError naming the file and the key or tensor
  // that is missing, of the wrong type or of the wrong shape.
  static std::shared_ptr<Mmproj> load(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const gguf::File& file() const { return *file_; }
  int64_t minicpmv_version() const { return minicpmv_version_; }
  bool ffn_names_swapped() const { return ffn_swapped_; }  // true for llama.cpp's published layout
  // clip.vision.block_count as written; vision.n_layers counts the blocks present (can be more).
  int64_t declared_layers() const { return declared_layers_; }

  // Quantizes every f32 / f16 / bf16 tower and resampler matrix whose width is a multiple of 32 to
  // Q8_0 (owned copies; the patch embedding, 588 wide, and the position table stay as stored), then
  // drops the source pages of the mapping (madvise DONTNEED) so RSS does not hold both. Returns the
  // number of matrices converted (0 when there is nothing to convert). Call before any forward pass.
  int64_t convert_matrices_q8_0(ThreadPool& pool);
  // Repacks the tower's Q8_0 matrices (converted above, or stored as Q8_0 in the file) into the
  // int8 GEMM's panel layout (kernels/packed_q8.h: the same numbers, ~1.3x the stored-row kernels)
  // where the active kernel path has that GEMM (avx512); frees the row copies / drops the file's
  // pages. Of the resampler's matrices kv, attn_k and attn_v are packed (its n-token projections;
  // its fold, which reads rows, declines packed weights).
  // Returns the number packed.
  int64_t pack_tower_q8_0(ThreadPool& pool);
  // Auto resolved for this file and the active kernel path (Native or Q8_0).
  WeightFormat resolve(WeightFormat requested) const;
  // How the matrices are held now: "native" or "q8_0" (after a conversion).
  WeightFormat weight_format() const { return format_; }

  VisionConfig vision;
  ResamplerConfig resampler;
  VisionWeights v;
  ResamplerWeights r;

 private:
  std::shared_ptr<gguf::File> file_;
  int64_t minicpmv_version_ = 0;
  bool ffn_swapped_ = false;
  int64_t declared_layers_ = 0;
  WeightFormat format_ = WeightFormat::Native;
  std::vector<std::unique_ptr<uint8_t[]>> owned_;  // converted matrices
  // Every matrix the forward passes use, for the conversion; may_pad: its user accepts zero
  // columns added up to a whole Q8_0 block (VisionLayerWeights::ffn_fc2).
  struct Matrix {
    kernels::Weight* weight;
    bool may_pad;
  };
  std::vector<Matrix> matrices();
};

}  // namespace minicpmv::model
