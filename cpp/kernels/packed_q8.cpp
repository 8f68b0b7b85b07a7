// Packing and the driver of the packed Q8_0 GEMM (kernels/packed_q8.h).
//
// Work split: the panels of every weight of the call are cut into chunks (a few per thread, handed
// out dynamically); a chunk sweeps the tokens in blocks whose activations fit in L2 and, per block,
// its panels one by one over the block's 16-token groups (each panel's weights are read once per
// token block, the block's activations once per panel).
#include "kernels/packed_q8.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "kernels/kernel_set.h"
#include "minicpmv/error.h"
#include "quant/f16.h"
#include "runtime/threadpool.h"

namespace minicpmv::kernels::packed {

namespace {

std::shared_ptr<void> aligned_bytes(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

// slot 0: the call's activation groups (calling thread); slot 1: one token's A8 row (any thread)
uint8_t* scratch(int slot, size_t bytes) {
  thread_local std::vector<uint8_t> bufs[2];
  std::vector<uint8_t>& buf = bufs[slot];
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t(63));
}

// Activation bytes per token block: about a quarter of a 1 MiB L2 (the rest: a panel, the outputs).
constexpr size_t kTokenBlockBytes = 256 << 10;

}  // namespace

Weight pack_q8_0(const Weight& w, ThreadPool& pool) {
  if (w.empty() || w.type() != DType::Q8_0 || w.layout() != Layout::Rows)
    throw InvalidArgument("pack_q8_0: expects a Q8_0 weight in the row layout");
  const int64_t rows = w.rows(), cols = w.cols(), nb = cols / 32;
  const size_t rb = w.row_bytes(), pb = panel_bytes(cols);
  std::shared_ptr<void> bytes = aligned_bytes(packed_bytes(rows, cols));
  uint8_t* dst = static_cast<uint8_t*>(bytes.get());
  const uint8_t* src = static_cast<const uint8_t*>(w.data());
  pool.parallel_for(panels(rows), 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* o = dst + p * pb + b * kBlockBytes;
        float d[kPanelRows];
        for (int L = 0; L < kPanelRows; ++L) {
          const int64_t r = p * kPanelRows + L;
          if (r >= rows) {  // past the matrix: code 0 (+128), scale 0
            for (int k = 0; k < 8; ++k) std::memset(o + 64 * k + 4 * L, 0x80, 4);
            d[L] = 0.0f;
            continue;
          }
          const uint8_t* blk = src + r * rb + b * 34;  // block_q8_0: f16 d, 32 x int8
          uint16_t h;
          std::memcpy(&h, blk, 2);
          d[L] = fp16_to_fp32(h);
          for (int k = 0; k < 8; ++k)
            for (int j = 0; j < 4; ++j) o[64 * k + 4 * L + j] = static_cast<uint8_t>(blk[2 + 4 * k + j] ^ 0x80);
        }
        std::memcpy(o + 512, d, sizeof(d));
      }
    }
  });
  return Weight::repacked(DType::Q8_0, Layout::Q8Rows16, rows, cols, std::move(bytes));
}

