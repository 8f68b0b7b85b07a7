#include "model/resampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/bf16_dot.h"
#include "kernels/vision_ops.h"
#include "quant/f16.h"
#include "minicpmv/error.h"
#include "model/attention_full.h"
#include "model/vision_matmul.h"
#include "ops/fast_math.h"
#include "ops/ops.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"

namespace minicpmv::model {
namespace {

constexpr int64_t kRowGrain = 4;

// x -> bf16, nearest even (the bf16 dot kernels' rounding of their activations)
void round_bf16(const float* x, uint16_t* dst, int64_t n) {
#if defined(MINICPMV_X86)
  if (kernels::bf16_dot_available()) return kernels::round_bf16_avx512(x, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = fp32_to_bf16(x[i]);
}

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

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

void Resampler::reserve(int64_t n, bool fold) {
  const ResamplerConfig& c = m_->resampler;
  const int64_t HQ = c.n_heads * c.query_num;
  if (attn_.empty()) {
    attn_.resize(static_cast<size_t>(c.query_num * c.embed_dim));
    o_.resize(attn_.size());
  }
  const size_t nd = static_cast<size_t>(n * c.embed_dim);
  if (n > capacity_) {
    for (auto* b : {&kv_, &kpe_, &tmp_}) b->resize(nd);
    capacity_ = n;
  }
  if (fold) {
    if (pv_.empty()) pv_.resize(static_cast<size_t>(HQ * c.embed_dim));
    if (scores_.size() < static_cast<size_t>(HQ * n)) scores_.resize(static_cast<size_t>(HQ * n));
  } else if (v_.size() < nd) {
    v_.resize(nd);
  }
}

// The fold pays where the projections run on f32 kernels (f32 / f16 weights: ~95 GFLOP/s here,
// like the f32 products of the fold). Block-quantized Wk / Wv run on int8 kernels at ~2.3x that
// rate, so 52.6 int8 GFLOP cost about what 27.9 f32 ones do, and the int8 path rounds kpe / kv to
// Q8_0 before Wk / Wv (which tests/test_vision.py's q8_0 reference emulates): those keep the
// projections. MINICPMV_RESAMPLER_FOLD=0/1 overrides (benchmarks).
//
// The "bf16" option (bf16_dot_flag with BF16 Wk / Wv) folds too, but with the fold's two n-token
// products on the bf16 dot kernels as well (fold_bf16: kpe, kv, the folded queries and P rounded
// to bf16): at 1 thread, 89 + 76 ms for the two products against 2 x 149 ms for K and V on the same
// kernels plus 12.6 ms of attention. (With f32 products the fold lost there: 337 vs 293 ms.)
bool Resampler::use_fold() const {
  const ResamplerWeights& R = m_->r;
  // the fold reads Wk / Wv row by row: not in a repacked layout (Q8_0 panels run projected)
  if (R.attn_k.layout() != kernels::Layout::Rows || R.attn_v.layout() != kernels::Layout::Rows) return false;
  if (const char* e = std::getenv("MINICPMV_RESAMPLER_FOLD")) return e[0] == '1';
  if (fold_bf16()) return true;
  for (DType t : {R.attn_k.type(), R.attn_v.type()}) {
    if (t == DType::BF16 && bf16_dot_flag()) return false;  // without AVX512_BF16 products
    if (t != DType::F32 && t != DType::F16 && t != DType::BF16) return false;
  }
  return true;
}

bool Resampler::fold_bf16() const {
  const ResamplerWeights& R = m_->r;
  return bf16_dot_flag() && R.attn_k.type() == DType::BF16 && R.attn_v.type() == DType::BF16 &&
         kernels::bf16_dot_available();
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

// qk_ rows h*Q .. h*Q+Q-1 = s (LN_q(query) Wq_h^T + bq_h) Wk_h, Wk_h = rows [h*d, h*d + d) of Wk
// as the chosen weight format stores them (dequantized: the option's rounding of Wk stays),
// computed in f32 through Wk_h^T [D, d] as an f32 "weight".
void Resampler::prepare_folded(ThreadPool& pool) {
  if (!qk_.empty()) return;
  prepare_queries(pool);
  const ResamplerConfig& c = m_->resampler;
  const ResamplerWeights& R = m_->r;
  const int64_t Q = c.query_num, D = c.embed_dim, H = c.n_heads, hd = c.head_dim;
  if (R.attn_k.cols() != D || R.attn_v.cols() != D || R.attn_k.rows() != H * hd || R.attn_v.rows() != H * hd)
    throw InvalidArgument("resampler: attn.k / attn.v must be [" + std::to_string(H * hd) + ", " + std::to_string(D) +
                          "] for the folded attention");
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  qk_.resize(static_cast<size_t>(H * Q * D));
  std::vector<float> wk(static_cast<size_t>(hd * D)), wkt(wk.size()), qh(static_cast<size_t>(Q * hd));
  const uint8_t* base = static_cast<const uint8_t*>(R.attn_k.data());
  for (int64_t h = 0; h < H; ++h) {
    pool.parallel_for(hd, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        dequantize_row(R.attn_k.type(), base + R.attn_k.row_bytes() * static_cast<size_t>(h * hd + r),
                       wk.data() + r * D, D);
    });
    for (int64_t r = 0; r < hd; ++r)
      for (int64_t k = 0; k < D; ++k) wkt[k * hd + r] = wk[r * D + k];
    for (int64_t i = 0; i < Q; ++i)
      for (int64_t j = 0; j < hd; ++j) qh[i * hd + j] = q_proj_[i * D + h * hd + j] * scale;
    kernels::matmul(kernels::Weight::view(DType::F32, D, hd, wkt.data()), qh.data(), Q, qk_.data() + h * Q * D, pool);
  }
}

void Resampler::forward(const float* x, int64_t h, int64_t w, float* out, ThreadPool& pool) {
  if (h <= 0 || w <= 0)
    throw InvalidArgument("resampler: patch grid must be at least 1x1, got " + std::to_string(h) + "x" +
                          std::to_string(w));
  const ResamplerConfig& c = m_->resampler;
  const ResamplerWeights& R = m_->r;
  const int64_t n = h * w, D = c.embed_dim, Q = c.query_num, half = D / 2;
  const bool fold = use_fold();
  reserve(n, fold);

  // kv = LN_kv(x W_kv^T);  kpe = kv + pe (keys only: values get no position)
  double t = seconds();
  auto lap = [&t](double& phase) {
    const double now = seconds();
    phase = now - t;
    t = now;
  };
  phases_ = Phases();
  vision_matmul(R.kv, x, n, tmp_.data(), pool);
  lap(phases_.kv);
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
  const kernels::vops::RowOps& row_ops = kernels::vops::row_ops();
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* kv = kv_.data() + i * D;
      row_ops.layer_norm(tmp_.data() + i * D, R.ln_kv_w.data(), R.ln_kv_b.data(), kv, D, c.eps);
      float* kpe = kpe_.data() + i * D;
      const float* pw = table_w_.data() + (i % w) * half;
      const float* ph = table_h_.data() + (i / w) * half;
      for (int64_t j = 0; j < half; ++j) kpe[j] = kv[j] + pw[j];
      for (int64_t j = 0; j < half; ++j) kpe[half + j] = kv[half + j] + ph[j];
    }
  });

