// The matmul driver: checks arguments, quantizes the activations once per call into a scratch
// buffer, and splits the work across the pool. The per-ISA kernels (kernel_set.h) do the math.
//
// Work split:
//  - decode (few tokens): memory-bound, so rows are cut into contiguous chunks (a few per thread,
//    handed out dynamically) and each weight row is streamed exactly once.
//  - prefill (many tokens): compute-bound. A task is a block of weight rows small enough to stay
//    in L2 (prefill_block_bytes); the kernel sweeps all tokens over it in register tiles, so each weight
//    byte comes from DRAM once per call and from L2 once per token tile. (Also with one thread:
//    one call over all rows would stream the whole matrix from DRAM per token tile, 2.5x slower.)
// Weights are used in place (GGUF mapping): no repacked copy is kept beside them (issue 8: one copy
// of the model in memory). The one repacked layout, Q8Rows16 (packed_q8.h), replaces a converted
// copy the vision encoder makes at load; its products run in packed_q8.cpp.
#include "kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/kernel_set.h"
#include "kernels/packed_q8.h"
#include "minicpmv/error.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"

namespace minicpmv {
namespace kernels {
namespace {

// Prefill row-block weight budget: 3/4 of the per-core L2 (the rest holds the token tile's
// activations), 256 KiB .. 1 MiB; 256 KiB where the size is unknown. On a 1 MiB L2 (Zen 4) the
// larger block lets a 16-token activation tile serve 3-4 row tiles instead of 1 for the
// 18944-column ffn_down: Q4_K 157 -> 220 GOP/s.
size_t prefill_block_bytes() {
  static const size_t bytes = [] {
    size_t l2 = 0;
    if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r")) {
      unsigned long v = 0;
      char unit = 0;
      if (std::fscanf(f, "%lu%c", &v, &unit) >= 1) l2 = (unit == 'M' ? v << 20 : unit == 'K' ? v << 10 : v);
      std::fclose(f);
    }
    return l2 ? std::clamp<size_t>(l2 / 4 * 3, 256u << 10, 1u << 20) : size_t(256u << 10);
  }();
  return bytes;
}

bool isa_supported(Isa isa) {
  const cpu::Features& f = cpu::features();
  switch (isa) {
    case Isa::Ref: return true;
#if defined(MINICPMV_X86)
    case Isa::Avx2: return f.avx2 && f.fma && f.f16c && f.bmi2;
    // The avx512 path uses vpdpbusd (VNNI) throughout; AVX512_BF16 is not required (see avx512.cpp).
    case Isa::Avx512:
      return f.avx2 && f.fma && f.f16c && f.bmi2 && f.avx512f && f.avx512bw && f.avx512vl &&
             f.avx512dq && f.avx512_vnni;
#endif
#if defined(MINICPMV_ARM)
    case Isa::Neon: return f.neon;
    case Isa::Dotprod: return f.neon && f.asimddp;
    case Isa::I8mm: return f.neon && f.asimddp && f.i8mm;
#endif
    default: return false;
  }
}

const KernelSet& kernel_set(Isa isa) {
  static KernelSet sets[6];
  static std::once_flag once;
  std::call_once(once, [] {
    fill_ref(sets[0]);
#if defined(MINICPMV_X86)
    fill_avx2(sets[1]);
    fill_avx512(sets[2]);
#endif
#if defined(MINICPMV_ARM)
    fill_neon(sets[3]);
    fill_dotprod(sets[4]);
    fill_i8mm(sets[5]);
#endif
  });
  return sets[static_cast<int>(isa)];
}

Isa parse_isa(const std::string& s) {
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::Dotprod, Isa::I8mm})
    if (s == isa_name(i)) return i;
  throw InvalidArgument("MINICPMV_ISA=" + s + ": unknown kernel path (ref, avx2, avx512, neon, dotprod, i8mm)");
}

void require_supported(Isa isa) {
  if (!isa_supported(isa))
    throw InvalidArgument(std::string("kernel path '") + isa_name(isa) + "' is not supported by this CPU");
}

std::atomic<int> g_isa{-1};

Isa current_isa() {
  int v = g_isa.load(std::memory_order_acquire);
  if (v >= 0) return static_cast<Isa>(v);
  Isa isa = best_isa();
  if (const char* env = std::getenv("MINICPMV_ISA")) {
    if (*env) {
      isa = parse_isa(env);
      require_supported(isa);
    }
  }
  g_isa.store(static_cast<int>(isa), std::memory_order_release);
  return isa;
}

