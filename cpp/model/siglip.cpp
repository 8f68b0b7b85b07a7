#include "model/siglip.h"

#include <algorithm>
#include <cmath>

#include "minicpmv/error.h"
#include "kernels/vision_ops.h"
#include "model/attention_full.h"
#include "model/vision_matmul.h"
#include "ops/fast_math.h"
#include "ops/ops.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

namespace minicpmv::model {
namespace {

constexpr int64_t kRowGrain = 4;  // rows per parallel_for chunk for the row-wise ops

// y[i] = LayerNorm(x[i]) for n rows of d.
void layer_norm_rows(const float* x, float* y, int64_t n, int64_t d, const std::vector<float>& w,
                     const std::vector<float>& b, float eps, ThreadPool& pool) {
  const kernels::vops::RowOps& ops = kernels::vops::row_ops();
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) ops.layer_norm(x + i * d, w.data(), b.data(), y + i * d, d, eps);
  });
}

// x[i] += y[i] + bias, then y[i] = LayerNorm(x[i]): a residual add and the next LayerNorm in one
// pass over the rows.
void add_residual_bias_layer_norm(float* x, float* y, const std::vector<float>& bias, int64_t n, int64_t d,
                                  const std::vector<float>& w, const std::vector<float>& b, float eps,
                                  ThreadPool& pool) {
  const kernels::vops::RowOps& ops = kernels::vops::row_ops();
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      ops.residual_layer_norm(x + i * d, y + i * d, bias.data(), w.data(), b.data(), y + i * d, d, eps);
  });
}

// x[i] += y[i] + bias (the residual add of a projection that still lacks its bias).
void add_residual_bias(float* x, const float* y, const std::vector<float>& bias, int64_t n, int64_t d,
                       ThreadPool& pool) {
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* xi = x + i * d;
      const float* yi = y + i * d;
      for (int64_t j = 0; j < d; ++j) xi[j] += yi[j] + bias[j];
    }
  });
}

// Element i of torch.arange(start, end, step) with a float32 result, as ATen's CPU kernel makes it
// (matched against torch 2.13 under its default, AVX2 and AVX512 capabilities for sides 1..999):
// runs of 16 elements are written as two 8-lane vectors whose lane k is
// float(float(start + step*i0) + k*step), the remainder element-wise as float(start + step*i);
// the arithmetic is double. The length is ceil((end - start) / step).
float torch_arange_f32(double start, double step, int64_t n, int64_t i) {
  const int64_t vectorized = n / 16 * 16;
  if (i < vectorized) {
    const int64_t i0 = i / 8 * 8;
    const float base = static_cast<float>(start + step * static_cast<double>(i0));
    return static_cast<float>(static_cast<double>(base) + static_cast<double>(i - i0) * step);
  }
  return static_cast<float>(start + step * static_cast<double>(i));
}

int64_t torch_arange_len(double start, double end, double step) {
  return static_cast<int64_t>(std::ceil((end - start) / step));
}

}  // namespace

// HF MiniCPM-V (modeling_navit_siglip, SiglipVisionEmbeddings.forward) in float32:
//   boundaries = arange(1/side, 1.0, 1/side)            (side - 1 values ~ k/side)
//   frac_h     = arange(0, 1 - 1e-6, 1 / tgt_h)          (1 / tgt_h is a float32 tensor there)
//   bucket     = bucketize(frac, boundaries, right=True) = #boundaries <= frac
// In exact arithmetic bucket(r) = floor(side*r/h), the closed form llama.cpp uses; but where
// side*r/h is an integer the float32 values tie and torch's rounding decides (e.g. h = 25, r = 5:
// HF gives 13, the closed form 14; 42 of the grid sizes 1..259 have such ties). We follow HF.
void vision_position_ids(int64_t h, int64_t w, int64_t side, int32_t* ids) {
  const double b_step = 1.0 / static_cast<double>(side);
  const int64_t nb = torch_arange_len(b_step, 1.0, b_step);
  std::vector<float> boundaries(static_cast<size_t>(nb));
  for (int64_t k = 0; k < nb; ++k) boundaries[k] = torch_arange_f32(b_step, b_step, nb, k);
  auto buckets = [&](int64_t len, std::vector<int64_t>& out) {
    const double step = static_cast<double>(1.0f / static_cast<float>(len));
    const int64_t n = torch_arange_len(0.0, 1.0 - 1e-6, step);
    out.resize(static_cast<size_t>(len));
    for (int64_t r = 0; r < len; ++r) {
      const float frac = torch_arange_f32(0.0, step, n, r);
      out[r] = std::upper_bound(boundaries.begin(), boundaries.end(), frac) - boundaries.begin();
    }
  };
  std::vector<int64_t> bh, bw;
  buckets(h, bh);
  buckets(w, bw);
  for (int64_t r = 0; r < h; ++r)
    for (int64_t c = 0; c < w; ++c) ids[r * w + c] = static_cast<int32_t>(bh[r] * side + bw[c]);
}

SiglipTower::SiglipTower(std::shared_ptr<const Mmproj> mmproj) : m_(std::move(mmproj)) {
  ffn_stride_ = m_->vision.intermediate;
  for (const VisionLayerWeights& L : m_->v.layers) ffn_stride_ = std::max(ffn_stride_, L.ffn_fc2.cols());
}

