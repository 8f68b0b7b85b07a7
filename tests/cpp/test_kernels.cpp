// Every kernel path this CPU can run (x86: ref/avx2/avx512; aarch64 under qemu: neon/dotprod/
// i8mm) against the scalar reference kernels on random blocks, for every weight type, with odd
// row counts (tile tails), 1..several blocks of columns and token counts 1, 2, 3, 5, 7, 17, 31, 67.
//
// Tolerance: the int8 activations are produced by each path's quantizer, which must be
// bit-identical to the scalar one (checked separately), so paths differ only in the order of
// float accumulation: |y - y_ref| <= 2e-5 * B + 1e-30, with B = sum_j |w_j| |x_j| bounded from
// the generated scales (|w| <= wmax, |x| <= 1): B = cols * wmax. Accumulating a few thousand
// terms in f32 in different orders moves a result by ~1e-6 B at most; a wrong code, scale or
// block index moves it by ~B / cols or more.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernel_set.h"
#include "kernels/matmul.h"
#include "quant/blocks.h"
#include "quant/f16.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

namespace {

std::mt19937& rng() {
  static std::mt19937 g(1234);
  return g;
}
float uni(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng()); }
uint8_t byte() { return static_cast<uint8_t>(rng()() & 0xFF); }
uint16_t h(float v) { return fp32_to_fp16(v); }

// Random weights of `type`: random codes, scales in [-0.5, 0.5] (mins in [0, 0.5]); returns the
// byte rows and sets wmax to a bound on |w|.
std::vector<uint8_t> random_weights(DType type, int64_t rows, int64_t cols, float* wmax) {
  const size_t rb = row_size(type, cols);
  std::vector<uint8_t> w(rb * rows);
  for (auto& b : w) b = byte();
  const int64_t nblk = static_cast<int64_t>(w.size() / type_traits(type).type_size);
  const size_t ts = type_traits(type).type_size;
  auto put = [&](int64_t i, size_t off, uint16_t v) { std::memcpy(w.data() + i * ts + off, &v, 2); };
  switch (type) {
    case DType::F32: {
      float* f = reinterpret_cast<float*>(w.data());
      for (int64_t i = 0; i < rows * cols; ++i) f[i] = uni(-1, 1);
      *wmax = 1;
      break;
    }
    case DType::F16: case DType::BF16: {
      uint16_t* f = reinterpret_cast<uint16_t*>(w.data());
      for (int64_t i = 0; i < rows * cols; ++i) f[i] = type == DType::F16 ? h(uni(-1, 1)) : fp32_to_bf16(uni(-1, 1));
      *wmax = 1.01f;
      break;
    }
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0:
      for (int64_t i = 0; i < nblk; ++i) put(i, 0, h(uni(-0.5f, 0.5f)));
      *wmax = 0.5f * (type == DType::Q8_0 ? 128 : type == DType::Q5_0 ? 16 : 8);
      break;
    case DType::Q4_1: case DType::Q5_1:
      for (int64_t i = 0; i < nblk; ++i) put(i, 0, h(uni(-0.5f, 0.5f))), put(i, 2, h(uni(-0.5f, 0.5f)));
      *wmax = 0.5f * (type == DType::Q5_1 ? 32 : 16);
      break;
    case DType::Q4_K: case DType::Q5_K:
      for (int64_t i = 0; i < nblk; ++i) put(i, 0, h(uni(-0.05f, 0.05f))), put(i, 2, h(uni(0, 0.05f)));
      *wmax = 0.05f * 63 * (type == DType::Q5_K ? 32 : 16);
      break;
    case DType::Q6_K:
      for (int64_t i = 0; i < nblk; ++i) put(i, 208, h(uni(-0.01f, 0.01f)));
      *wmax = 0.01f * 128 * 64;
      break;
    default:
      break;
  }
  return w;
}

const DType kTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                        DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::vector<Isa> simd_paths() {
  std::vector<Isa> v;
  for (Isa i : available_isas())
    if (i != Isa::Ref) v.push_back(i);
  return v;
}

