#include "model/attention_full.h"

#include <algorithm>
#include <cstring>

#include "kernels/matmul.h"
#include "ops/fast_math.h"
#include "runtime/threadpool.h"

namespace minicpmv::model {
namespace {

// Score rows computed at once: bounds the score block to ~4 MiB whatever the slice size.
constexpr int64_t kScoreFloats = int64_t(1) << 20;

}  // namespace

// Per head, both products go through kernels::matmul with the packed head as an f32 "weight"
// (S = Q_h K_h^T: K_h as [n_kv x d]; O = P V_h: V_h^T as [d x n_kv]), so attention runs on the
// same ISA-dispatched, multi-threaded kernels as the projections. Heads run one after another;
// each matmul spreads over the pool.
void attention_full(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                    ThreadPool& pool, std::vector<float>& scratch) {
  if (s.n_q <= 0 || s.n_heads <= 0 || s.n_kv <= 0) return;
  const int64_t d = s.head_dim, nk = s.n_kv;
  const int64_t block = std::clamp<int64_t>(kScoreFloats / nk, 16, s.n_q);

  // scratch: K_h [nk, d] | V_h^T [d, nk] | Q block [block, d] | S [block, nk] | O [block, d]
  const size_t need = static_cast<size_t>(2 * nk * d + 2 * block * d + block * nk);
  if (scratch.size() < need) scratch.resize(need);
  float* kh = scratch.data();
  float* vt = kh + nk * d;
  float* qb = vt + nk * d;
  float* sc = qb + block * d;
  float* ob = sc + block * nk;

  for (int64_t h = 0; h < s.n_heads; ++h) {
    const int64_t col = h * d;
    // K_h rows are copies; V_h^T is a transpose, done in tiles of 16 keys so every write fills
    // whole cache lines of a V^T row.
    pool.parallel_for((nk + 15) / 16, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * 16, j1 = std::min(nk, j0 + 16);
        for (int64_t j = j0; j < j1; ++j) std::memcpy(kh + j * d, k + j * s.k_stride + col, sizeof(float) * d);
        for (int64_t c = 0; c < d; ++c)
          for (int64_t j = j0; j < j1; ++j) vt[c * nk + j] = v[j * s.v_stride + col + c];
      }
    });
    const kernels::Weight K = kernels::Weight::view(DType::F32, nk, d, kh);
    const kernels::Weight Vt = kernels::Weight::view(DType::F32, d, nk, vt);

    for (int64_t i0 = 0; i0 < s.n_q; i0 += block) {
      const int64_t rows = std::min(block, s.n_q - i0);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(qb + r * d, q + (i0 + r) * s.q_stride + col, sizeof(float) * d);
      kernels::matmul(K, qb, rows, sc, pool);
      pool.parallel_for(rows, 4, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) ops::softmax_fast(sc + r * nk, nk, s.scale);
      });
      kernels::matmul(Vt, sc, rows, ob, pool);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(out + (i0 + r) * s.out_stride + col, ob + r * d, sizeof(float) * d);
    }
  }
}

}  // namespace minicpmv::model
