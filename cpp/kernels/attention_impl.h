// Internal to kernels/: the SIMD attention block (see attention.h), written once over a vector
// traits class V that each ISA file provides (in an anonymous namespace, so every translation unit
// has its own copy compiled with its own flags). V has:
//   using F; W (lanes); kRows (query heads per register block, 4), kPos (positions per score pass),
//   kCols (head vectors per accumulate pass); zero(), set1(x), load(p), store(p, v), fmadd(a, b, c) = a*b + c, mul,
//   max, hsum, hmax, exp (e^x, 0 below -87.3), pow2i, min, add, sub, load_f16(p) (W halves -> W floats).
//
// Per work item (one KV head, query positions [i0, i1), rows r = (i - i0) * group + g):
//   for each tile of kTile cached positions t0 .. t0 + T:
//     K tile, V tile -> f32 scratch once (f16 caches; an f32 cache is read in place)
//     S[r][t] = scale * q_r . K[t]           (kRows heads x kPos positions per register block)
//     m' = max(m_r, max_t S), acc_r *= e^(m_r - m'), l_r = l_r e^(m_r - m') + sum_t e^(S - m')
//     acc_r += sum_t e^(S[r][t] - m') V[t]   (kRows heads x kCols vectors per register block)
//   out_r = acc_r / l_r
// Causality: row r sees t < n_past + i + 1; masked scores are -inf, whose exp is exactly 0.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/attention.h"

namespace minicpmv {
namespace kernels {
namespace {  // each ISA file compiles its own copy with its own flags

// Scores of NR query rows (the heads of one query position: same K rows, same visible count tv)
// against tv positions of the tile: s_r[t] = scale * q_r . K[t]. V::kPos positions per pass, so
// each loaded K vector serves NR rows and each q vector kPos positions.
template <class V, int NR>
void scores_rows(const float* const* q, const float* K, int64_t ks, int64_t tv, int64_t nc, float scale,
                 float* const* s) {
  using F = typename V::F;
  constexpr int W = V::W, P = V::kPos;
  int64_t t = 0;
  for (; t + P <= tv; t += P) {
    F c[NR][P];
    for (int r = 0; r < NR; ++r)
      for (int p = 0; p < P; ++p) c[r][p] = V::zero();
    const float* k0 = K + t * ks;
    for (int64_t j = 0; j < nc; ++j) {
      F kv[P];
      for (int p = 0; p < P; ++p) kv[p] = V::load(k0 + p * ks + j * W);
      for (int r = 0; r < NR; ++r) {
        const F qv = V::load(q[r] + j * W);
        for (int p = 0; p < P; ++p) c[r][p] = V::fmadd(qv, kv[p], c[r][p]);
      }
    }
    for (int r = 0; r < NR; ++r)
      for (int p = 0; p < P; ++p) s[r][t + p] = V::hsum(c[r][p]) * scale;
  }
  for (; t < tv; ++t) {
    F c[NR];
    for (int r = 0; r < NR; ++r) c[r] = V::zero();
    for (int64_t j = 0; j < nc; ++j) {
      const F kv = V::load(K + t * ks + j * W);
      for (int r = 0; r < NR; ++r) c[r] = V::fmadd(V::load(q[r] + j * W), kv, c[r]);
    }
    for (int r = 0; r < NR; ++r) s[r][t] = V::hsum(c[r]) * scale;
  }
}

// acc_r += sum_{t < tv} p_r[t] V[t] for NR rows: V::kCols vectors of the head at a time held for
// all NR rows in registers, so each loaded V vector serves NR rows.
template <class V, int NR, int C>
void accumulate_cols(const float* const* p, const float* Vt, int64_t ks, int64_t tv, int64_t j_begin, int64_t j_end,
                     float* const* acc) {
  using F = typename V::F;
  constexpr int W = V::W;
  for (int64_t j0 = j_begin; j0 + C <= j_end; j0 += C) {
    F o[NR][C];
    for (int r = 0; r < NR; ++r)
      for (int c = 0; c < C; ++c) o[r][c] = V::load(acc[r] + (j0 + c) * W);
    for (int64_t u = 0; u < tv; ++u) {
      F vv[C];
      for (int c = 0; c < C; ++c) vv[c] = V::load(Vt + u * ks + (j0 + c) * W);
      for (int r = 0; r < NR; ++r) {
        const F pr = V::set1(p[r][u]);
        for (int c = 0; c < C; ++c) o[r][c] = V::fmadd(pr, vv[c], o[r][c]);
      }
    }
    for (int r = 0; r < NR; ++r)
      for (int c = 0; c < C; ++c) V::store(acc[r] + (j0 + c) * W, o[r][c]);
  }
}

template <class V, int NR>
void accumulate_rows(const float* const* p, const float* Vt, int64_t ks, int64_t tv, int64_t nc, float* const* acc) {
  constexpr int C = V::kCols;
  const int64_t nc_main = nc / C * C;
  accumulate_cols<V, NR, C>(p, Vt, ks, tv, 0, nc_main, acc);
  if (nc_main < nc) accumulate_cols<V, NR, 1>(p, Vt, ks, tv, nc_main, nc, acc);  // heads of < kCols * W floats
}

template <class V>
void attention_block(const GqaArgs& a, int64_t kv_head, int64_t i0, int64_t i1, float* scratch) {
  using F = typename V::F;
  using namespace attn;
  constexpr int W = V::W, RB = V::kRows;
  static_assert(16 % W == 0 && kTile % W == 0, "vectors must tile 16 floats");
  const int64_t hd = a.head_dim, group = a.n_head / a.n_head_kv;
  const int64_t n_rows = (i1 - i0) * group;
  const int64_t nc = hd / W;  // vectors per head row
  const bool f16 = a.kv_type == DType::F16;
  const float neg_inf = -std::numeric_limits<float>::infinity();

  float* base = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63));
  float* kf = base;                   // [kTile x hd]
  float* vf = kf + kTile * hd;        // [kTile x hd]
  float* S = vf + kTile * hd;         // [n_rows x kTile]
  float* acc = S + n_rows * kTile;    // [n_rows x hd]
  float* m = acc + n_rows * hd;       // [n_rows]
  float* l = m + n_rows;              // [n_rows]
  for (int64_t r = 0; r < n_rows; ++r) m[r] = neg_inf, l[r] = 0.0f;
  std::fill(acc, acc + n_rows * hd, 0.0f);