bool check_type(DType type, Isa isa, ThreadPool& pool) {
  const int64_t bs = type_traits(type).block_size;
  const int64_t unit = bs == 1 ? 1 : bs;
  // columns: 1..several blocks (plain types: odd counts to hit the SIMD tails)
  std::vector<int64_t> col_list = bs == 1 ? std::vector<int64_t>{1, 7, 16, 33, 100, 515}
                                          : std::vector<int64_t>{unit, 2 * unit, 3 * unit, 7 * unit};
  if (bs == 32) col_list.push_back(163 * 32);  // > one K chunk of the block kernels
  const int64_t ns[] = {1, 2, 3, 5, 7, 17, 31, 67};
  bool ok = true;
  for (int64_t cols : col_list) {
    const int64_t rows = cols > 1000 ? 21 : 37;  // 16-row tiles plus a partial one
    float wmax = 0;
    std::vector<uint8_t> w = random_weights(type, rows, cols, &wmax);
    Weight W = Weight::view(type, rows, cols, w.data());
    for (int64_t n : ns) {
      if (cols > 1000 && n > 17) continue;
      std::vector<float> x(n * cols), y(n * rows, 7.f), yr(n * rows, -7.f);
      for (auto& v : x) v = uni(-1, 1);
      matmul(W, x.data(), n, yr.data(), pool, Isa::Ref);
      matmul(W, x.data(), n, y.data(), pool, isa);
      const double tol = 2e-5 * cols * wmax + 1e-30;
      for (int64_t i = 0; i < n * rows; ++i) {
        const double err = std::fabs(double(y[i]) - double(yr[i]));
        if (!(err <= tol)) {
          std::printf("  %s %s rows=%lld cols=%lld n=%lld: y[%lld]=%.8g ref=%.8g (tol %.3g)\n", isa_name(isa),
                      type_name(type), (long long)rows, (long long)cols, (long long)n, (long long)i, y[i], yr[i], tol);
          ok = false;
          break;
        }
      }
      if (!ok) return false;
    }
  }
  return ok;
}

}  // namespace

TEST(isa_detection) {
  CHECK(isa_available(Isa::Ref));
  CHECK(isa_available(best_isa()));
  std::printf("  best=%s paths:", isa_name(best_isa()));
  for (Isa i : available_isas()) std::printf(" %s", isa_name(i));
  std::printf("\n");
#if defined(__x86_64__)
  const auto& f = cpu::features();
  CHECK(!(f.avx512f && !f.avx2));
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni) CHECK(best_isa() == Isa::Avx512);
  CHECK_THROWS(set_isa(Isa::Neon));
#endif
#if defined(__aarch64__)
  CHECK(isa_available(Isa::Neon));
  CHECK_THROWS(set_isa(Isa::Avx2));
#endif
  CHECK_THROWS(isa_from_name("sse9"));
}

// Each path's activation quantizers must give the scalar twin's bytes exactly (also ties).
TEST(activation_quantizers_match_ref) {
  const KernelSet* ref = nullptr;
  (void)ref;
  for (Isa isa : simd_paths()) {
    for (int kind = 0; kind < 2; ++kind) {
      const int64_t cols = 256 * 5;
      const ActKind k = kind == 0 ? ActKind::A8 : ActKind::A8K;
      const size_t rb = act_row_bytes(k, cols);
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<float> x(cols);
        for (auto& v : x) v = uni(-3, 3);
        if (trial % 3 == 1)  // exact ties x * iscale = k + 0.5 and repeated maxima of both signs
          for (int64_t j = 0; j < cols; ++j) x[j] = 0.5f * static_cast<float>(static_cast<int>(rng()() % 255) - 127);
        if (trial % 5 == 2) std::fill(x.begin() + 256, x.begin() + 512, 0.f);  // an all-zero block
        std::vector<uint8_t> a(rb, 0), b(rb, 0);
        (k == ActKind::A8 ? ref::quantize_a8 : ref::quantize_a8k)(x.data(), a.data(), cols);
        quantize_activation_row(isa, k, x.data(), b.data(), cols);
        const bool same = std::memcmp(a.data(), b.data(), rb) == 0;
        CHECK_MSG(same, "%s %s trial %d", isa_name(isa), kind == 0 ? "a8" : "a8k", trial);
        if (!same) break;
      }
    }
  }
}

