// The packed Q8_0 GEMM (kernels/packed_q8.h) against independent references:
//  - the AVX-512 tile against its scalar twin, bit for bit (same integer sums, the same fused
//    multiply-add per block in the same order), on random panels and groups with every tail:
//    1..16 tokens stored, 1..16 rows stored, 1..37 blocks;
//  - kernels::matmul on a packed weight (every path: ref runs the twin) against float64 sums of
//    the dequantized Q8_0 weights times the dequantized Q8_0 activations (quantize_rows: the
//    gguf-py-checked quantizer, the same semantics as the A8 activations). The integer block sums
//    are exact; what differs is the f32 epilogue: one rounding of d_w * d_a and one of each of the
//    nb fused adds, so |err| <= (nb + 2) * 2^-24 * sum_k |w_k a_k|: the bound used, with nb <= 40;
//  - the stored-row Q8_0 kernels (another summation): the same bound, twice;
//  - 1 and 2 threads bit-identical; matmul_multi (all packed, and mixed) bit-identical to separate
//    calls; bad input rejected.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/packed_q8.h"
#include "minicpmv/error.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

namespace {

struct Q8Matrix {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // the dequantized weights
  Weight w;
};

Q8Matrix make_q8(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> f(rows * cols);
  for (float& v : f) v = g(rng);
  Q8Matrix m;
  m.bytes.resize(rows * row_size(DType::Q8_0, cols));
  quantize_rows(DType::Q8_0, f.data(), m.bytes.data(), rows, cols);
  m.deq.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(DType::Q8_0, m.bytes.data() + r * row_size(DType::Q8_0, cols), m.deq.data() + r * cols, cols);
  m.w = Weight::view(DType::Q8_0, rows, cols, m.bytes.data());
  return m;
}

// X rows as the kernels see them: Q8_0-quantized, dequantized
std::vector<float> quantized_acts(const std::vector<float>& x, int64_t n, int64_t cols) {
  std::vector<uint8_t> q(n * row_size(DType::Q8_0, cols));
  quantize_rows(DType::Q8_0, x.data(), q.data(), n, cols);
  std::vector<float> out(n * cols);
  for (int64_t t = 0; t < n; ++t)
    dequantize_row(DType::Q8_0, q.data() + t * row_size(DType::Q8_0, cols), out.data() + t * cols, cols);
  return out;
}

template <class F>
bool throws_invalid(F f) {
  try {
    f();
  } catch (const InvalidArgument&) {
    return true;
  }
  return false;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

#if defined(MINICPMV_X86)
TEST(avx512_tile_matches_scalar_twin_bit_for_bit) {
  if (!isa_available(Isa::Avx512)) {
    std::printf("  (no avx512 path on this CPU: nothing to compare)\n");
    return;
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t nb : {1, 2, 5, 37}) {
    std::vector<uint8_t> panel(packed::kBlockBytes * nb + 64), group(packed::kActBlockBytes * nb + 64);
    uint8_t* P = panel.data() + (64 - reinterpret_cast<uintptr_t>(panel.data()) % 64) % 64;
    uint8_t* A = group.data() + (64 - reinterpret_cast<uintptr_t>(group.data()) % 64) % 64;
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* wb = P + b * packed::kBlockBytes;
      uint8_t* ab = A + b * packed::kActBlockBytes;
      for (int i = 0; i < 512; ++i) wb[i] = static_cast<uint8_t>(byte(rng));
      for (int i = 0; i < 512; ++i) ab[i] = static_cast<uint8_t>(byte(rng) % 255 + 1);  // int8 -127..127
      for (int L = 0; L < 16; ++L) {
        const float dw = std::fabs(g(rng)) * 0.01f, da = std::fabs(g(rng)) * 0.02f;
        const int32_t c = -128 * (byte(rng) * 16 - 2048);
        std::memcpy(wb + 512 + 4 * L, &dw, 4);
        std::memcpy(ab + 512 + 4 * L, &da, 4);
        std::memcpy(ab + 576 + 4 * L, &c, 4);
      }
    }
    for (int64_t nt : {1, 3, 15, 16})
      for (int64_t nr : {1, 7, 16}) {
        const size_t ys = 19;
        std::vector<float> y0(16 * ys, -3.0f), y1(16 * ys, -3.0f);
        packed::gemm_tile_ref(P, nb, A, nt, y0.data(), ys, nr);
        packed::gemm_tile_avx512(P, nb, A, nt, y1.data(), ys, nr);
        CHECK(bits_equal(y0, y1));  // also: nothing written past nt tokens / nr rows
        for (int64_t t = 0; t < 16; ++t)
          for (size_t r = 0; r < ys; ++r)
            if (t >= nt || static_cast<int64_t>(r) >= nr) CHECK(y1[t * ys + r] == -3.0f);
      }
  }
}
#endif

TEST(packed_matmul_matches_float64_and_stored_rows_on_every_path) {
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.0f, 1.0f);
  ThreadPool p1(1), p2(2);
  for (int64_t rows : {5, 16, 37}) {
    for (int64_t cols : {32, 96, 1280}) {
      Q8Matrix m = make_q8(rows, cols, rng);
      const Weight pw = packed::pack_q8_0(m.w, p2);
      CHECK(pw.layout() == Layout::Q8Rows16 && pw.type() == DType::Q8_0 && pw.rows() == rows && pw.cols() == cols);
      const double nb = static_cast<double>(cols / 32);
      for (int64_t n : {1, 5, 16, 17, 40}) {
        std::vector<float> x(n * cols);
        for (float& v : x) v = g(rng);
        const std::vector<float> xq = quantized_acts(x, n, cols);
        std::vector<double> want(n * rows), mag(n * rows);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r) {
            double s = 0.0, a = 0.0;
            for (int64_t k = 0; k < cols; ++k) {
              const double p = static_cast<double>(m.deq[r * cols + k]) * xq[t * cols + k];
              s += p;
              a += std::fabs(p);
            }
            want[t * rows + r] = s;
            mag[t * rows + r] = a;
          }
        std::vector<float> first;
        for (Isa isa : available_isas()) {
          std::vector<float> stored(n * rows);
          matmul(m.w, x.data(), n, stored.data(), p1, isa);
          for (ThreadPool* pool : {&p1, &p2}) {
            std::vector<float> y(n * rows, -1.0f);
            matmul(pw, x.data(), n, y.data(), *pool, isa);
            int bad = 0;
            for (int64_t i = 0; i < n * rows; ++i) {
              const double tol = (nb + 2) * std::ldexp(1.0, -24) * mag[i] + 1e-30;
              if (std::fabs(y[i] - want[i]) > tol || std::fabs(y[i] - stored[i]) > 2 * tol) ++bad;
            }
            if (bad) std::printf("  %s rows %ld cols %ld n %ld: %d outside the bound\n", isa_name(isa), (long)rows,
                                 (long)cols, (long)n, bad);
            CHECK(bad == 0);
            // the same bits on every pool; avx512 and ref give the same bits too (twins)
            if (first.empty()) first = y;
            else if (isa == Isa::Ref || isa == Isa::Avx512) CHECK(bits_equal(first, y));
          }
        }
      }
    }
  }
}