  const int64_t n_seen = a.n_past + i1;  // positions the last query row sees
  for (int64_t t0 = 0; t0 < n_seen; t0 += kTile) {
    const int64_t nt = std::min(kTile, n_seen - t0);
    const float* K;
    const float* Vt;
    int64_t ks;
    if (f16) {
      const uint16_t* k16 = static_cast<const uint16_t*>(a.k) + t0 * a.kv_stride + kv_head * a.head_stride();
      const uint16_t* v16 = static_cast<const uint16_t*>(a.v) + t0 * a.kv_stride + kv_head * a.head_stride();
      for (int64_t t = 0; t < nt; ++t)
        for (int64_t c = 0; c < nc; ++c) {
          V::store(kf + t * hd + c * W, V::load_f16(k16 + t * a.kv_stride + c * W));
          V::store(vf + t * hd + c * W, V::load_f16(v16 + t * a.kv_stride + c * W));
        }
      K = kf, Vt = vf, ks = hd;
    } else {
      K = static_cast<const float*>(a.k) + t0 * a.kv_stride + kv_head * a.head_stride();
      Vt = static_cast<const float*>(a.v) + t0 * a.kv_stride + kv_head * a.head_stride();
      ks = a.kv_stride;
    }

    for (int64_t i = i0; i < i1; ++i) {
      const int64_t tv = std::min(nt, a.n_past + i + 1 - t0);  // visible positions of this tile
      if (tv <= 0) continue;
      const int64_t tp = (tv + W - 1) / W * W;  // <= kTile (a multiple of every W)
      // The group's heads of query position i: rows r0 .. r0 + group - 1, in blocks of RB.
      const int64_t r0 = (i - i0) * group;
      for (int64_t g0 = 0; g0 < group; g0 += RB) {
        const int nr = static_cast<int>(std::min<int64_t>(RB, group - g0));
        const float* qs[RB];
        float* ss[RB];
        float* as[RB];
        for (int k = 0; k < nr; ++k) {
          const int64_t r = r0 + g0 + k;
          qs[k] = a.q + i * a.q_stride + (kv_head * group + g0 + k) * hd;
          ss[k] = S + r * kTile;
          as[k] = acc + r * hd;
        }
        switch (nr) {
          case 1: scores_rows<V, 1>(qs, K, ks, tv, nc, a.scale, ss); break;
          case 2: scores_rows<V, 2>(qs, K, ks, tv, nc, a.scale, ss); break;
          case 3: scores_rows<V, 3>(qs, K, ks, tv, nc, a.scale, ss); break;
          default: scores_rows<V, RB>(qs, K, ks, tv, nc, a.scale, ss); break;
        }
        // online softmax update, row by row
        for (int k = 0; k < nr; ++k) {
          const int64_t r = r0 + g0 + k;
          float* s = ss[k];
          for (int64_t t = tv; t < tp; ++t) s[t] = neg_inf;
          F mx = V::load(s);
          for (int64_t u = W; u < tp; u += W) mx = V::max(mx, V::load(s + u));
          const float m_new = std::max(m[r], V::hmax(mx));
          if (m_new > m[r] && l[r] > 0.0f) {
            const float corr = std::exp(m[r] - m_new);
            l[r] *= corr;
            const F cv = V::set1(corr);
            for (int64_t c = 0; c < nc; ++c) V::store(as[k] + c * W, V::mul(V::load(as[k] + c * W), cv));
          }
          m[r] = m_new;
          const F shift = V::set1(m_new);
          F sum = V::zero();
          for (int64_t u = 0; u < tp; u += W) {
            const F p = V::exp(V::sub(V::load(s + u), shift));
            V::store(s + u, p);
            sum = V::add(sum, p);
          }
          l[r] += V::hsum(sum);
        }
        const float* const* ps = ss;
        switch (nr) {
          case 1: accumulate_rows<V, 1>(ps, Vt, ks, tv, nc, as); break;
          case 2: accumulate_rows<V, 2>(ps, Vt, ks, tv, nc, as); break;
          case 3: accumulate_rows<V, 3>(ps, Vt, ks, tv, nc, as); break;
          default: accumulate_rows<V, RB>(ps, Vt, ks, tv, nc, as); break;
        }
      }
    }
  }

  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t i = i0 + r / group, h = kv_head * group + r % group;
    float* out = a.out + i * a.out_stride + h * hd;
    const F inv = V::set1(1.0f / l[r]);
    for (int64_t c = 0; c < nc; ++c) V::store(out + c * W, V::mul(V::load(acc + r * hd + c * W), inv));
  }
}