// The decode-only activation quantizers (KernelSet::quantize_gemv) must give the scalar A8K
// bytes: same d and bsums, the same codes in their documented order (x86/avx512_gemv.cpp, Q4_K:
// per 128 codes the 32-code sub-blocks 4g, 4g + 2, 4g + 1, 4g + 3). Ties and a zero block too.
TEST(gemv_quantizers_match_ref) {
#if defined(MINICPMV_X86)
  if (!isa_available(Isa::Avx512)) return;
  KernelSet ks;
  fill_avx512(ks);
  const int q4k = static_cast<int>(DType::Q4_K);
  if (!ks.quantize_gemv[q4k]) return;
  const int64_t cols = 256 * 5;
  const size_t rb = act_row_bytes(ActKind::A8K, cols);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> x(cols);
    for (auto& v : x) v = uni(-3, 3);
    if (trial % 3 == 1)
      for (int64_t j = 0; j < cols; ++j) x[j] = 0.5f * static_cast<float>(static_cast<int>(rng()() % 255) - 127);
    if (trial % 5 == 2) std::fill(x.begin() + 256, x.begin() + 512, 0.f);
    std::vector<uint8_t> a(rb, 0), b(rb, 0), c(rb, 0);
    ref::quantize_a8k(x.data(), a.data(), cols);
    ks.quantize_gemv[q4k](x.data(), b.data(), cols);
    c = a;
    for (int64_t e = 0; e < cols; ++e) {  // the documented order
      const int64_t sb = e / 256, j = (e % 256) / 32, g = j / 4, jj = j % 4;
      c[256 * sb + 128 * g + 32 * ((jj >> 1) | ((jj & 1) << 1)) + e % 32] = a[e];
    }
    const bool same = std::memcmp(b.data(), c.data(), rb) == 0;
    CHECK_MSG(same, "q4_K gemv quantizer trial %d", trial);
    if (!same) break;
  }
#endif
}

TEST(every_type_every_path_matches_ref) {
  ThreadPool pool(2);
  for (Isa isa : simd_paths())
    for (DType t : kTypes) CHECK_MSG(check_type(t, isa, pool), "%s %s", isa_name(isa), type_name(t));
}

// The scalar reference itself against a direct float64 sum on Q8_0 (activation rounding bound:
// |err| <= sum_b sum_j |w_j| * 0.57 d_b, d_b = max|x_b|/127; see kernel_set.h).
TEST(ref_q8_0_against_float64) {
  ThreadPool pool(1);
  const int64_t rows = 5, cols = 96;
  float wmax;
  std::vector<uint8_t> w = random_weights(DType::Q8_0, rows, cols, &wmax);
  std::vector<float> x(cols);
  for (auto& v : x) v = uni(-1, 1);
  std::vector<float> y(rows);
  matmul(Weight::view(DType::Q8_0, rows, cols, w.data()), x.data(), 1, y.data(), pool, Isa::Ref);
  for (int64_t r = 0; r < rows; ++r) {
    double exact = 0, bound = 0;
    for (int64_t b = 0; b < cols / 32; ++b) {
      const block_q8_0* blk = reinterpret_cast<const block_q8_0*>(w.data() + r * row_size(DType::Q8_0, cols)) + b;
      double amax = 0;
      for (int j = 0; j < 32; ++j) {
        const double a = std::fabs(x[32 * b + j]);
        if (a > amax) amax = a;  // (std::fmax here trips a GCC 12 aarch64 vectorizer ICE)
      }
      for (int j = 0; j < 32; ++j) {
        const double wj = double(fp16_to_fp32(blk->d)) * blk->qs[j];
        exact += wj * x[32 * b + j];
        bound += std::fabs(wj) * 0.57 * amax / 127 + 1e-6 * std::fabs(wj * x[32 * b + j]);
      }
    }
    CHECK_MSG(std::fabs(y[r] - exact) <= bound, "row %lld: %g vs %g (bound %g)", (long long)r, y[r], exact, bound);
  }
}