  lap(phases_.ln_pe);
  if (fold)
    attend_folded(n, pool);
  else
    attend_projected(n, pool);
  t = seconds();

  // y = LN_post(attn Wo^T + bo) . P   (the LN output reuses attn_)
  vision_matmul(R.attn_out, attn_.data(), Q, o_.data(), pool);
  for (int64_t i = 0; i < Q; ++i) {
    float* o = o_.data() + i * D;
    ops::add(o, R.attn_out_b.data(), D);
    ops::layer_norm(o, R.ln_post_w.data(), R.ln_post_b.data(), attn_.data() + i * D, D, c.eps);
  }
  vision_matmul(R.proj, attn_.data(), Q, out, pool);
  lap(phases_.out);
}

// The spec's attention (nn.MultiheadAttention, s = 1/sqrt(d), head h = columns [h*d, h*d + d)):
//   Q = LN_q(query) Wq^T + bq;  K = kpe Wk^T + bk;  V = kv Wv^T + bv
//   attn_h = softmax(s Q_h K_h^T) V_h
void Resampler::attend_projected(int64_t n, ThreadPool& pool) {
  const ResamplerConfig& c = m_->resampler;
  const ResamplerWeights& R = m_->r;
  const int64_t D = c.embed_dim;
  prepare_queries(pool);
  const double t0 = seconds();
  float* k = tmp_.data();
  vision_matmul(R.attn_k, kpe_.data(), n, k, pool);
  vision_matmul(R.attn_v, kv_.data(), n, v_.data(), pool);
  pool.parallel_for(n, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      ops::add(k + i * D, R.attn_k_b.data(), D);
      ops::add(v_.data() + i * D, R.attn_v_b.data(), D);
    }
  });
  const double t1 = seconds();
  phases_.kv_proj = t1 - t0;
  AttentionShape s;
  s.n_q = c.query_num;
  s.n_kv = n;
  s.n_heads = c.n_heads;
  s.head_dim = c.head_dim;
  s.q_stride = s.k_stride = s.v_stride = s.out_stride = D;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  // The approximate options (every case that takes this path unless MINICPMV_RESAMPLER_FOLD=0
  // forces it) run the bf16 flash kernel where the CPU has it, as the tower does: 12.6 ms against
  // the f32 one's 19.0 for 64 queries x 1024 keys x 28 heads of 128 at 1 thread (bench_vision_ops
  // attention). Float matrices keep f32.
  auto quantized = [](const kernels::Weight& W) {
    return W.type() != DType::F32 && W.type() != DType::F16 && W.type() != DType::BF16;
  };
  s.bf16 = bf16_dot_flag() || m_->weight_format() == WeightFormat::Q8_0 ||
           (quantized(R.attn_k) && quantized(R.attn_v));
  attention_full(s, q_proj_.data(), k, v_.data(), attn_.data(), pool, attn_scratch_);
  phases_.attention = seconds() - t1;
}

