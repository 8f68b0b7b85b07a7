// Float-weight kernels (F32 / F16 / BF16 x f32 activations) on every kernel path, and the opt-in
// bf16 dot-product matmul, against a float64 product of the same (exactly widened) values.
// Tolerance: any f32 summation order of cols products satisfies |y - y64| <= gamma * sum|w x|
// with gamma = cols * 2^-24 (Higham's gamma_n bound, products exact in f32 for f16 / bf16 inputs,
// one rounding each for f32 inputs); a wrong index, a dropped tail or a missed tile gives errors of
// the size of single terms, far above it.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/bf16_dot.h"
#include "kernels/matmul.h"
#include "quant/f16.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;
using kernels::Weight;

namespace {

struct Case {
  int64_t rows, cols, n;
};

// Shapes: odd rows (row-group and 64-row tile tails), odd / non-multiple-of-16 columns (masked
// tails, k-chunk tails), token counts across the dot-tile / packed switch (16) and the 6-token tile.
const Case kCases[] = {
    {1, 32, 1},    {5, 40, 3},     {17, 33, 16},   {64, 128, 17},  {67, 130, 23},   {130, 1152, 40},
    {16, 4304, 7}, {48, 4304, 19}, {33, 300, 40},  {200, 96, 36},  {3, 1000, 6},    {80, 257, 12},
    {96, 72, 38},  {129, 64, 31},  {7, 4304, 40},  {65, 1152, 16},
};

std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols, std::mt19937& rng, std::vector<double>& wd) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint8_t> buf(static_cast<size_t>(rows * cols) * (t == DType::F32 ? 4 : 2));
  wd.resize(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = nd(rng);
    if (t == DType::F32) {
      reinterpret_cast<float*>(buf.data())[i] = v;
      wd[i] = v;
    } else if (t == DType::F16) {
      const uint16_t h = fp32_to_fp16(v);
      reinterpret_cast<uint16_t*>(buf.data())[i] = h;
      wd[i] = fp16_to_fp32(h);
    } else {
      const uint16_t h = fp32_to_bf16(v);
      reinterpret_cast<uint16_t*>(buf.data())[i] = h;
      wd[i] = bf16_to_fp32(h);
    }
  }
  return buf;
}

// max over outputs of |y - y64| / (gamma * sum|w x|); <= 1 passes.
double worst_ratio(const std::vector<double>& wd, const std::vector<float>& xv, const std::vector<float>& y, int64_t rows,
                   int64_t cols, int64_t n) {
  const double gamma = static_cast<double>(cols) * std::ldexp(1.0, -24);
  double worst = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double p = wd[r * cols + k] * static_cast<double>(xv[t * cols + k]);
        s += p;
        a += std::fabs(p);
      }
      const double e = std::fabs(static_cast<double>(y[t * rows + r]) - s);
      worst = std::max(worst, e / (gamma * a + 1e-30));
    }
  return worst;
}

}  // namespace

TEST(float_kernels_every_path_match_float64) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  ThreadPool pool1(1), pool2(2);
  for (kernels::Isa isa : kernels::available_isas()) {
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      for (const Case& c : kCases) {
        std::vector<double> wd;
        std::vector<uint8_t> w = make_weights(t, c.rows, c.cols, rng, wd);
        std::vector<float> x(static_cast<size_t>(c.n * c.cols)), y(static_cast<size_t>(c.n * c.rows), NAN);
        for (auto& v : x) v = nd(rng);
        const Weight W = Weight::view(t, c.rows, c.cols, w.data());
        for (ThreadPool* pool : {&pool1, &pool2}) {
          std::fill(y.begin(), y.end(), NAN);
          kernels::matmul(W, x.data(), c.n, y.data(), *pool, isa);
          const double r = worst_ratio(wd, x, y, c.rows, c.cols, c.n);
          CHECK_MSG(r <= 1.0, "%s %s %lldx%lld n=%lld threads=%d: error %.3g x the f32 reordering bound",
                    kernels::isa_name(isa), type_name(t), (long long)c.rows, (long long)c.cols, (long long)c.n,
                    pool->size(), r);
        }
      }
    }
  }
}

TEST(bf16_dot_matches_float64_of_rounded_activations) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  ThreadPool pool1(1), pool2(2);
  for (const Case& c : kCases) {
    std::vector<double> wd;
    std::vector<uint8_t> w = make_weights(DType::BF16, c.rows, c.cols, rng, wd);
    std::vector<float> x(static_cast<size_t>(c.n * c.cols)), xr(x.size()), y(static_cast<size_t>(c.n * c.rows));
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = nd(rng);
      xr[i] = bf16_to_fp32(fp32_to_bf16(x[i]));  // what the kernel multiplies
    }
    const Weight W = Weight::view(DType::BF16, c.rows, c.cols, w.data());
    kernels::matmul_bf16_dot_ref(W, x.data(), c.n, y.data());
    double r = worst_ratio(wd, xr, y, c.rows, c.cols, c.n);
    CHECK_MSG(r <= 1.0, "ref %lldx%lld n=%lld: %.3g x bound", (long long)c.rows, (long long)c.cols, (long long)c.n, r);
    if (!kernels::bf16_dot_available()) {
      CHECK_THROWS(kernels::matmul_bf16_dot(W, x.data(), c.n, y.data(), pool1));
      continue;
    }
    for (ThreadPool* pool : {&pool1, &pool2}) {
      std::fill(y.begin(), y.end(), NAN);
      kernels::matmul_bf16_dot(W, x.data(), c.n, y.data(), *pool);
      r = worst_ratio(wd, xr, y, c.rows, c.cols, c.n);
      CHECK_MSG(r <= 1.0, "avx512 %lldx%lld n=%lld threads=%d: %.3g x bound", (long long)c.rows, (long long)c.cols,
                (long long)c.n, pool->size(), r);
    }
  }
  if (!kernels::bf16_dot_available()) std::printf("  (no AVX512_BF16 here: checked that matmul_bf16_dot refuses)\n");
}

TEST(bf16_dot_rejects_other_types) {
  std::vector<uint16_t> w(64, 0x3c00);
  std::vector<float> x(32, 1.f), y(2);
  ThreadPool pool(1);
  const Weight W = Weight::view(DType::F16, 2, 32, w.data());
  CHECK_THROWS(kernels::matmul_bf16_dot(W, x.data(), 1, y.data(), pool));
  CHECK_THROWS(kernels::matmul_bf16_dot_ref(W, x.data(), 1, y.data()));
}

TEST_MAIN()