// MINICPMV_GEMV=0 turns the single-token kernels (KernelSet::gemv) off, so decode runs the gemm
// tiles: for before / after comparisons (bench_matvec flips it between calls, so it is read per
// call: ~0.1 us, only on n == 1 calls that have a gemv kernel; a 7B decode token makes ~200).
bool gemv_enabled() {
  const char* e = std::getenv("MINICPMV_GEMV");
  return !(e && e[0] == '0' && e[1] == 0);
}

// Scratch for the quantized activations: grows once, per calling thread, 64-byte aligned.
uint8_t* scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t(63));
}

// The kernel, activation quantizer and activation row stride matmul uses for one weight.
// Below this many tokens the single-token kernels run once per token (beam search's few rows per
// step), over row blocks that fit in L2 so the weights come from DRAM once, for the first token.
// Each token's outputs are then the bits a single-token call gives (batched beams = sequential
// decoding). Speed, 3 beams of Q4_K_M at 2 threads (bench/bench_beam.py): 1.26x one beam at a
// time, about what the multi-token tiles gave (1.25x): the single-token kernels are
// instruction-bound near the L2 rate, so a 2nd token over L2 rows costs almost a 1st one. A
// 2-3-token gemv that unpacks each weight vector once is what would pay.
constexpr int64_t kFewTokens = 4;

struct KernelChoice {
  bool per_token = false;  // gemm is a single-token kernel, run once per token (run_gemm)
  GemmFn gemm = nullptr;
  QuantizeFn quant = nullptr;  // nullptr: F32 activations, X used in place
  size_t xs = 0;               // bytes between activation rows
};

KernelChoice choose_kernel(const KernelSet& ks, DType type, int64_t cols, int64_t n, bool gemv_on) {
  const int tid = static_cast<int>(type);
  const bool single = n < kFewTokens && ks.gemv[tid] != nullptr && gemv_on;
  KernelChoice k;
  k.gemm = single ? ks.gemv[tid] : ks.gemm[tid];
  k.per_token = single && n > 1;
  const ActKind kind = act_kind(type);
  k.xs = act_row_bytes(kind, cols);
  // Prefill: give each quantized activation row an odd number of 64-byte lines (3584 columns of
  // A8K: 4096 -> 4160 bytes). The 16-row tiles read the same offset of 8-16 token rows back to
  // back; at a 4 KiB stride those loads all map to one L1 set (8 ways) and evict each other
  // (a vpdpbusd loop over such rows ran at 0.47 of peak, 0.85 with the odd stride).
  if (kind != ActKind::F32 && n >= 4 && (k.xs / 64) % 2 == 0) k.xs += 64;
  if (kind != ActKind::F32)
    k.quant = single && ks.quantize_gemv[tid] ? ks.quantize_gemv[tid]
              : ks.quantize_type[tid]         ? ks.quantize_type[tid]
              : kind == ActKind::A8           ? ks.quantize_a8
                                              : ks.quantize_a8k;
  return k;
}

// gemm of kc over nrows rows for nx tokens; per_token: token by token over row blocks of about
// half the L2, so every token after the first reads the block from L2.
void run_gemm(const KernelChoice& kc, int64_t cols, const uint8_t* w, size_t ws, int64_t nrows, const uint8_t* xq,
              int64_t nx, float* y, size_t ys) {
  if (!kc.per_token) return kc.gemm(cols, w, ws, nrows, xq, kc.xs, nx, y, ys);
  const int64_t block = std::max<int64_t>(16, static_cast<int64_t>(prefill_block_bytes() / 2 / std::max<size_t>(ws, 1)) & ~int64_t(15));
  for (int64_t r0 = 0; r0 < nrows; r0 += block) {
    const int64_t nr = std::min(block, nrows - r0);
    for (int64_t t = 0; t < nx; ++t) kc.gemm(cols, w + r0 * ws, ws, nr, xq + t * kc.xs, kc.xs, 1, y + t * ys + r0, ys);
  }
}

// Decode (n < 4) row chunk: about `chunks` equal parts of the rows, a multiple of 16 rows.
int64_t decode_grain(int64_t rows, int64_t chunks) {
  const int64_t grain = (rows + chunks - 1) / chunks;
  return std::max<int64_t>(16, (grain + 15) & ~int64_t(15));
}

// Prefill row block: weights that fit in L2 (prefill_block_bytes), a multiple of 16 rows (the
// avx512 Q4_0/Q8_0 tile is 16 rows), 16..64.
int64_t prefill_grain(size_t row_bytes) {
  const int64_t grain = static_cast<int64_t>(prefill_block_bytes() / std::max<size_t>(row_bytes, 1));
  return std::clamp<int64_t>(grain & ~int64_t(15), 16, 64);
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Ref: return "ref";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
    case Isa::Dotprod: return "dotprod";
    case Isa::I8mm: return "i8mm";
  }
  return "?";
}