void SiglipTower::reserve(int64_t n) {
  if (n <= capacity_) return;
  const size_t nh = static_cast<size_t>(n * m_->vision.hidden);
  for (auto* b : {&x_, &xn_, &q_, &k_, &v_, &attn_}) b->resize(nh);
  ffn_.resize(static_cast<size_t>(n * m_->vision.intermediate));
  if (ffn_stride_ != m_->vision.intermediate) ffn_pad_.resize(static_cast<size_t>(n * ffn_stride_));
  pos_ids_.resize(static_cast<size_t>(n));
  capacity_ = n;
}

// Conv2d(3 -> hidden, 14, stride 14) is a matmul of the flattened patches against the conv
// weight viewed as [hidden, 588]; then bias and the bucketed position row.
void SiglipTower::embed(const float* patches, int64_t h, int64_t w, ThreadPool& pool) {
  const VisionConfig& c = m_->vision;
  const VisionWeights& W = m_->v;
  const int64_t n = h * w, H = c.hidden;
  vision_matmul(W.patch_embd, patches, n, x_.data(), pool);
  vision_position_ids(h, w, c.patches_per_side, pos_ids_.data());
  const gguf::TensorInfo& pos = *W.position_embd;
  const size_t pos_row_bytes = row_size(pos.type, H);
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* row = xn_.data() + i * H;  // xn_ is free here: use it for the dequantized row
      dequantize_row(pos.type, pos.data + pos_row_bytes * static_cast<size_t>(pos_ids_[i]), row, H);
      float* xi = x_.data() + i * H;
      for (int64_t j = 0; j < H; ++j) xi[j] += W.patch_embd_b[j] + row[j];
    }
  });
}

// x <- x + attn_out(Attn(LN1(x)));  x <- x + fc2(gelu_tanh(fc1(LN2(x))))
void SiglipTower::encoder_block(const VisionLayerWeights& L, int64_t n, ThreadPool& pool) {
  const VisionConfig& c = m_->vision;
  const int64_t H = c.hidden, I = c.intermediate;
  float* x = x_.data();
  float* xn = xn_.data();

  layer_norm_rows(x, xn, n, H, L.ln1_w, L.ln1_b, c.eps, pool);
  const kernels::MatmulOut qkv[3] = {{&L.attn_q, q_.data()}, {&L.attn_k, k_.data()}, {&L.attn_v, v_.data()}};
  vision_matmul_multi(qkv, 3, xn, n, pool);
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      ops::add(q_.data() + i * H, L.attn_q_b.data(), H);
      ops::add(k_.data() + i * H, L.attn_k_b.data(), H);
      ops::add(v_.data() + i * H, L.attn_v_b.data(), H);
    }
  });
  AttentionShape s;
  s.n_q = s.n_kv = n;
  s.n_heads = c.n_heads;
  s.head_dim = c.head_dim;
  s.q_stride = s.k_stride = s.v_stride = s.out_stride = H;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  // The approximate options ("bf16" dot products, Q8_0 matrices converted or stored) take the
  // flash kernel's bf16 variant (1.6x: 33 vs 55 ms per 1024-token block at 1 thread; attention_full
  // keeps f32 on CPUs without AVX512_BF16): its rounding of q, K, V and the probabilities (~2e-3
  // relative each) is below what those options' activation rounding already costs. Native float
  // matrices keep the f32 attention.
  auto quantized = [](const kernels::Weight& W) {
    return W.type() != DType::F32 && W.type() != DType::F16 && W.type() != DType::BF16;
  };
  s.bf16 = bf16_dot_flag() || m_->weight_format() == WeightFormat::Q8_0 ||
           (quantized(L.attn_q) && quantized(L.attn_k) && quantized(L.attn_v));
  attention_full(s, q_.data(), k_.data(), v_.data(), attn_.data(), pool, attn_scratch_);
  vision_matmul(L.attn_out, attn_.data(), n, xn, pool);
  add_residual_bias_layer_norm(x, xn, L.attn_out_b, n, H, L.ln2_w, L.ln2_b, c.eps, pool);
  vision_matmul(L.ffn_fc1, xn, n, ffn_.data(), pool);
  // A Q8_0-converted fc2 is wider than I (zero columns to a whole block): its input rows are
  // copied into ffn_pad_ with a zero tail by the same pass that adds the bias and applies GELU.
  const int64_t Ip = L.ffn_fc2.cols();
  float* fc2_in = Ip == I ? ffn_.data() : ffn_pad_.data();
  const kernels::vops::RowOps& row_ops = kernels::vops::row_ops();
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      row_ops.bias_gelu(ffn_.data() + i * I, L.ffn_fc1_b.data(), fc2_in + i * Ip, I, Ip);
  });
  vision_matmul(L.ffn_fc2, fc2_in, n, xn, pool);
  add_residual_bias(x, xn, L.ffn_fc2_b, n, H, pool);
}

void SiglipTower::forward(const float* patches, int64_t h, int64_t w, float* out, ThreadPool& pool) {
  if (h <= 0 || w <= 0)
    throw InvalidArgument("vision tower: patch grid must be at least 1x1, got " + std::to_string(h) + "x" +
                          std::to_string(w));
  const int64_t n = h * w;
  reserve(n);
  embed(patches, h, w, pool);
  for (const VisionLayerWeights& L : m_->v.layers) encoder_block(L, n, pool);
  layer_norm_rows(x_.data(), out, n, m_->vision.hidden, m_->v.post_ln_w, m_->v.post_ln_b, m_->vision.eps,
                  pool);
}

}  // namespace minicpmv::model