void quantize_groups(const float* X, int64_t n, int64_t cols, uint8_t* A, ThreadPool& pool, Isa isa) {
  const QuantizeFn quant = kernel_set_for(isa).quantize_a8;
  const int64_t nb = cols / 32, groups = (n + kGroupTokens - 1) / kGroupTokens;
  const size_t gb = act_group_bytes(cols), rb = act_row_bytes(ActKind::A8, cols);
  auto run = [&](int64_t g0, int64_t g1) {
    uint8_t* row = scratch(1, rb);  // one token in the A8 layout: qs | d | s
    for (int64_t g = g0; g < g1; ++g) {
      uint8_t* grp = A + g * gb;
      for (int64_t t = 0; t < kGroupTokens; ++t) {
        const int64_t i = g * kGroupTokens + t;
        if (i >= n) {  // padding tokens: zero codes, d = 0, c = 0
          for (int64_t b = 0; b < nb; ++b) {
            uint8_t* ab = grp + b * kActBlockBytes;
            std::memset(ab + 32 * t, 0, 32);
            std::memset(ab + 512 + 4 * t, 0, 4);
            std::memset(ab + 576 + 4 * t, 0, 4);
          }
          continue;
        }
        quant(X + i * cols, row, cols);
        const A8Row a(row, cols);
        for (int64_t b = 0; b < nb; ++b) {
          uint8_t* ab = grp + b * kActBlockBytes;
          std::memcpy(ab + 32 * t, a.qs + 32 * b, 32);
          std::memcpy(ab + 512 + 4 * t, a.d + b, 4);
          // s = d * sum(q) exactly, so sum(q) = s / d exactly; d rounds to 0 in f16 only for
          // blocks of tiny values, whose codes are summed directly
          int32_t sum = 0;
          if (a.d[b] != 0.0f) {
            sum = static_cast<int32_t>(std::lrint(a.s[b] / a.d[b]));
          } else {
            for (int j = 0; j < 32; ++j) sum += a.qs[32 * b + j];
          }
          const int32_t c = -128 * sum;
          std::memcpy(ab + 576 + 4 * t, &c, 4);
        }
      }
    }
  };
  if (groups >= 2 && n * cols >= (1 << 16)) pool.parallel_for(groups, 1, run);
  else run(0, groups);
}

void matmul(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool, Isa isa) {
  const MatmulOut out{&W, Y};
  packed::matmul_multi(&out, 1, X, n, pool, isa);
}

void matmul_multi(const MatmulOut* outs, int count, const float* X, int64_t n, ThreadPool& pool, Isa isa) {
  const int64_t cols = outs[0].w->cols(), nb = cols / 32;
  const int64_t groups = (n + kGroupTokens - 1) / kGroupTokens;
  const size_t gb = act_group_bytes(cols), pb = panel_bytes(cols);
  uint8_t* A = scratch(0, gb * static_cast<size_t>(groups));
  quantize_groups(X, n, cols, A, pool, isa);
#if defined(MINICPMV_X86)
  const TileFn tile = isa == Isa::Avx512 ? gemm_tile_avx512 : gemm_tile_ref;
#else
  const TileFn tile = gemm_tile_ref;
#endif
  const int64_t block_groups = std::max<int64_t>(1, static_cast<int64_t>(kTokenBlockBytes / gb));

  // chunks of panels, weight after weight: ~4 per thread and weight, at least 1 panel
  struct Chunk {
    int w;
    int64_t p0, p1;
  };
  std::vector<Chunk> chunks;
  const int64_t per = 4 * pool.size();
  for (int i = 0; i < count; ++i) {
    const int64_t np = panels(outs[i].w->rows());
    const int64_t step = std::max<int64_t>(1, (np + per - 1) / per);
    for (int64_t p = 0; p < np; p += step) chunks.push_back({i, p, std::min(np, p + step)});
  }
  auto run = [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      const Chunk& ch = chunks[static_cast<size_t>(ci)];
      const Weight& w = *outs[ch.w].w;
      const int64_t rows = w.rows();
      const uint8_t* base = static_cast<const uint8_t*>(w.data());
      float* y = outs[ch.w].y;
      for (int64_t g0 = 0; g0 < groups; g0 += block_groups) {
        const int64_t g1 = std::min(groups, g0 + block_groups);
        for (int64_t p = ch.p0; p < ch.p1; ++p) {
          const int64_t r0 = p * kPanelRows, nr = std::min(kPanelRows, rows - r0);
          for (int64_t g = g0; g < g1; ++g) {
            const int64_t t0 = g * kGroupTokens, nt = std::min(kGroupTokens, n - t0);
            tile(base + p * pb, nb, A + g * gb, nt, y + t0 * rows + r0, static_cast<size_t>(rows), nr);
          }
        }
      }
    }
  };
  const double macs = static_cast<double>(n) * static_cast<double>(cols) * static_cast<double>(outs[0].w->rows());
  if (pool.size() == 1 || chunks.size() == 1 || macs < 65536.0) run(0, static_cast<int64_t>(chunks.size()));
  else pool.parallel_for(static_cast<int64_t>(chunks.size()), 1, run);
}

}  // namespace minicpmv::kernels::packed