TEST(threads_and_shapes) {
  // many rows (several thread chunks) and a prefill-sized n: every path, 1 vs 2 threads identical
  ThreadPool p1(1), p2(2);
  for (Isa isa : available_isas()) {
    for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::F16}) {
      const int64_t rows = 301, cols = 512, n = 19;
      float wmax;
      std::vector<uint8_t> w = random_weights(t, rows, cols, &wmax);
      Weight W = Weight::view(t, rows, cols, w.data());
      std::vector<float> x(n * cols), y1(n * rows), y2(n * rows);
      for (auto& v : x) v = uni(-1, 1);
      matmul(W, x.data(), n, y1.data(), p1, isa);
      matmul(W, x.data(), n, y2.data(), p2, isa);
      CHECK_MSG(std::memcmp(y1.data(), y2.data(), 4 * y1.size()) == 0, "%s %s", isa_name(isa), type_name(t));
      matmul(W, x.data(), 1, y2.data(), p2, isa);  // decode path (other tiles), same first row
      bool same = true;
      for (int64_t r = 0; r < rows; ++r) same &= std::fabs(y2[r] - y1[r]) <= 1e-5f * cols * wmax;
      CHECK_MSG(same, "%s %s n=1 vs n=19", isa_name(isa), type_name(t));
    }
  }
}

TEST(k_quants_extreme_codes_and_scales) {
  // Q4_K / Q6_K with every code and 6-bit scale / min at its maximum (Q6_K scales -128 and 127)
  // and activations at +-127: the largest int32 sub-block and super-block sums the prefill tile
  // (16 rows x 16 tokens, scales applied in int32) and the decode tile can meet, on 16-token
  // groups and a tail (n = 16, 33), 16-row tiles and a partial one (rows 40). A saturating or
  // overflowing int16 / int32 step would be off by far more than the tolerance.
  ThreadPool pool(1);
  for (Isa isa : simd_paths()) {
    for (DType t : {DType::Q4_K, DType::Q6_K}) {
      const int64_t rows = 40, cols = 3 * 256;
      float wmax = 0;
      std::vector<uint8_t> w = random_weights(t, rows, cols, &wmax);
      const size_t ts = type_traits(t).type_size;
      for (size_t b = 0; b < w.size() / ts; ++b) {
        uint8_t* blk = w.data() + b * ts;
        if (t == DType::Q4_K) {
          std::memset(blk + 4, 0xFF, 12 + 128);  // scales, mins 63; codes 15
        } else {
          std::memset(blk, 0xFF, 192);           // codes 63
          for (int g = 0; g < 16; ++g) blk[192 + g] = (b + g) % 2 ? 0x80 : 0x7F;
        }
      }
      Weight W = Weight::view(t, rows, cols, w.data());
      for (int64_t n : {1, 16, 33}) {
        std::vector<float> x(n * cols), y(n * rows), yr(n * rows);
        for (int64_t i = 0; i < n * cols; ++i) x[i] = (i / 7) % 3 == 0 ? -1.f : 1.f;
        matmul(W, x.data(), n, yr.data(), pool, Isa::Ref);
        matmul(W, x.data(), n, y.data(), pool, isa);
        const double tol = 2e-5 * cols * wmax;
        double worst = 0;
        for (int64_t i = 0; i < n * rows; ++i) worst = std::max(worst, std::fabs(double(y[i]) - double(yr[i])));
        CHECK_MSG(worst <= tol, "%s %s n=%lld: max err %g (tol %g)", isa_name(isa), type_name(t), (long long)n, worst, tol);
      }
    }
  }
}