Isa best_isa() {
  for (Isa i : {Isa::Avx512, Isa::Avx2, Isa::I8mm, Isa::Dotprod, Isa::Neon})
    if (isa_supported(i)) return i;
  return Isa::Ref;
}

Isa active_isa() { return current_isa(); }

void set_isa(Isa isa) {
  require_supported(isa);
  g_isa.store(static_cast<int>(isa), std::memory_order_release);
}

bool isa_available(Isa isa) { return isa_supported(isa); }

std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::Dotprod, Isa::I8mm})
    if (isa_supported(i)) v.push_back(i);
  return v;
}

Isa isa_from_name(const std::string& name) {
  Isa isa = parse_isa(name);
  return isa;
}

void quantize_activation_row(Isa isa, ActKind kind, const float* x, uint8_t* dst, int64_t cols) {
  require_supported(isa);
  const KernelSet& ks = kernel_set(isa);
  (kind == ActKind::A8 ? ks.quantize_a8 : ks.quantize_a8k)(x, dst, cols);
}

const KernelSet& kernel_set_for(Isa isa) { return kernel_set(isa); }

bool matmul_supports(DType type) {
  const int id = static_cast<int>(type);
  return id >= 0 && id < kNumTypes && kernel_set(Isa::Ref).gemm[id] != nullptr;
}

Weight Weight::view(DType type, int64_t rows, int64_t cols, const void* data) {
  if (!matmul_supports(type))
    throw InvalidArgument(std::string("matmul: weight type ") + type_name(type) + " has no kernel");
  const int64_t bs = type_traits(type).block_size;
  if (rows <= 0 || cols <= 0 || cols % bs != 0)
    throw InvalidArgument("matmul: weight shape " + std::to_string(rows) + " x " + std::to_string(cols) +
                          " is not valid for " + type_name(type) + " (cols must be a positive multiple of " +
                          std::to_string(bs) + ")");
  if (!data) throw InvalidArgument("matmul: weight data is null");
  Weight w;
  w.type_ = type;
  w.rows_ = rows;
  w.cols_ = cols;
  w.data_ = data;
  w.row_bytes_ = row_size(type, cols);
  return w;
}

Weight Weight::repacked(DType type, Layout layout, int64_t rows, int64_t cols, std::shared_ptr<void> bytes) {
  if (layout == Layout::Rows || !bytes) throw InvalidArgument("matmul: a repacked weight needs a packed layout and bytes");
  if (layout == Layout::Q8Rows16 && type != DType::Q8_0)
    throw InvalidArgument(std::string("matmul: the Q8Rows16 layout holds Q8_0, not ") + type_name(type));
  if (rows <= 0 || cols <= 0 || cols % 32 != 0)
    throw InvalidArgument("matmul: repacked weight shape " + std::to_string(rows) + " x " + std::to_string(cols) +
                          " is not valid");
  Weight w;
  w.type_ = type;
  w.layout_ = layout;
  w.rows_ = rows;
  w.cols_ = cols;
  w.data_ = bytes.get();
  w.row_bytes_ = 0;
  w.owned_ = std::move(bytes);
  return w;
}

void matmul(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool) {
  matmul(W, X, n, Y, pool, current_isa());
}

