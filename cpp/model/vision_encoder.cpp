#include "model/vision_encoder.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "kernels/bf16_dot.h"
#include "minicpmv/error.h"
#include "model/vision_matmul.h"
#include "quant/f16.h"
#include "runtime/threadpool.h"
#include "vision/normalize.h"

namespace minicpmv::model {

namespace {

// Every tower / resampler matrix the "bf16" option converts (the 588-wide patch embedding, ~0.1%
// of the work, stays as stored, as with Q8_0).
std::vector<kernels::Weight*> bf16_matrices(Mmproj& m) {
  std::vector<kernels::Weight*> v;
  for (VisionLayerWeights& L : m.v.layers)
    for (kernels::Weight* w : {&L.attn_q, &L.attn_k, &L.attn_v, &L.attn_out, &L.ffn_fc1, &L.ffn_fc2}) v.push_back(w);
  for (kernels::Weight* w : {&m.r.kv, &m.r.attn_q, &m.r.attn_k, &m.r.attn_v, &m.r.attn_out, &m.r.proj}) v.push_back(w);
  return v;
}

// f16 / f32 matrices -> bf16 copies (f16 -> f32 exact, then round to nearest even), then the
// source pages of the mapping are dropped (MADV_DONTNEED: clean file pages, re-read if touched) so
// RSS does not hold both. Returns the number of matrices that now run as bf16 (stored bf16 ones
// count, in place; quantized ones stay as stored).
int64_t convert_matrices_bf16(Mmproj& m, std::vector<std::unique_ptr<uint16_t[]>>& store, ThreadPool& pool) {
  int64_t converted = 0;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (kernels::Weight* w : bf16_matrices(m)) {
    if (w->empty()) continue;
    if (w->type() == DType::BF16) {  // stored as bf16 already: used in place
      ++converted;
      continue;
    }
    if (w->type() != DType::F16 && w->type() != DType::F32) continue;
    const int64_t rows = w->rows(), cols = w->cols();
    std::unique_ptr<uint16_t[]> dst(new uint16_t[static_cast<size_t>(rows * cols)]);
    const DType t = w->type();
    const uint8_t* src = static_cast<const uint8_t*>(w->data());
    const size_t rb = w->row_bytes();
    uint16_t* d = dst.get();
    pool.parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* row = src + r * rb;
        for (int64_t k = 0; k < cols; ++k) {
          float f;
          if (t == DType::F16) {
            uint16_t h;
            std::memcpy(&h, row + 2 * k, 2);
            f = fp16_to_fp32(h);
          } else {
            std::memcpy(&f, row + 4 * k, 4);
          }
          d[r * cols + k] = fp32_to_bf16(f);
        }
      }
    });
    const uintptr_t b = (reinterpret_cast<uintptr_t>(src) + page - 1) & ~(page - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(src) + rows * rb) & ~(page - 1);
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
    *w = kernels::Weight::view(DType::BF16, rows, cols, d);
    store.push_back(std::move(dst));
    ++converted;
  }
  return converted;
}

// The file, with its matrices converted as `weights` asks, before the tower and resampler see it.
// Sets `resolved` to how the matrices run: "native", "q8_0" or "bf16".
std::shared_ptr<Mmproj> load_as(const std::string& path, const std::string& weights, ThreadPool& pool,
                                std::string& resolved, std::vector<std::unique_ptr<uint16_t[]>>& store) {
  const bool bf16 = weights == "bf16";
  // bad names fail before the load ("bf16" is ours: Mmproj knows native / q8_0 / auto)
  if (!bf16 && weights != "auto" && weights != "native" && weights != "q8_0")
    throw InvalidArgument("weights='" + weights + "': expected 'auto', 'native', 'q8_0' or 'bf16'");
  const WeightFormat requested = bf16 ? WeightFormat::Native : weight_format_from_name(weights);
  std::shared_ptr<Mmproj> m = Mmproj::load(path);
  const bool can_bf16 = kernels::bf16_dot_available();
  if (bf16 && !can_bf16)
    std::fprintf(stderr, "minicpmv: vision weights \"bf16\" need AVX512_BF16 and the avx512 kernels, "
                         "not available here: running the native (stored) weights instead\n");
  if ((bf16 || requested == WeightFormat::Auto) && can_bf16) {
    if (convert_matrices_bf16(*m, store, pool) > 0) {
      resolved = "bf16";
      return m;
    }
  }
  if (m->resolve(requested) == WeightFormat::Q8_0) m->convert_matrices_q8_0(pool);
  m->pack_tower_q8_0(pool);  // Q8_0 tower matrices, converted or stored: same numbers, faster layout
  resolved = weight_format_name(m->weight_format());
  return m;
}

}  // namespace