// Single-token (n = 1) kernels (KernelSet::gemv, e.g. x86/avx512_gemv.cpp): they take rows in
// groups (4 interleaved streams) with the rest one by one, so row counts below, at and off the
// group size, 1 super-block and the 3584 + 256 columns of a real row plus one, random and extreme
// codes (all codes / scales / mins at their maxima, activations +-1), 1 and 2 threads (2 threads
// cut the rows into chunks, each its own group + rest). Same tolerance as check_type.
TEST(single_token_kernels_rows_and_columns) {
  ThreadPool p1(1), p2(2);
  for (Isa isa : simd_paths()) {
    for (DType t : {DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::Q8_0}) {
      const int64_t unit = type_traits(t).block_size;
      for (int64_t cols : {unit == 256 ? int64_t(256) : int64_t(32), int64_t(3584 + 256)}) {
        for (int64_t rows : {1, 3, 4, 5, 8, 13, 67, 130}) {
          for (int extreme = 0; extreme < 2; ++extreme) {
            float wmax = 0;
            std::vector<uint8_t> w = random_weights(t, rows, cols, &wmax);
            const size_t ts = type_traits(t).type_size;
            if (extreme) {
              for (size_t b = 0; b < w.size() / ts; ++b) {
                uint8_t* blk = w.data() + b * ts;
                if (t == DType::Q4_K) std::memset(blk + 4, 0xFF, 12 + 128);
                else if (t == DType::Q6_K) {
                  std::memset(blk, 0xFF, 192);
                  for (int g = 0; g < 16; ++g) blk[192 + g] = (b + g) % 2 ? 0x80 : 0x7F;
                } else if (t == DType::Q4_0) std::memset(blk + 2, 0xFF, 16);
                else std::memset(blk + 2, (b % 2) ? 0x80 : 0x7F, 32);
              }
            }
            Weight W = Weight::view(t, rows, cols, w.data());
            std::vector<float> x(cols), yr(rows), y(rows);
            for (int64_t j = 0; j < cols; ++j) x[j] = extreme ? ((j / 7) % 3 == 0 ? -1.f : 1.f) : uni(-1, 1);
            matmul(W, x.data(), 1, yr.data(), p1, Isa::Ref);
            const double tol = 2e-5 * cols * wmax + 1e-30;
            for (ThreadPool* pool : {&p1, &p2}) {
              std::fill(y.begin(), y.end(), 7.f);
              matmul(W, x.data(), 1, y.data(), *pool, isa);
              double worst = 0;
              for (int64_t r = 0; r < rows; ++r) worst = std::max(worst, std::fabs(double(y[r]) - double(yr[r])));
              CHECK_MSG(worst <= tol, "%s %s rows=%lld cols=%lld extreme=%d threads=%d: max err %g (tol %g)",
                        isa_name(isa), type_name(t), (long long)rows, (long long)cols, extreme, pool->size(), worst, tol);
            }
          }
        }
      }
    }
  }
}

TEST(bad_arguments) {
  std::vector<uint8_t> w(1024);
  CHECK_THROWS(Weight::view(DType::Q4_0, 2, 33, w.data()));
  CHECK_THROWS(Weight::view(DType::Q4_K, 2, 128, w.data()));
  CHECK_THROWS(Weight::view(DType::Q8_K, 2, 256, w.data()));
  CHECK_THROWS(Weight::view(DType::F32, 0, 4, w.data()));
  CHECK_THROWS(Weight::view(DType::F32, 2, 4, nullptr));
}

// ---------------------------------------------------------------- prefill tiles (issue 8)
// Many-token (prefill) tiles: 16-row x 16-token transposed VNNI tiles for Q4_0 / Q8_0, and for
// Q4_K / Q6_K 16-row tiles over token groups of up to 64 (8 at a time, then a 1..7 tail) with
// long rows cut into column blocks. Token counts at, just off and between the group sizes
// (16, 17, 31, 32, 33, 48, 63, 64, 65, 79, 130), row counts with a partial 16-row tile, rows of
// 1 super-block (or group of 16 blocks), odd counts and, for the K-quants, 18 super-blocks (2.25
// column blocks at 64 tokens); 1 and 2 threads. Against ref with check_type's tolerance (the
// integer products are exact, so only f32 summation order differs: 2e-5 * cols * max|w|).
TEST(prefill_tiles_token_and_row_tails) {
  ThreadPool p1(1), p2(2);
  for (Isa isa : simd_paths()) {
    for (DType t : {DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::Q8_0}) {
      const int64_t unit = type_traits(t).block_size;
      const std::vector<int64_t> col_list =
          unit == 256 ? std::vector<int64_t>{256, 3 * 256, 18 * 256} : std::vector<int64_t>{16 * 32, 23 * 32};
      for (int64_t cols : col_list) {
        const bool big = cols > 4000;
        for (int64_t rows : {int64_t(16), int64_t(45)}) {
          if (big && rows == 16) continue;
          float wmax = 0;
          std::vector<uint8_t> w = random_weights(t, rows, cols, &wmax);
          Weight W = Weight::view(t, rows, cols, w.data());
          const double tol = 2e-5 * cols * wmax + 1e-30;
          const std::vector<int64_t> ns = big ? std::vector<int64_t>{17, 64, 65, 130}
                                              : std::vector<int64_t>{16, 17, 31, 32, 33, 48, 63, 64, 65, 79, 130};
          for (int64_t n : ns) {
            std::vector<float> x(n * cols), yr(n * rows), y(n * rows);
            for (auto& v : x) v = uni(-1, 1);
            matmul(W, x.data(), n, yr.data(), p1, Isa::Ref);
            for (ThreadPool* pool : {&p1, &p2}) {
              std::fill(y.begin(), y.end(), 7.f);
              matmul(W, x.data(), n, y.data(), *pool, isa);
              double worst = 0;
              for (int64_t i = 0; i < n * rows; ++i) worst = std::max(worst, std::fabs(double(y[i]) - double(yr[i])));
              CHECK_MSG(worst <= tol, "%s %s rows=%lld cols=%lld n=%lld threads=%d: max err %g (tol %g)",
                        isa_name(isa), type_name(t), (long long)rows, (long long)cols, (long long)n, pool->size(),
                        worst, tol);
            }
          }
        }
      }
    }
  }
}