void matmul(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool, Isa isa) {
  if (W.empty()) throw InvalidArgument("matmul: empty weight");
  if (n <= 0) return;
  if (!X || !Y) throw InvalidArgument("matmul: null activation or output");
  require_supported(isa);
  if (W.layout() == Layout::Q8Rows16) return packed::matmul(W, X, n, Y, pool, isa);
  const KernelSet& ks = kernel_set(isa);
  const int64_t rows = W.rows(), cols = W.cols();
  const KernelChoice kc = choose_kernel(ks, W.type(), cols, n, gemv_enabled());
  const size_t xs = kc.xs;

  const uint8_t* xq = reinterpret_cast<const uint8_t*>(X);
  if (kc.quant) {
    uint8_t* buf = scratch(xs * static_cast<size_t>(n));
    const QuantizeFn q = kc.quant;
    auto quant_rows = [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) q(X + t * cols, buf + t * xs, cols);
    };
    if (n >= 2 * pool.size() && n * cols >= (1 << 16)) pool.parallel_for(n, 1, quant_rows);
    else quant_rows(0, n);
    xq = buf;
  }

  const uint8_t* w = static_cast<const uint8_t*>(W.data());
  const size_t ws = W.row_bytes();
  const int nth = pool.size();
  int64_t grain;
  if (n < 4) {
    // Decode: ~4 contiguous chunks per thread so a slower core does not hold the others up.
    grain = decode_grain(rows, 4 * nth);
  } else {
    // Prefill: L2-sized row blocks; fewer rows per block if that would leave threads idle.
    grain = prefill_grain(ws);
    while (grain > 16 && (rows + grain - 1) / grain < 4 * nth) grain = std::max<int64_t>(16, (grain / 2) & ~int64_t(15));
  }
  auto run_rows = [&](int64_t b, int64_t e) { run_gemm(kc, cols, w + b * ws, ws, e - b, xq, n, Y + b, rows); };
  // Small work (< 64K multiply-adds, e.g. a tiny model's projections) runs on the calling thread:
  // waking the pool costs more than the product (a tiny model spent 44 ms per token in wake-ups
  // on a loaded machine).
  const bool small = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(n) < 65536.0;
  if (nth == 1 || rows <= grain || small) {
    // still block by block: in prefill the block is what keeps the weights in L2 across tokens
    for (int64_t b = 0; b < rows; b += grain) run_rows(b, std::min(rows, b + grain));
  } else {
    pool.parallel_for(rows, grain, run_rows);
  }
}

void matmul_multi(const MatmulOut* outs, int count, const float* X, int64_t n, ThreadPool& pool) {
  matmul_multi(outs, count, X, n, pool, current_isa());
}

