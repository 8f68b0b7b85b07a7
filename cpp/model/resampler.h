// Perceiver resampler of MiniCPM-V 2.6 (spec section 4): one cross attention from the learned
// queries to the slice's vision tokens, keys carrying a 2-D sin-cos position embedding; no
// residuals. [h*w, kv_dim] -> [query_num, embed_dim] per slice.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/mmproj.h"

namespace minicpmv {
class ThreadPool;

namespace model {

// 2-D sin-cos key position embedding for an h x w grid, [h*w, embed_dim], token i = r*w + c:
//   [ sin(c*omega), cos(c*omega), sin(r*omega), cos(r*omega) ],  omega_k = 1/10000^(k/(D/4))
// (column first: the MAE "w goes first" meshgrid). Any h, w (HF rebuilds its 70x70 cache with
// the same formula for larger grids). Float32 steps as HF's numpy code; sin/cos rounded from double.
void resampler_pos_embed(int64_t h, int64_t w, int64_t embed_dim, float* pe);

class Resampler {
 public:
  explicit Resampler(std::shared_ptr<const Mmproj> mmproj);

  // x: [h*w, kv_dim] (the tower's post-LN output); out: [query_num, embed_dim].
  void forward(const float* x, int64_t h, int64_t w, float* out, ThreadPool& pool);

  // Wall seconds of the last forward's phases (bench/cpp/bench_vision_ops.cpp breakdown):
  //   kv: x W_kv^T;  ln_pe: LN_kv and the position rows;  kv_proj: K and V (projected), or the
  //   fold's products (scores, P kv, per-head Wv);  attention: attention_full (projected) or the
  //   fold's softmax and kv^T;  out: attn_out, LN_post and proj.
  struct Phases {
    double kv = 0, ln_pe = 0, kv_proj = 0, attention = 0, out = 0;
    double total() const { return kv + ln_pe + kv_proj + attention + out; }
  };
  const Phases& phases() const { return phases_; }
  bool folded() const { return use_fold(); }  // the attention form forward() takes

 private:
  void reserve(int64_t n, bool fold);
  void prepare_queries(ThreadPool& pool);
  void prepare_folded(ThreadPool& pool);
  bool use_fold() const;
  bool fold_bf16() const;  // the fold's two n-token products on bf16 dot products
  void attend_folded(int64_t n, ThreadPool& pool);     // kv_, kpe_ -> attn_ (tmp_ as scratch)
  void attend_projected(int64_t n, ThreadPool& pool);  // kv_, kpe_ -> attn_ (tmp_, v_ as K, V)

  std::shared_ptr<const Mmproj> m_;
  std::vector<float> omega_;   // sin-cos frequencies, D/4
  std::vector<float> q_proj_;  // LN_q(query) Wq^T + bq: depends on weights only, computed once
  // qk_[h * Q + i] = (LN_q(query_i) Wq_h^T + bq_h) Wk_h / sqrt(head_dim), [n_heads * Q, D]: the
  // queries pulled through the key projection once (they and Wk are weights), see attend_folded().
  std::vector<float> qk_;
  int64_t capacity_ = 0;
  std::vector<float> kv_, kpe_, tmp_;          // [n, D]; tmp_: x W_kv^T, then kv^T [D, n] or K
  std::vector<float> v_;                       // [n, D] V (projected path only)
  std::vector<float> scores_;                  // [n_heads * Q, n]
  std::vector<float> pv_;                      // [n_heads * Q, D]: P_h kv per head
  std::vector<uint16_t> kpe_b_, kvt_b_;        // bf16 fold: kpe [n, D], kv^T [D, n] as bf16
  std::vector<float> table_w_, table_h_;       // [w, D/2], [h, D/2] sin|cos halves
  int64_t table_for_h_ = 0, table_for_w_ = 0;  // the grid the tables hold
  std::vector<float> attn_, o_;                // [query_num, D]
  std::vector<float> attn_scratch_;            // attention_full's packed heads (projected path)
  Phases phases_;
};

}  // namespace model
}  // namespace minicpmv