TEST_MAIN()

// ==================================================================================================
// AVX2 single-token kernels (x86/avx2_gemv.cpp). Appended section.
// ==================================================================================================
namespace {

// The activation quantizer matmul() uses for a decode call of type t (as in matmul.cpp).
QuantizeFn decode_quantizer(const KernelSet& ks, DType t) {
  const int id = static_cast<int>(t);
  if (ks.quantize_gemv[id]) return ks.quantize_gemv[id];
  if (ks.quantize_type[id]) return ks.quantize_type[id];
  return act_kind(t) == ActKind::A8 ? ks.quantize_a8 : ks.quantize_a8k;
}

}  // namespace

// The avx2 path has decode kernels for the model's four quantized types (else the n = 1 tests
// above would only exercise its tiles), reading the natural A8 / A8K order (quantize_gemv unset).
// fill_avx512 starts from fill_avx2: a decode kernel the avx512 path leaves inherited from avx2
// must still meet a natural-order quantizer there (the avx512 path reorders the 32-block codes,
// quantize_a8p), i.e. gemv / quantize_gemv act as a pair. Checked by bytes: the quantizer the
// avx512 path would use must write the scalar A8 / A8K bytes.
TEST(avx2_gemv_present_and_paired_with_its_quantizer) {
#if defined(MINICPMV_X86)
  if (!isa_available(Isa::Avx2)) return;
  KernelSet k2;
  fill_avx2(k2);
  for (DType t : {DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::Q8_0}) {
    const int id = static_cast<int>(t);
    CHECK_MSG(k2.gemv[id] != nullptr, "avx2 has no decode kernel for %s", type_name(t));
    CHECK_MSG(k2.quantize_gemv[id] == nullptr, "avx2 %s: unexpected quantize_gemv", type_name(t));
  }
  if (!isa_available(Isa::Avx512)) return;
  KernelSet k5;
  fill_avx512(k5);
  const int64_t cols = 256 * 3;
  std::vector<float> x(cols);
  for (auto& v : x) v = uni(-2, 2);
  for (DType t : kTypes) {
    const int id = static_cast<int>(t);
    if (!k2.gemv[id] || k5.gemv[id] != k2.gemv[id]) continue;  // overridden (or none): the avx512 pair
    const ActKind kind = act_kind(t);
    const size_t rb = act_row_bytes(kind, cols);
    std::vector<uint8_t> a(rb, 0), b(rb, 0);
    (kind == ActKind::A8 ? ref::quantize_a8 : ref::quantize_a8k)(x.data(), a.data(), cols);
    decode_quantizer(k5, t)(x.data(), b.data(), cols);
    CHECK_MSG(std::memcmp(a.data(), b.data(), rb) == 0,
              "avx512 inherits the avx2 decode kernel of %s with a reordering quantizer", type_name(t));
  }
#endif
}

