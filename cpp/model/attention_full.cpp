#include "model/attention_full.h"

#include <algorithm>
#include <cstring>

#include "kernels/matmul.h"
#include "ops/fast_math.h"
#include "runtime/threadpool.h"

namespace minicpmv::model {
namespace {

// Query rows per task: a score block of 64 x n_kv floats (256 KiB for a 1024-token slice) stays in
// L2 between the two products, and 16 heads x 16 blocks give the pool plenty of tasks to balance.
constexpr int64_t kQueryBlock = 64;

// The products of one task run on the thread that took it: a pool of one runs matmul inline, so
// the (head, query block) tasks spread over the real pool without nesting it.
ThreadPool& inline_pool() {
  thread_local ThreadPool one(1);
  return one;
}

}  // namespace

// Two phases over the pool:
//  1. pack every head once: K_h [n_kv, d] (rows copied) and V_h^T [d, n_kv] (transposed in tiles
//     of 16 keys so every write fills whole cache lines of a V^T row);
//  2. one task per (head, block of query rows): S = (scale Q_blk) K_h^T, E = exp(S - row max),
//     O = (E V_h) / row sums of E, both
//     products in kernels::matmul with the packed head as an f32 "weight" (the ISA-dispatched
//     f32 kernels: f32 scores keep the softmax exact to float rounding).
// Per task only a [block, n_kv] score block is live, never [n_q, n_kv] per head.
void attention_full(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                    ThreadPool& pool, std::vector<float>& scratch) {
  if (s.n_q <= 0 || s.n_heads <= 0 || s.n_kv <= 0) return;
  const int64_t d = s.head_dim, nk = s.n_kv, heads = s.n_heads;
  const size_t per_head = static_cast<size_t>(2 * nk * d);  // K_h | V_h^T
  if (scratch.size() < per_head * heads) scratch.resize(per_head * heads);
  float* packed = scratch.data();

  const int64_t tiles = (nk + 15) / 16;
  pool.parallel_for(heads * tiles, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t h = t / tiles, j0 = (t % tiles) * 16, j1 = std::min(nk, j0 + 16), col = h * d;
      float* kh = packed + per_head * h;
      float* vt = kh + nk * d;
      for (int64_t j = j0; j < j1; ++j) std::memcpy(kh + j * d, k + j * s.k_stride + col, sizeof(float) * d);
      for (int64_t c = 0; c < d; ++c)
        for (int64_t j = j0; j < j1; ++j) vt[c * nk + j] = v[j * s.v_stride + col + c];
    }
  });

  const int64_t blocks = (s.n_q + kQueryBlock - 1) / kQueryBlock;
  pool.parallel_for(heads * blocks, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> buf;
    const size_t need = static_cast<size_t>(kQueryBlock * (2 * d + nk + 1));
    if (buf.size() < need) buf.resize(need);
    float* qb = buf.data();
    float* ob = qb + kQueryBlock * d;
    float* sc = ob + kQueryBlock * d;
    float* inv = sc + kQueryBlock * nk;  // 1 / softmax denominator per row
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t h = t / blocks, i0 = (t % blocks) * kQueryBlock, col = h * d;
      const int64_t rows = std::min(kQueryBlock, s.n_q - i0);
      const float* kh = packed + per_head * h;
      const kernels::Weight K = kernels::Weight::view(DType::F32, nk, d, kh);
      const kernels::Weight Vt = kernels::Weight::view(DType::F32, d, nk, kh + nk * d);
      // The scale goes into the query copy, the softmax normalization into the output copy
      // (d values per row instead of n_kv): exp(S - max) is all that touches the score block.
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = q + (i0 + r) * s.q_stride + col;
        for (int64_t c = 0; c < d; ++c) qb[r * d + c] = src[c] * s.scale;
      }
      kernels::matmul(K, qb, rows, sc, inline_pool());
      for (int64_t r = 0; r < rows; ++r) {
        float* row = sc + r * nk;
        inv[r] = 1.0f / ops::exp_shift_sum_fast(row, nk, ops::max_fast(row, nk));
      }
      kernels::matmul(Vt, sc, rows, ob, inline_pool());
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = out + (i0 + r) * s.out_stride + col;
        for (int64_t c = 0; c < d; ++c) dst[c] = ob[r * d + c] * inv[r];
      }
    }
  });
}

}  // namespace minicpmv::model
