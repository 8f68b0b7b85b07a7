// Driver of the bf16 dot-product matmul (bf16_dot.h): rounds the activations to bf16 once per call,
// then splits the weight rows across the pool in blocks of 64 (the kernel's row tile: 64 rows x
// 128 columns packed per chunk stay in L1 while every token streams past).
#include "kernels/bf16_dot.h"

#include <algorithm>
#include <string>
#include <vector>

#include "minicpmv/error.h"
#include "quant/f16.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"

namespace minicpmv {
namespace kernels {

bool bf16_dot_available() {
#if defined(MINICPMV_X86)
  const cpu::Features& f = cpu::features();
  return f.avx512_bf16 && isa_available(Isa::Avx512) && active_isa() == Isa::Avx512;
#else
  return false;
#endif
}

namespace {

void check(const Weight& W, const float* X, int64_t n, float* Y) {
  if (W.empty()) throw InvalidArgument("matmul_bf16_dot: empty weight");
  if (W.type() != DType::BF16)
    throw InvalidArgument(std::string("matmul_bf16_dot: weights must be bf16, got ") + type_name(W.type()));
  if (n > 0 && (!X || !Y)) throw InvalidArgument("matmul_bf16_dot: null activation or output");
}

}  // namespace

void matmul_bf16_dot_ref(const Weight& W, const float* X, int64_t n, float* Y) {
  check(W, X, n, Y);
  const int64_t rows = W.rows(), cols = W.cols();
  const uint8_t* w = static_cast<const uint8_t*>(W.data());
  std::vector<float> xr(static_cast<size_t>(cols));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t k = 0; k < cols; ++k) xr[k] = bf16_to_fp32(fp32_to_bf16(X[t * cols + k]));
    for (int64_t r = 0; r < rows; ++r) {
      const uint16_t* wr = reinterpret_cast<const uint16_t*>(w + r * W.row_bytes());
      float acc = 0.f;
      // vdpbf16ps order: the odd element of each pair, then the even one (both products exact)
      for (int64_t k = 0; k < cols; k += 2) {
        if (k + 1 < cols) acc += bf16_to_fp32(wr[k + 1]) * xr[k + 1];
        acc += bf16_to_fp32(wr[k]) * xr[k];
      }
      Y[t * rows + r] = acc;
    }
  }
}

void matmul_bf16_dot(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool) {
  check(W, X, n, Y);
  if (!bf16_dot_available())
    throw InvalidArgument("matmul_bf16_dot: this CPU has no AVX512_BF16 (or the avx512 path is not active)");
  if (n <= 0) return;
#if defined(MINICPMV_X86)
  const int64_t rows = W.rows(), cols = W.cols();
  const size_t xbs = static_cast<size_t>((cols + 31) & ~int64_t(31));  // even, 64-byte rows
  thread_local std::vector<uint16_t> xb;
  if (xb.size() < xbs * static_cast<size_t>(n)) xb.resize(xbs * static_cast<size_t>(n));
  // (xb is thread_local: the lambda, which may run on pool threads, must use this thread's buffer)
  uint16_t* base = xb.data();
  auto round_rows = [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      round_bf16_avx512(X + t * cols, base + t * xbs, cols);
      std::fill(base + t * xbs + cols, base + (t + 1) * xbs, uint16_t(0));
    }
  };
  const int nth = pool.size();
  if (nth > 1 && n >= 2 * nth && n * cols >= (1 << 16)) pool.parallel_for(n, 1, round_rows);
  else round_rows(0, n);
  const uint8_t* w = static_cast<const uint8_t*>(W.data());
  const size_t ws = W.row_bytes();
  const uint16_t* xbc = base;
  auto run_rows = [&](int64_t b, int64_t e) { gemm_bf16_dot_avx512(cols, w + b * ws, ws, e - b, xbc, xbs, n, Y + b, rows); };
  int64_t grain = 64;
  while (grain > 16 && (rows + grain - 1) / grain < 4 * nth) grain /= 2;
  if (nth == 1 || rows <= grain) {
    for (int64_t b = 0; b < rows; b += grain) run_rows(b, std::min(rows, b + grain));
  } else {
    pool.parallel_for(rows, grain, run_rows);
  }
#endif
}

}  // namespace kernels
}  // namespace minicpmv