// The avx2 decode kernels against ref where their own loops have edges: Q4_0 takes blocks in
// pairs (odd block counts leave one), all take 4 row streams plus the rest one by one (rows 1, 3,
// 4, 5, 13, 67, 130), one block, 3584 + 256 columns and that plus one 32-block; extreme codes
// (Q4_K scales, mins and codes at 63 / 63 / 15, Q6_K codes 63 with scales +-127/-128, Q4_0 codes
// 15, Q8_0 codes -128 / 127) with activations at +-1 (A8 codes +-127: the vpmaddubsw pairs at
// their largest). Called through matmul with the avx2 path, n = 1 (the decode kernel), 1 thread.
// Same tolerance as check_type.
TEST(avx2_gemv_block_pairs_streams_and_extremes) {
  if (!isa_available(Isa::Avx2)) return;
  ThreadPool p1(1);
  for (DType t : {DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::Q8_0}) {
    const int64_t unit = type_traits(t).block_size;
    std::vector<int64_t> col_list = {unit, 3 * unit, 3584 + 256};
    if (unit == 32) col_list.push_back(3584 + 256 + 32);
    for (int64_t cols : col_list)
      for (int64_t rows : {1, 3, 4, 5, 13, 67, 130})
        for (int extreme = 0; extreme < 2; ++extreme) {
          float wmax = 0;
          std::vector<uint8_t> w = random_weights(t, rows, cols, &wmax);
          const size_t ts = type_traits(t).type_size;
          if (extreme)
            for (size_t b = 0; b < w.size() / ts; ++b) {
              uint8_t* blk = w.data() + b * ts;
              if (t == DType::Q4_K) std::memset(blk + 4, 0xFF, 12 + 128);
              else if (t == DType::Q6_K) {
                std::memset(blk, 0xFF, 192);
                for (int g = 0; g < 16; ++g) blk[192 + g] = (b + g) % 3 ? 0x80 : 0x7F;
              } else if (t == DType::Q4_0) std::memset(blk + 2, 0xFF, 16);
              else for (int j = 0; j < 32; ++j) blk[2 + j] = (b + j) % 2 ? 0x80 : 0x7F;
            }
          Weight W = Weight::view(t, rows, cols, w.data());
          std::vector<float> x(cols), yr(rows), y(rows, 7.f);
          for (int64_t j = 0; j < cols; ++j) x[j] = extreme ? ((j * 5 / 3) % 2 ? -1.f : 1.f) : uni(-1, 1);
          matmul(W, x.data(), 1, yr.data(), p1, Isa::Ref);
          matmul(W, x.data(), 1, y.data(), p1, Isa::Avx2);
          const double tol = 2e-5 * cols * wmax + 1e-30;
          double worst = 0;
          for (int64_t r = 0; r < rows; ++r) worst = std::max(worst, std::fabs(double(y[r]) - double(yr[r])));
          CHECK_MSG(worst <= tol, "avx2 gemv %s rows=%lld cols=%lld extreme=%d: max err %g (tol %g)", type_name(t),
                    (long long)rows, (long long)cols, extreme, worst, tol);
        }
  }
}

// ==================================================================================================
// AVX-512 Q4_0 decode kernel in weight-stream order (x86/avx512_gemv.cpp, q40_rows). Appended.
// ==================================================================================================

// Its quantizer (KernelSet::quantize_gemv[Q4_0]) against the scalar A8 bytes, rearranged here
// from the documented layout: float d[nb], then per full 64-byte chunk c of the 18 nb weight
// bytes lo[64] hi[64], then the last r = 18 nb % 64: lo[r] hi[r]; weight byte p = 18 b + 2 + k
// meets code 32 b + k (lo) and 32 b + k + 16 (hi), the 2 bytes of d meet 0. Block counts give
// every kind of end: r = 18 (1, 33 blocks), 36, 54, 8 (4), 62 (7), 0 (32, 64), 32 (112 = 3584
// columns). Ties (x * 127 / max on .5) and zero blocks too. Bytes past 40 nb are not written.
TEST(avx512_q4_0_gemv_quantizer_stream_order) {
#if defined(MINICPMV_X86)
  if (!isa_available(Isa::Avx512)) return;
  KernelSet ks;
  fill_avx512(ks);
  const int id = static_cast<int>(DType::Q4_0);
  CHECK_MSG(ks.quantize_gemv[id] != nullptr, "avx512 has no Q4_0 decode quantizer");
  if (!ks.quantize_gemv[id]) return;
  for (int64_t nb : {1, 2, 3, 4, 7, 32, 33, 64, 112}) {
    const int64_t cols = 32 * nb, bytes = 18 * nb, nfull = bytes / 64, rem = bytes % 64;
    const size_t rb = act_row_bytes(ActKind::A8, cols);
    CHECK(static_cast<size_t>(40 * nb) <= rb);
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<float> x(cols);
      for (auto& v : x) v = uni(-3, 3);
      if (trial == 1)
        for (int64_t j = 0; j < cols; ++j) x[j] = 0.5f * static_cast<float>(static_cast<int>(rng()() % 255) - 127);
      if (trial == 2) std::fill(x.begin(), x.begin() + 32, 0.f);
      std::vector<uint8_t> a(rb, 0), b(rb, 0xAB), c(rb, 0xAB);
      ref::quantize_a8(x.data(), a.data(), cols);
      std::memcpy(c.data(), a.data() + cols, 4 * nb);  // d
      uint8_t* codes = c.data() + 4 * nb;
      for (int64_t p = 0; p < bytes; ++p) {
        const int64_t blk = p / 18, k = p % 18 - 2, ch = p / 64, o = p % 64;
        const uint8_t lo = k < 0 ? 0 : a[32 * blk + k], hi = k < 0 ? 0 : a[32 * blk + k + 16];
        if (ch < nfull) codes[128 * ch + o] = lo, codes[128 * ch + 64 + o] = hi;
        else codes[128 * nfull + o] = lo, codes[128 * nfull + rem + o] = hi;
      }
      ks.quantize_gemv[id](x.data(), b.data(), cols);
      const bool same = std::memcmp(b.data(), c.data(), rb) == 0;
      CHECK_MSG(same, "q4_0 gemv quantizer nb=%lld trial %d", (long long)nb, trial);
      if (!same) return;
    }
  }
