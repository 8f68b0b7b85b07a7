#include "model/resampler.h"

#include <cmath>
#include <cstring>

#include "minicpmv/error.h"
#include "model/attention_full.h"
#include "model/vision_matmul.h"
#include "ops/ops.h"
#include "runtime/threadpool.h"

namespace minicpmv::model {
namespace {

constexpr int64_t kRowGrain = 4;

// omega_k = 1 / 10000^(k/q), k < q = D/4. HF (get_1d_sincos_pos_embed_from_grid_new) runs in numpy
// float32: k/q in float32, 10000**that in float32, 1/that in float32; we round at the same steps
// (numpy's SIMD float32 power may differ from powf by an ulp; see the test's tolerance).
std::vector<float> sincos_omega(int64_t quarter) {
  std::vector<float> omega(static_cast<size_t>(quarter));
  for (int64_t k = 0; k < quarter; ++k) {
    const float e = static_cast<float>(k) / static_cast<float>(quarter);
    omega[k] = 1.0f / std::pow(10000.0f, e);
  }
  return omega;
}

// table[p] = [sin(p*omega_0..q-1), cos(p*omega_0..q-1)] for p < len. p*omega is a float32 product
// as in HF; sin/cos are evaluated in double and rounded (within an ulp of numpy's float32 ones).
void sincos_table(int64_t len, const std::vector<float>& omega, float* table) {
  const int64_t quarter = static_cast<int64_t>(omega.size());
  for (int64_t p = 0; p < len; ++p) {
    float* row = table + p * 2 * quarter;
    for (int64_t k = 0; k < quarter; ++k) {
      const double a = static_cast<double>(static_cast<float>(p) * omega[k]);
      row[k] = static_cast<float>(std::sin(a));
      row[quarter + k] = static_cast<float>(std::cos(a));
    }
  }
}

}  // namespace

void resampler_pos_embed(int64_t h, int64_t w, int64_t embed_dim, float* pe) {
  if (h <= 0 || w <= 0 || embed_dim <= 0 || embed_dim % 4 != 0)
    throw InvalidArgument("resampler_pos_embed: need h, w >= 1 and embed_dim a positive multiple of 4");
  const int64_t half = embed_dim / 2;
  std::vector<float> tw(static_cast<size_t>(w * half)), th(static_cast<size_t>(h * half));
  const std::vector<float> omega = sincos_omega(embed_dim / 4);
  sincos_table(w, omega, tw.data());
  sincos_table(h, omega, th.data());
  for (int64_t r = 0; r < h; ++r)
    for (int64_t c = 0; c < w; ++c) {
      float* row = pe + (r * w + c) * embed_dim;
      std::memcpy(row, tw.data() + c * half, sizeof(float) * half);
      std::memcpy(row + half, th.data() + r * half, sizeof(float) * half);
    }
}

Resampler::Resampler(std::shared_ptr<const Mmproj> mmproj)
    : m_(std::move(mmproj)), omega_(sincos_omega(m_->resampler.embed_dim / 4)) {}

void Resampler::reserve(int64_t n) {
  const ResamplerConfig& c = m_->resampler;
  if (attn_.empty()) {
    attn_.resize(static_cast<size_t>(c.query_num * c.embed_dim));
    o_.resize(attn_.size());
  }
  if (n <= capacity_) return;
  const size_t nd = static_cast<size_t>(n * c.embed_dim);
  for (auto* b : {&kv_, &kpe_, &k_, &v_}) b->resize(nd);
  capacity_ = n;
}

void Resampler::prepare_queries(ThreadPool& pool) {
  if (!q_proj_.empty()) return;
  const ResamplerConfig& c = m_->resampler;
  const ResamplerWeights& R = m_->r;
  const int64_t Q = c.query_num, D = c.embed_dim;
  std::vector<float> q(static_cast<size_t>(Q * D));
  for (int64_t i = 0; i < Q; ++i)
    ops::layer_norm(R.query.data() + i * D, R.ln_q_w.data(), R.ln_q_b.data(), q.data() + i * D, D, c.eps);
  q_proj_.resize(q.size());
  vision_matmul(R.attn_q, q.data(), Q, q_proj_.data(), pool);
  ops::add_bias(q_proj_.data(), R.attn_q_b.data(), Q, D);
}

void Resampler::forward(const float* x, int64_t h, int64_t w, float* out, ThreadPool& pool) {
  if (h <= 0 || w <= 0)
    throw InvalidArgument("resampler: patch grid must be at least 1x1, got " + std::to_string(h) + "x" +
                          std::to_string(w));
  const ResamplerConfig& c = m_->resampler;
  const ResamplerWeights& R = m_->r;
  const int64_t n = h * w, D = c.embed_dim, Q = c.query_num, half = D / 2;
  reserve(n);
  prepare_queries(pool);

  // kv = LN_kv(x W_kv^T);  kpe = kv + pe (keys only: values get no position)
  vision_matmul(R.kv, x, n, k_.data(), pool);  // k_ is free until K: holds x W_kv^T
  // The sin-cos rows depend on the grid only: the slices of an image share one size (~115k
  // double sin/cos each), so they are rebuilt only when it changes.
  if (h != table_for_h_ || w != table_for_w_) {
    table_w_.resize(static_cast<size_t>(w * half));
    table_h_.resize(static_cast<size_t>(h * half));
    sincos_table(w, omega_, table_w_.data());
    sincos_table(h, omega_, table_h_.data());
    table_for_h_ = h;
    table_for_w_ = w;
  }
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* kv = kv_.data() + i * D;
      ops::layer_norm(k_.data() + i * D, R.ln_kv_w.data(), R.ln_kv_b.data(), kv, D, c.eps);
      float* kpe = kpe_.data() + i * D;
      const float* pw = table_w_.data() + (i % w) * half;
      const float* ph = table_h_.data() + (i / w) * half;
      for (int64_t j = 0; j < half; ++j) kpe[j] = kv[j] + pw[j];
      for (int64_t j = 0; j < half; ++j) kpe[half + j] = kv[half + j] + ph[j];
    }
  });

  // K = kpe Wk^T + bk;  V = kv Wv^T + bv
  vision_matmul(R.attn_k, kpe_.data(), n, k_.data(), pool);
  vision_matmul(R.attn_v, kv_.data(), n, v_.data(), pool);
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      ops::add(k_.data() + i * D, R.attn_k_b.data(), D);
      ops::add(v_.data() + i * D, R.attn_v_b.data(), D);
    }
  });

  AttentionShape s;
  s.n_q = Q;
  s.n_kv = n;
  s.n_heads = c.n_heads;
  s.head_dim = c.head_dim;
  s.q_stride = s.k_stride = s.v_stride = s.out_stride = D;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  attention_full(s, q_proj_.data(), k_.data(), v_.data(), attn_.data(), pool, attn_scratch_);

  // y = LN_post(attn Wo^T + bo) . P   (the LN output reuses attn_)
  vision_matmul(R.attn_out, attn_.data(), Q, o_.data(), pool);
  for (int64_t i = 0; i < Q; ++i) {
    float* o = o_.data() + i * D;
    ops::add(o, R.attn_out_b.data(), D);
    ops::layer_norm(o, R.ln_post_w.data(), R.ln_post_b.data(), attn_.data() + i * D, D, c.eps);
  }
  vision_matmul(R.proj, attn_.data(), Q, out, pool);
}

}  // namespace minicpmv::model