VisionEncoder::VisionEncoder(const std::string& mmproj_path, int n_threads, const std::string& weights)
    : pool_(std::make_unique<ThreadPool>(n_threads)),
      m_(load_as(mmproj_path, weights, *pool_, weights_, bf16_store_)),
      tower_(m_),
      resampler_(m_) {}

VisionEncoder::~VisionEncoder() = default;

void VisionEncoder::vision_tower(const float* patches, int64_t h, int64_t w, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Bf16DotScope bf16(weights_ == "bf16");
  tower_.forward(patches, h, w, out, *pool_);
}

void VisionEncoder::resample(const float* hidden, int64_t h, int64_t w, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Bf16DotScope bf16(weights_ == "bf16");
  resampler_.forward(hidden, h, w, out, *pool_);
}

void VisionEncoder::encode_patches(const float* patches, int64_t h, int64_t w, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
  encode_slice(patches, h, w, out);
}

void VisionEncoder::encode_slice(const float* patches, int64_t h, int64_t w, float* out) {
  if (h <= 0 || w <= 0)
    throw InvalidArgument("encode_patches: patch grid must be at least 1x1, got " + std::to_string(h) + "x" +
                          std::to_string(w));
  const size_t need = static_cast<size_t>(h * w * m_->vision.hidden);
  if (hidden_.size() < need) hidden_.resize(need);
  Bf16DotScope bf16(weights_ == "bf16");
  tower_.forward(patches, h, w, hidden_.data(), *pool_);
  resampler_.forward(hidden_.data(), h, w, out, *pool_);
}

// normalize_patches applies the processor's mean = std = 0.5 (bit-exact with HF). A file that asks
// for other values (clip.vision.image_mean / image_std) gets them by undoing that first.
void VisionEncoder::renormalize(std::vector<float>& patches) const {
  const VisionConfig& vc = m_->vision;
  bool plain = true;
  for (int c = 0; c < 3; ++c) plain = plain && vc.image_mean[c] == 0.5f && vc.image_std[c] == 0.5f;
  if (plain) return;
  const int64_t pp = vc.patch_size * vc.patch_size, dim = 3 * pp;
  for (size_t i = 0; i < patches.size(); ++i) {
    const int c = static_cast<int>((static_cast<int64_t>(i) % dim) / pp);
    const float u = patches[i] * 0.5f + 0.5f;  // u8 / 255
    patches[i] = (u - vc.image_mean[c]) / vc.image_std[c];
  }
}

EncodedImage VisionEncoder::encode_image(const vision::RgbImage& img, int max_slice_nums) {
  if (max_slice_nums < 1) throw InvalidArgument("max_slice_nums must be >= 1, got " + std::to_string(max_slice_nums));
  const VisionConfig& vc = m_->vision;
  vision::SliceOptions opt;
  opt.max_slice_nums = max_slice_nums;
  opt.scale_resolution = static_cast<int>(vc.image_size);
  opt.patch_size = static_cast<int>(vc.patch_size);
  vision::SlicedImage sliced = vision::slice_image(img, opt);
  std::lock_guard<std::mutex> lock(mu_);

  EncodedImage res;
  res.layout = sliced.layout;
  const int64_t per_slice = m_->resampler.query_num * m_->resampler.embed_dim;
  res.embeddings.resize(static_cast<size_t>(per_slice) * sliced.slices.size());
  for (size_t s = 0; s < sliced.slices.size(); ++s) {
    const vision::RgbImage& slice = sliced.slices[s];
    const vision::TgtSize t = vision::tgt_size({slice.width, slice.height}, opt.patch_size);
    res.tgt_sizes.push_back(t);
    std::vector<float> patches = vision::normalize_patches(slice, opt.patch_size);
    renormalize(patches);
    encode_slice(patches.data(), t.h, t.w, res.embeddings.data() + per_slice * static_cast<int64_t>(s));
  }
  return res;
}

}  // namespace minicpmv::model