#endif
}

// The kernel against ref at the same block counts (every chunk phase of the 9-chunk index
// tables, every kind of masked last chunk, none) plus 592 (18944 columns, ffn_down: rows of more
// than 4 KiB take 8 streams), rows 1, 4, 5, 8, 9, 11, 17 (4 or 8 streams + the rest one by one), random and extreme codes (all 15, activations +-1; and
// all 0 with the f16 d at +-65504: the lanes holding d bytes must meet zero codes), 1 and 2
// threads. Same tolerance as check_type.
TEST(avx512_q4_0_gemv_chunk_phases_and_tails) {
  if (!isa_available(Isa::Avx512)) return;
  ThreadPool p1(1), p2(2);
  const DType t = DType::Q4_0;
  for (int64_t nb : {1, 2, 3, 4, 7, 9, 32, 33, 64, 112, 592}) {
    const int64_t cols = 32 * nb;
    for (int64_t rows : {1, 4, 5, 8, 9, 11, 17}) {
      for (int mode = 0; mode < 3; ++mode) {
        float wmax = 0;
        std::vector<uint8_t> w = random_weights(t, rows, cols, &wmax);
        for (size_t b = 0; b < w.size() / 18; ++b) {
          uint8_t* blk = w.data() + 18 * b;
          if (mode == 1) std::memset(blk + 2, 0xFF, 16);
          if (mode == 2) {  // codes -8 and d = +-65504 (f16 0x7BFF / 0xFBFF): d bytes 0xFF 0x7B / 0xFB
            std::memset(blk + 2, 0x00, 16);
            const uint16_t d = (b % 2) ? 0xFBFF : 0x7BFF;
            std::memcpy(blk, &d, 2);
          }
        }
        if (mode == 2) wmax = 65504.f * 8;
        Weight W = Weight::view(t, rows, cols, w.data());
        std::vector<float> x(cols), yr(rows), y(rows);
        for (int64_t j = 0; j < cols; ++j) x[j] = mode ? ((j * 5 / 3) % 2 ? -1.f : 1.f) : uni(-1, 1);
        matmul(W, x.data(), 1, yr.data(), p1, Isa::Ref);
        const double tol = 2e-5 * cols * wmax + 1e-30;
        for (ThreadPool* pool : {&p1, &p2}) {
          std::fill(y.begin(), y.end(), 7.f);
          matmul(W, x.data(), 1, y.data(), *pool, Isa::Avx512);
          double worst = 0;
          for (int64_t r = 0; r < rows; ++r) worst = std::max(worst, std::fabs(double(y[r]) - double(yr[r])));
          CHECK_MSG(worst <= tol, "avx512 gemv q4_0 rows=%lld cols=%lld mode=%d threads=%d: max err %g (tol %g)",
                    (long long)rows, (long long)cols, mode, pool->size(), worst, tol);
        }
      }
    }
  }
}
