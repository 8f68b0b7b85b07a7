#include "model/vision_encoder.h"

#include "minicpmv/error.h"
#include "runtime/threadpool.h"
#include "vision/normalize.h"

namespace minicpmv::model {

namespace {

// The file, with its matrices converted as `weights` asks, before the tower and resampler see it.
std::shared_ptr<Mmproj> load_as(const std::string& path, const std::string& weights, ThreadPool& pool) {
  const WeightFormat requested = weight_format_from_name(weights);  // bad names fail before the load
  std::shared_ptr<Mmproj> m = Mmproj::load(path);
  if (m->resolve(requested) == WeightFormat::Q8_0) m->convert_matrices_q8_0(pool);
  return m;
}

}  // namespace

VisionEncoder::VisionEncoder(const std::string& mmproj_path, int n_threads, const std::string& weights)
    : pool_(std::make_unique<ThreadPool>(n_threads)),
      m_(load_as(mmproj_path, weights, *pool_)),
      tower_(m_),
      resampler_(m_) {}

VisionEncoder::~VisionEncoder() = default;

void VisionEncoder::vision_tower(const float* patches, int64_t h, int64_t w, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
  tower_.forward(patches, h, w, out, *pool_);
}

void VisionEncoder::resample(const float* hidden, int64_t h, int64_t w, float* out) {
  std::lock_guard<std::mutex> lock(mu_);
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
