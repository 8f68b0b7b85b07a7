// Dispatch and threading of the grouped-query attention (attention.h); the block kernels live in
// ref/attention_ref.cpp and the per-ISA files (x86/attention_*.cpp, arm/attention_neon.cpp).
#include "kernels/attention.h"

#include <algorithm>
#include <string>
#include <vector>

#include "minicpmv/error.h"
#include "runtime/threadpool.h"

namespace minicpmv {
namespace kernels {
namespace {

void require(Isa isa) {
  if (!isa_available(isa))
    throw InvalidArgument(std::string("attention: kernel path '") + isa_name(isa) + "' is not supported by this CPU");
}

attn::BlockFn block_fn(Isa isa) {
  switch (isa) {
#if defined(MINICPMV_X86)
    case Isa::Avx2: return attn::block_avx2;
    case Isa::Avx512: return attn::block_avx512;
#endif
#if defined(MINICPMV_ARM)
    case Isa::Neon: case Isa::Dotprod: case Isa::I8mm: return attn::block_neon;
#endif
    default: return attn::block_ref;
  }
}

attn::F16RowFn f16_row_fn(Isa isa) {
  switch (isa) {
#if defined(MINICPMV_X86)
    case Isa::Avx2: return attn::f16_row_avx2;
    case Isa::Avx512: return attn::f16_row_avx512;
#endif
#if defined(MINICPMV_ARM)
    case Isa::Neon: case Isa::Dotprod: case Isa::I8mm: return attn::f16_row_neon;
#endif
    default: return attn::f16_row_ref;
  }
}

}  // namespace

void gqa_attention(const GqaArgs& a, ThreadPool& pool) { gqa_attention(a, pool, active_isa()); }

void gqa_attention(const GqaArgs& a, ThreadPool& pool, Isa isa) {
  require(isa);
  auto bad = [](const std::string& what) { return InvalidArgument("attention: " + what); };
  if (a.head_dim <= 0) throw bad("head_dim " + std::to_string(a.head_dim) + " must be positive");
  if (a.n_head <= 0 || a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0)
    throw bad("n_head " + std::to_string(a.n_head) + " must be a positive multiple of n_head_kv " +
              std::to_string(a.n_head_kv));
  if (a.kv_type != DType::F16 && a.kv_type != DType::F32)
    throw bad(std::string("KV cache type ") + type_name(a.kv_type) + " is not supported (f16 or f32)");
  if (a.n_q < 0 || a.n_past < 0) throw bad("n_q and n_past must be >= 0");
  if (a.n_q == 0) return;
  if (!a.q || !a.out || !a.k || !a.v) throw bad("null q, out, k or v");
  const bool interleaved = a.kv_head_stride == 0;
  if (a.q_stride < a.n_head * a.head_dim || a.out_stride < a.n_head * a.head_dim ||
      a.kv_stride < (interleaved ? a.n_head_kv * a.head_dim : a.head_dim) ||
      (!interleaved && a.kv_head_stride < a.head_dim))
    throw bad("row strides are smaller than the heads they hold");

  // The SIMD blocks tile a head with whole vectors of up to 16 floats; other head sizes (no Qwen2
  // or SigLIP model has one) run the scalar block.
  const bool ref = isa == Isa::Ref || a.head_dim % 16 != 0;
  const attn::BlockFn fn = ref ? attn::block_ref : block_fn(isa);
  const int64_t group = a.n_head / a.n_head_kv;
  const int64_t qb = std::min(attn::kQBlock, a.n_q);
  const int64_t n_blocks = (a.n_q + qb - 1) / qb;
  const int64_t n_items = a.n_head_kv * n_blocks;
  const int64_t floats = attn::scratch_floats(ref, group * qb, a.head_dim, a.n_past + a.n_q);
  pool.parallel_for(n_items, 1, [&](int64_t begin, int64_t end) {
    // Per thread, kept across calls: allocated on the first (and a longer-context ref) call only.
    thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < floats)
      scratch.resize(std::max<size_t>(floats, 2 * scratch.size()));
    for (int64_t it = begin; it < end; ++it) {
      // Later query blocks see more positions: hand them out first so the short ones fill in.
      const int64_t blk = n_blocks - 1 - it / a.n_head_kv, kv_head = it % a.n_head_kv;
      fn(a, kv_head, blk * qb, std::min(a.n_q, (blk + 1) * qb), scratch.data());
    }
  });
}

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) { fp32_to_fp16_row(x, y, n, active_isa()); }

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n, Isa isa) {
  require(isa);
  f16_row_fn(isa)(x, y, n);
}

}  // namespace kernels
}  // namespace minicpmv