// The work is a list of row chunks, weight after weight; chunk c of weight i covers rows
// [(c - first[i]) * grain[i], + grain[i]). Every chunk starts at a multiple of 16 rows of its
// weight, like matmul's, so each row goes through the same kernel tiles and gives the same bits.
void matmul_multi(const MatmulOut* outs, int count, const float* X, int64_t n, ThreadPool& pool, Isa isa) {
  if (!outs || count <= 0) throw InvalidArgument("matmul_multi: no weights given");
  if (count > kMaxMatmulMulti)
    throw InvalidArgument("matmul_multi: " + std::to_string(count) + " weights, at most " +
                          std::to_string(kMaxMatmulMulti));
  for (int i = 0; i < count; ++i) {
    if (!outs[i].w || outs[i].w->empty()) throw InvalidArgument("matmul_multi: weight " + std::to_string(i) + " is empty");
    if (!outs[i].y) throw InvalidArgument("matmul_multi: output " + std::to_string(i) + " is null");
    if (outs[i].w->cols() != outs[0].w->cols())
      throw InvalidArgument("matmul_multi: weight " + std::to_string(i) + " has " + std::to_string(outs[i].w->cols()) +
                            " columns, weight 0 has " + std::to_string(outs[0].w->cols()));
  }
  if (n <= 0) return;
  if (!X) throw InvalidArgument("matmul_multi: null activation");
  require_supported(isa);
  int n_packed = 0;
  for (int i = 0; i < count; ++i) n_packed += outs[i].w->layout() == Layout::Q8Rows16;
  if (n_packed == count) return packed::matmul_multi(outs, count, X, n, pool, isa);
  if (n_packed > 0) {  // mixed layouts: one call each (same bits as matmul)
    for (int i = 0; i < count; ++i) matmul(*outs[i].w, X, n, outs[i].y, pool, isa);
    return;
  }
  const KernelSet& ks = kernel_set(isa);
  const int64_t cols = outs[0].w->cols();
  const bool gemv_on = gemv_enabled();

  // Plain data, captured by one pointer: the std::function of the pool job then needs no heap.
  struct Part {
    KernelChoice kc;
    int slot;  // activation buffer, -1 = X itself (F32)
    const uint8_t* w;
    size_t ws;
    int64_t rows, grain, first;
    float* y;
  };
  struct Plan {
    Part part[kMaxMatmulMulti];
    int count;
    QuantizeFn quant[kMaxMatmulMulti];
    size_t xs[kMaxMatmulMulti];
    uint8_t* xq[kMaxMatmulMulti];
    int n_quant;
    int64_t n_chunks, n, cols;
    const float* X;
  } plan;
  plan.count = count;
  plan.n_quant = 0;
  plan.n = n;
  plan.cols = cols;
  plan.X = X;

  // One activation buffer per distinct (quantizer, row stride): e.g. in decode a Q4_K weight
  // with a single-token kernel and a Q6_K weight without one may want different code orders.
  size_t bytes = 0;
  double work = 0;
  for (int i = 0; i < count; ++i) {
    const Weight& W = *outs[i].w;
    Part& p = plan.part[i];
    p.kc = choose_kernel(ks, W.type(), cols, n, gemv_on);
    p.w = static_cast<const uint8_t*>(W.data());
    p.ws = W.row_bytes();
    p.rows = W.rows();
    p.y = outs[i].y;
    p.slot = -1;
    if (p.kc.quant) {
      for (int j = 0; j < plan.n_quant && p.slot < 0; ++j)
        if (plan.quant[j] == p.kc.quant && plan.xs[j] == p.kc.xs) p.slot = j;
      if (p.slot < 0) {
        p.slot = plan.n_quant++;
        plan.quant[p.slot] = p.kc.quant;
        plan.xs[p.slot] = p.kc.xs;
        bytes += p.kc.xs * static_cast<size_t>(n);
      }
    }
    work += static_cast<double>(p.rows) * static_cast<double>(cols) * static_cast<double>(n);
  }

  if (plan.n_quant > 0) {
    uint8_t* buf = scratch(bytes);
    for (int j = 0; j < plan.n_quant; ++j) {
      plan.xq[j] = buf;
      buf += plan.xs[j] * static_cast<size_t>(n);
    }
    const Plan* pp = &plan;
    auto quant_rows = [pp](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        for (int j = 0; j < pp->n_quant; ++j)
          pp->quant[j](pp->X + t * pp->cols, pp->xq[j] + t * pp->xs[j], pp->cols);
    };
    if (n >= 2 * pool.size() && n * cols * plan.n_quant >= (1 << 16)) pool.parallel_for(n, 1, quant_rows);
    else quant_rows(0, n);
  }

  const int nth = pool.size();
  if (n < 4) {
    // Decode: ~4 chunks per thread over all the weights' bytes together (a Q6_K row costs more
    // than a Q4_K one), so a slower core does not hold the others up.
    size_t total = 0;
    for (int i = 0; i < count; ++i) total += plan.part[i].ws * static_cast<size_t>(plan.part[i].rows);
    const size_t chunk_bytes = std::max<size_t>(1, (total + 4 * nth - 1) / (4 * nth));
    for (int i = 0; i < count; ++i) {
      Part& p = plan.part[i];
      const int64_t chunks = static_cast<int64_t>((p.ws * static_cast<size_t>(p.rows) + chunk_bytes - 1) / chunk_bytes);
      p.grain = decode_grain(p.rows, std::max<int64_t>(1, chunks));
    }
  } else {
    for (int i = 0; i < count; ++i) plan.part[i].grain = prefill_grain(plan.part[i].ws);
  }
  auto count_chunks = [&] {
    int64_t c = 0;
    for (int i = 0; i < count; ++i) {
      plan.part[i].first = c;
      c += (plan.part[i].rows + plan.part[i].grain - 1) / plan.part[i].grain;
    }
    return c;
  };
  plan.n_chunks = count_chunks();
  // Prefill: smaller blocks if there are too few to keep every thread busy.
  while (n >= 4 && plan.n_chunks < 4 * nth) {
    bool changed = false;
    for (int i = 0; i < count; ++i) {
      int64_t& g = plan.part[i].grain;
      if (g > 16) g = std::max<int64_t>(16, (g / 2) & ~int64_t(15)), changed = true;
    }
    if (!changed) break;
    plan.n_chunks = count_chunks();
  }

  const Plan* pp = &plan;
  auto run_chunks = [pp](int64_t b, int64_t e) {
    int i = 0;
    for (int64_t c = b; c < e; ++c) {
      while (i + 1 < pp->count && c >= pp->part[i + 1].first) ++i;
      const Part& p = pp->part[i];
      const int64_t r0 = (c - p.first) * p.grain, r1 = std::min(p.rows, r0 + p.grain);
      const uint8_t* xq = p.slot >= 0 ? pp->xq[p.slot] : reinterpret_cast<const uint8_t*>(pp->X);
      run_gemm(p.kc, pp->cols, p.w + r0 * p.ws, p.ws, r1 - r0, xq, pp->n, p.y + r0, p.rows);
    }
  };
  // Small work runs on the calling thread (see matmul).
  if (nth == 1 || plan.n_chunks == 1 || work < 65536.0) run_chunks(0, plan.n_chunks);
  else pool.parallel_for(plan.n_chunks, 1, run_chunks);
}

}  // namespace kernels
}  // namespace minicpmv