// e^x for the traits' vectors: e^x = 2^k e^f, k = round(x / ln 2), f = x - k ln 2 (ln 2 split in
// two for an exact reduction), e^f by its degree-6 Taylor polynomial (|f| <= ln2/2: remainder
// < 1.3e-7 relative); 2^k built in the exponent bits by the ISA's `pow2i`. The same scheme as
// ops/fast_math.cpp (relative error < 4e-7). Inputs are clamped to [-87.3, 88.3]; lanes below
// -87.3 (masked scores, -inf) are returned as exactly 0 by the ISA wrapper.
template <class V>
typename V::F exp_poly(typename V::F x) {
  using F = typename V::F;
  x = V::max(x, V::set1(-87.3f));
  x = V::min(x, V::set1(88.3f));
  const F magic = V::set1(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F kb = V::fmadd(x, V::set1(1.44269504088896341f), magic);
  const F kf = V::sub(kb, magic);
  F r = V::fmadd(kf, V::set1(-0.693145751953125f), x);
  r = V::fmadd(kf, V::set1(-1.428606765330187e-06f), r);
  F p = V::set1(1.0f / 720.0f);
  p = V::fmadd(p, r, V::set1(1.0f / 120.0f));
  p = V::fmadd(p, r, V::set1(1.0f / 24.0f));
  p = V::fmadd(p, r, V::set1(1.0f / 6.0f));
  p = V::fmadd(p, r, V::set1(0.5f));
  p = V::fmadd(p, r, V::set1(1.0f));
  p = V::fmadd(p, r, V::set1(1.0f));
  return V::mul(p, V::pow2i(kb));
}

}  // namespace
}  // namespace kernels
}  // namespace minicpmv