// The same attention with the two n-token projections folded into the queries (they are weights):
//   s Q_h K_h^T = (s Q_h Wk_h) kpe^T + s Q_h bk_h 1^T   -- the last term is one constant per query
//                                                          row: the softmax drops it;
//   P_h V_h     = (P_h kv) Wv_h^T + bv_h                -- the rows of P_h sum to 1.
// With qk_ = s Q_h Wk_h from the load, a 1024-token slice costs 2 * 2 H Q n D (scores, P kv) +
// 2 H Q D d (the per-head Wv) = 27.9 GFLOP instead of 2 * 2 n D^2 = 52.6 for K and V.
// Numerics: the same sums reassociated in f32 (measured against the float64 spec resampler: the
// same ~1e-6 relative as the projected path), and b_v added as is instead of through
// sum_j P_hj = 1 +- a few ulps.
void Resampler::attend_folded(int64_t n, ThreadPool& pool) {
  const ResamplerConfig& c = m_->resampler;
  const ResamplerWeights& R = m_->r;
  const int64_t D = c.embed_dim, Q = c.query_num, H = c.n_heads, hd = c.head_dim, HQ = H * Q;
  prepare_folded(pool);
  const double t0 = seconds();
  const bool b16 = fold_bf16();
  if (b16) {
    // kpe as a bf16 "weight" [n, D]; matmul_bf16_dot rounds the folded queries per call
    if (kpe_b_.size() < static_cast<size_t>(n * D)) kpe_b_.resize(static_cast<size_t>(n * D));
    pool.parallel_for(n, 16, [&](int64_t i0, int64_t i1) { round_bf16(kpe_.data() + i0 * D, kpe_b_.data() + i0 * D, (i1 - i0) * D); });
    kernels::matmul_bf16_dot(kernels::Weight::view(DType::BF16, n, D, kpe_b_.data()), qk_.data(), HQ, scores_.data(), pool);
  } else {
    kernels::matmul(kernels::Weight::view(DType::F32, n, D, kpe_.data()), qk_.data(), HQ, scores_.data(), pool);
  }
  const double t1 = seconds();
  pool.parallel_for(HQ, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) ops::softmax_fast(scores_.data() + r * n, n);
  });
  float* kvt = tmp_.data();  // kv^T [D, n]: the f32 "weight" of P kv
  pool.parallel_for((D + 15) / 16, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t k0 = b0 * 16; k0 < std::min(D, b1 * 16); k0 += 16)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k = k0; k < std::min(D, k0 + 16); ++k) kvt[k * n + i] = kv_[i * D + k];
  });
  const double t2 = seconds();
  phases_.attention = t2 - t1;
  if (b16) {
    if (kvt_b_.size() < static_cast<size_t>(n * D)) kvt_b_.resize(static_cast<size_t>(n * D));
    pool.parallel_for(D, 16, [&](int64_t k0, int64_t k1) { round_bf16(kvt + k0 * n, kvt_b_.data() + k0 * n, (k1 - k0) * n); });
    kernels::matmul_bf16_dot(kernels::Weight::view(DType::BF16, D, n, kvt_b_.data()), scores_.data(), HQ, pv_.data(), pool);
  } else {
    kernels::matmul(kernels::Weight::view(DType::F32, D, n, kvt), scores_.data(), HQ, pv_.data(), pool);
  }
  const uint8_t* wv = static_cast<const uint8_t*>(R.attn_v.data());
  float* oh = o_.data();  // [Q, d] per head, free until attn_out
  for (int64_t h = 0; h < H; ++h) {
    const kernels::Weight Wv_h =
        kernels::Weight::view(R.attn_v.type(), hd, D, wv + R.attn_v.row_bytes() * static_cast<size_t>(h * hd));
    vision_matmul(Wv_h, pv_.data() + h * Q * D, Q, oh, pool);
    for (int64_t i = 0; i < Q; ++i)
      for (int64_t j = 0; j < hd; ++j) attn_[i * D + h * hd + j] = oh[i * hd + j] + R.attn_v_b[h * hd + j];
  }
  phases_.kv_proj = (t1 - t0) + (seconds() - t2);
}

}  // namespace minicpmv::model
