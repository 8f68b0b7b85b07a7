#include "model/attention_full.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/matmul.h"
#include "kernels/vision_attention.h"
#include "minicpmv/error.h"
#include "quant/f16.h"
#include "runtime/cpu.h"
#include "ops/fast_math.h"
#include "quant/quant.h"
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

int64_t round_up32(int64_t x) { return (x + 31) / 32 * 32; }

// The int8 variant: the same two phases with Q8_0-packed heads. K_h is [n_kv, dp] (dp = d rounded
// up to 32, zero columns), V_h^T is [d, nkp] (nkp = n_kv rounded up, zero columns); query rows
// are padded to dp and probability rows to nkp with zeros so the padding adds nothing.
void attention_int8(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                    ThreadPool& pool, std::vector<float>& scratch) {
  const int64_t d = s.head_dim, nk = s.n_kv, heads = s.n_heads;
  const int64_t dp = round_up32(d), nkp = round_up32(nk);
  const size_t k_bytes = row_size(DType::Q8_0, dp) * static_cast<size_t>(nk);
  const size_t v_bytes = row_size(DType::Q8_0, nkp) * static_cast<size_t>(d);
  const size_t per_head = k_bytes + v_bytes;
  const size_t floats = (per_head * static_cast<size_t>(heads) + sizeof(float) - 1) / sizeof(float);
  if (scratch.size() < floats) scratch.resize(floats);
  uint8_t* packed = reinterpret_cast<uint8_t*>(scratch.data());

  pool.parallel_for(heads, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> tmp(static_cast<size_t>(std::max(nk * dp, d * nkp)));
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t col = h * d;
      uint8_t* kq = packed + per_head * static_cast<size_t>(h);
      std::fill(tmp.begin(), tmp.end(), 0.0f);
      for (int64_t j = 0; j < nk; ++j) std::memcpy(tmp.data() + j * dp, k + j * s.k_stride + col, sizeof(float) * d);
      ops::quantize_q8_0_fast(tmp.data(), kq, nk * dp);  // rows of whole blocks: one run
      std::fill(tmp.begin(), tmp.end(), 0.0f);
      for (int64_t j0 = 0; j0 < nk; j0 += 16)
        for (int64_t c = 0; c < d; ++c)
          for (int64_t j = j0; j < std::min(nk, j0 + 16); ++j) tmp[c * nkp + j] = v[j * s.v_stride + col + c];
      ops::quantize_q8_0_fast(tmp.data(), kq + k_bytes, d * nkp);
    }
  });

  const int64_t blocks = (s.n_q + kQueryBlock - 1) / kQueryBlock;
  pool.parallel_for(heads * blocks, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> buf;
    const size_t need = static_cast<size_t>(kQueryBlock * (dp + d + nk + nkp + 1));
    if (buf.size() < need) buf.resize(need);
    float* qb = buf.data();
    float* ob = qb + kQueryBlock * dp;
    float* sc = ob + kQueryBlock * d;
    float* pb = sc + kQueryBlock * nk;  // probability rows padded to nkp (when nk != nkp)
    float* inv = pb + kQueryBlock * nkp;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t h = t / blocks, i0 = (t % blocks) * kQueryBlock, col = h * d;
      const int64_t rows = std::min(kQueryBlock, s.n_q - i0);
      const uint8_t* kq = packed + per_head * static_cast<size_t>(h);
      const kernels::Weight K = kernels::Weight::view(DType::Q8_0, nk, dp, kq);
      const kernels::Weight Vt = kernels::Weight::view(DType::Q8_0, d, nkp, kq + k_bytes);
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = q + (i0 + r) * s.q_stride + col;
        for (int64_t c = 0; c < d; ++c) qb[r * dp + c] = src[c] * s.scale;
        for (int64_t c = d; c < dp; ++c) qb[r * dp + c] = 0.0f;
      }
      kernels::matmul(K, qb, rows, sc, inline_pool());
      float* p = nk == nkp ? sc : pb;
      for (int64_t r = 0; r < rows; ++r) {
        float* row = sc + r * nk;
        inv[r] = 1.0f / ops::exp_shift_sum_fast(row, nk, ops::max_fast(row, nk));
        if (p != sc) {
          std::memcpy(p + r * nkp, row, sizeof(float) * nk);
          for (int64_t j = nk; j < nkp; ++j) p[r * nkp + j] = 0.0f;
        }
      }
      kernels::matmul(Vt, p, rows, ob, inline_pool());
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = out + (i0 + r) * s.out_stride + col;
        for (int64_t c = 0; c < d; ++c) dst[c] = ob[r * d + c] * inv[r];
      }
    }
  });
}

}  // namespace