TEST(packed_matmul_multi_equals_separate_calls) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  ThreadPool p2(2);
  const int64_t cols = 160, n = 33;
  Q8Matrix a = make_q8(48, cols, rng), b = make_q8(21, cols, rng), c = make_q8(16, cols, rng);
  const Weight pa = packed::pack_q8_0(a.w, p2), pb = packed::pack_q8_0(b.w, p2);
  std::vector<float> x(n * cols);
  for (float& v : x) v = g(rng);
  for (Isa isa : available_isas()) {
    std::vector<float> ya(n * 48), yb(n * 21), yc(n * 16), fa(n * 48), fb(n * 21), fc(n * 16);
    matmul(pa, x.data(), n, ya.data(), p2, isa);
    matmul(pb, x.data(), n, yb.data(), p2, isa);
    matmul(c.w, x.data(), n, yc.data(), p2, isa);
    const MatmulOut all_packed[2] = {{&pa, fa.data()}, {&pb, fb.data()}};
    matmul_multi(all_packed, 2, x.data(), n, p2, isa);
    CHECK(bits_equal(ya, fa) && bits_equal(yb, fb));
    std::fill(fa.begin(), fa.end(), 0.0f);
    const MatmulOut mixed[3] = {{&pa, fa.data()}, {&c.w, fc.data()}, {&pb, fb.data()}};
    matmul_multi(mixed, 3, x.data(), n, p2, isa);
    CHECK(bits_equal(ya, fa) && bits_equal(yb, fb) && bits_equal(yc, fc));
  }
}

TEST(packing_rejects_what_it_cannot_hold) {
  ThreadPool p1(1);
  std::vector<uint8_t> f16(4 * 64 * 2);
  const Weight w16 = Weight::view(DType::F16, 4, 64, f16.data());
  CHECK(throws_invalid([&] { (void)packed::pack_q8_0(w16, p1); }));
  CHECK(throws_invalid([&] { (void)packed::pack_q8_0(Weight(), p1); }));
  CHECK(throws_invalid([&] { (void)Weight::repacked(DType::F16, Layout::Q8Rows16, 4, 64, std::make_shared<int>(0)); }));
  CHECK(throws_invalid([&] { (void)Weight::repacked(DType::Q8_0, Layout::Rows, 4, 64, std::make_shared<int>(0)); }));
  CHECK(throws_invalid([&] { (void)Weight::repacked(DType::Q8_0, Layout::Q8Rows16, 4, 48, std::make_shared<int>(0)); }));
  std::mt19937 rng(3);
  Q8Matrix m = make_q8(16, 64, rng);
  const Weight pw = packed::pack_q8_0(m.w, p1);
  CHECK(throws_invalid([&] { (void)packed::pack_q8_0(pw, p1); }));  // packed twice
}

TEST_MAIN()