void attention_full_flash(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                          ThreadPool& pool, std::vector<float>& scratch, kernels::Isa isa) {
  namespace va = kernels::vattn;
  va::BlockFn block = nullptr;
  if (isa == kernels::Isa::Ref) block = s.bf16 ? va::block_bf16_ref : va::block_ref;
#if defined(MINICPMV_X86)
  if (isa == kernels::Isa::Avx2 && !s.bf16 && kernels::isa_available(isa)) block = va::block_avx2;
  if (isa == kernels::Isa::Avx512 && kernels::isa_available(isa)) {
    if (!s.bf16)
      block = va::block_avx512;
    else if (cpu::features().avx512_bf16)
      block = va::block_avx512_bf16;
  }
#endif
  if (!block)
    throw InvalidArgument(std::string("attention_full: no ") + (s.bf16 ? "bf16 " : "") +
                          "flash attention kernel for path " + kernels::isa_name(isa) + " on this CPU");
  if (s.n_q <= 0 || s.n_heads <= 0 || s.n_kv <= 0) return;
  const int64_t d = s.head_dim, nk = s.n_kv, heads = s.n_heads;
  const int64_t nkp = va::padded_keys(nk), dp = va::padded_dim(d), d2 = va::half_dim(d);
  // per head: K^T then V, f32 or bf16 (counted in floats; both bf16 parts are whole floats)
  const size_t kt_floats = s.bf16 ? static_cast<size_t>(nkp * d2) : static_cast<size_t>(nkp * d);
  const size_t per_head = kt_floats + (s.bf16 ? static_cast<size_t>(nkp * dp / 2) : static_cast<size_t>(nkp * dp));
  if (scratch.size() < per_head * heads) scratch.resize(per_head * heads);
  float* packed = scratch.data();

  auto pack_bf16 = va::pack_keys_bf16;  // the SIMD conversions with the SIMD kernel, the scalar with its twin
  auto to_bf16 = va::queries_bf16;
#if defined(MINICPMV_X86)
  if (isa == kernels::Isa::Avx512) {
    pack_bf16 = va::pack_keys_bf16_avx512;
    to_bf16 = va::queries_bf16_avx512;
  }
#endif
  const int64_t tiles = nkp / 16;
  pool.parallel_for(heads * tiles, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t h = t / tiles, j0 = (t % tiles) * 16, col = h * d;
      float* kt = packed + per_head * h;
      if (s.bf16)
        pack_bf16(k + col, s.k_stride, v + col, s.v_stride, nk, d, j0, j0 + 16, reinterpret_cast<uint16_t*>(kt),
                  reinterpret_cast<uint16_t*>(kt + kt_floats));
      else
        va::pack_keys(k + col, s.k_stride, v + col, s.v_stride, nk, d, j0, j0 + 16, kt, kt + kt_floats);
    }
  });

  const int64_t blocks = (s.n_q + va::kRows - 1) / va::kRows;
  pool.parallel_for(heads * blocks, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> buf;
    const size_t need = static_cast<size_t>(va::scratch_floats(d) + va::kRows * (d + 1));
    if (buf.size() < need) buf.resize(need);
    float* qb = buf.data() + va::scratch_floats(d);
    uint32_t* q2 = reinterpret_cast<uint32_t*>(qb);  // bf16 variant: d2 pairs per row
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t h = t / blocks, i0 = (t % blocks) * va::kRows, col = h * d;
      va::Block b;
      b.rows = std::min(va::kRows, s.n_q - i0);
      if (s.bf16) {
        to_bf16(q + i0 * s.q_stride + col, s.q_stride, b.rows, d, s.scale, q2);
      } else {
        for (int64_t r = 0; r < b.rows; ++r) {
          const float* src = q + (i0 + r) * s.q_stride + col;
          for (int64_t c = 0; c < d; ++c) qb[r * d + c] = src[c] * s.scale;
        }
      }
      b.q = qb;
      b.q2 = q2;
      b.kt = packed + per_head * h;
      b.vp = b.kt + kt_floats;
      b.ktb = reinterpret_cast<const uint16_t*>(b.kt);
      b.vpb = reinterpret_cast<const uint16_t*>(b.vp);
      b.n_kv = nk;
      b.d = d;
      b.out = out + i0 * s.out_stride + col;
      b.out_stride = s.out_stride;
      block(b, buf.data());
    }
  });
}

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
  if (s.int8) return attention_int8(s, q, k, v, out, pool, scratch);
  // MINICPMV_ATTENTION_FLASH=0 keeps the matmul path (benchmarks: bench/peer_vision.py --before)
  const char* now = std::getenv("MINICPMV_ATTENTION_FLASH");
  const kernels::Isa isa = kernels::active_isa();
  if (s.flash && !(now && now[0] == '0') && (isa == kernels::Isa::Avx512 || isa == kernels::Isa::Avx2)) {
    // MINICPMV_ATTENTION_BF16=0 keeps the f32 kernel where the models ask for bf16 (accuracy and
    // speed comparisons: bench/bench_vision.py --accuracy)
    const char* bf = std::getenv("MINICPMV_ATTENTION_BF16");
    AttentionShape f = s;
    f.bf16 = s.bf16 && !(bf && bf[0] == '0') && isa == kernels::Isa::Avx512 && cpu::features().avx512_bf16;
    return attention_full_flash(f, q, k, v, out, pool, scratch, isa);
  }
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
