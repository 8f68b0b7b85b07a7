// Block formats without Python (so the same checks run natively and under qemu-aarch64, where FMA
// contraction would otherwise change results): f16 / bf16 conversions against known IEEE values,
// dequantization of hand-built blocks against the format formulas, quantize -> dequantize error
// bounds that follow from each format's step size, Q8_K invariants, threads vs one thread, errors.
// Bit-exactness against gguf-py is checked in tests/test_quant.py.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "minicpmv/error.h"
#include "quant/blocks.h"
#include "quant/f16.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;

namespace {

bool same_bits(float a, float b) { return fp32_to_bits(a) == fp32_to_bits(b); }

std::vector<float> normal(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<float> round_trip(DType t, const std::vector<float>& x, int64_t rows, ThreadPool* pool) {
  const int64_t cols = static_cast<int64_t>(x.size()) / rows;
  std::vector<uint8_t> q(row_size(t, cols) * rows);
  quantize_rows(t, x.data(), q.data(), rows, cols, pool);
  std::vector<float> y(x.size());
  dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    s += double(x[i]) * x[i];
  }
  return std::sqrt(e / s);
}

}  // namespace

TEST(fp16_known_values) {
  // Values from the IEEE 754 binary16 definition.
  CHECK(fp16_to_fp32(0x3c00) == 1.0f);
  CHECK(fp16_to_fp32(0xc000) == -2.0f);
  CHECK(fp16_to_fp32(0x7bff) == 65504.0f);
  CHECK(fp16_to_fp32(0x0400) == std::ldexp(1.0f, -14));        // smallest normal
  CHECK(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));        // smallest subnormal
  CHECK(fp16_to_fp32(0x03ff) == std::ldexp(1023.0f, -24));     // largest subnormal
  CHECK(same_bits(fp16_to_fp32(0x8000), -0.0f));
  CHECK(std::isinf(fp16_to_fp32(0x7c00)) && fp16_to_fp32(0xfc00) < 0);
  CHECK(std::isnan(fp16_to_fp32(0x7e00)));
  CHECK(fp32_to_fp16(1.0f) == 0x3c00);
  CHECK(fp32_to_fp16(-2.0f) == 0xc000);
  CHECK(fp32_to_fp16(65504.0f) == 0x7bff);
  CHECK(fp32_to_fp16(65519.99f) == 0x7bff);   // below the midpoint to 65536: rounds down
  CHECK(fp32_to_fp16(65520.0f) == 0x7c00);    // the midpoint rounds to even = inf
  CHECK(fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);           // tie between 0 and 2^-24: even
  CHECK(fp32_to_fp16(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(fp32_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);           // 1.5 ulp: tie -> even (2)
  CHECK(fp32_to_fp16(std::ldexp(5.0f, -25)) == 0x0002);           // 2.5 ulp: tie -> even (2)
  CHECK(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);    // tie above 1.0 -> 1.0
  CHECK(fp32_to_fp16(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);    // tie above 1+2^-10 -> up
  CHECK(fp32_to_fp16(-0.0f) == 0x8000);
  CHECK((fp32_to_fp16(std::nanf("")) & 0x7fff) > 0x7c00);
}

TEST(fp16_round_trip_every_half) {
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads are not preserved
    if (fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))) != h) ++bad;
  }
  CHECK_MSG(bad == 0, "%d halfs do not round-trip", bad);
}

TEST(bf16_known_values) {
  CHECK(bf16_to_fp32(0x3f80) == 1.0f);
  CHECK(bf16_to_fp32(0xc040) == -3.0f);
  CHECK(fp32_to_bf16(1.0f) == 0x3f80);
  CHECK(fp32_to_bf16(fp32_from_bits(0x3f808000)) == 0x3f80);  // tie -> even
  CHECK(fp32_to_bf16(fp32_from_bits(0x3f818000)) == 0x3f82);  // tie -> even (up)
  CHECK(fp32_to_bf16(fp32_from_bits(0x3f808001)) == 0x3f81);
  CHECK(fp32_to_bf16(fp32_from_bits(0x7f7fffff)) == 0x7f80);  // FLT_MAX rounds to inf
  CHECK(fp32_to_bf16(std::nanf("")) == 0x7fc0);
}

TEST(dequantize_hand_built_blocks) {
  // Q4_0: x = d (q - 8); low nibbles are elements 0..15, high nibbles 16..31.
  block_q4_0 b40;
  b40.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b40.qs[j] = static_cast<uint8_t>((j & 15) | (15 - j) << 4);
  float y[256];
  dequantize_row(DType::Q4_0, &b40, y, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * (j - 8));
    CHECK(y[j + 16] == 0.5f * (7 - j));
  }
  // Q5_1: x = d q + m with the fifth bit of element j in bit j of qh.
  block_q5_1 b51;
  b51.d = 0x3c00;  // 1
  b51.m = 0xbc00;  // -1
  std::memset(b51.qs, 0x21, sizeof(b51.qs));  // low nibble 1, high nibble 2
  const uint32_t qh = 0x80000001u;            // elements 0 and 31 get +16
  std::memcpy(b51.qh, &qh, 4);
  dequantize_row(DType::Q5_1, &b51, y, 32);
  CHECK(y[0] == 16.f && y[1] == 0.f && y[16] == 1.f && y[31] == 17.f);
  // Q8_0
  block_q8_0 b80;
  b80.d = 0xb800;  // -0.5
  for (int j = 0; j < 32; ++j) b80.qs[j] = static_cast<int8_t>(j - 16);
  dequantize_row(DType::Q8_0, &b80, y, 32);
  for (int j = 0; j < 32; ++j) CHECK(y[j] == -0.5f * (j - 16));
  // Q4_K: sub-block 0 scale 2 / min 4, sub-block 5 scale 33 / min 40 (packed into the top bits).
  block_q4_K b4k;
  std::memset(&b4k, 0, sizeof(b4k));
  b4k.d = 0x3c00;     // 1
  b4k.dmin = 0x3800;  // 0.5
  b4k.scales[0] = 2;
  b4k.scales[4] = 4;
  b4k.scales[9] = (33 & 15) | (40 & 15) << 4;  // sub-block 5: low nibbles in byte 4 + 5
  b4k.scales[1] |= (33 >> 4) << 6;
  b4k.scales[5] |= (40 >> 4) << 6;
  for (int l = 0; l < 32; ++l) b4k.qs[l] = 7;                // sub-block 0 (low), 1 (high) = 0
  for (int l = 0; l < 32; ++l) b4k.qs[64 + l] = 3 << 4;     // sub-block 5 = high nibbles of group 2
  dequantize_row(DType::Q4_K, &b4k, y, 256);
  CHECK(y[0] == 2.f * 7 - 2.f);     // d*sc*q - dmin*m = 14 - 2
  CHECK(y[32] == 0.f);              // sub-block 1: scale 0, min 0
  CHECK(y[160] == 33.f * 3 - 20.f);  // sub-block 5
  // Q6_K: element 0 = low nibble of ql[0] + bits 0-1 of qh[0]; element 96 = high nibble of ql[32]
  // + bits 6-7 of qh[0]; element 200 (second half, k = 2, l = 8) = high nibble of ql[72].
  block_q6_K b6k;
  std::memset(&b6k, 0, sizeof(b6k));
  b6k.d = 0x4000;  // 2
  b6k.scales[0] = 3;
  b6k.scales[6] = -5;
  b6k.scales[12] = 7;
  b6k.ql[0] = 5;
  b6k.qh[0] = 1 | (3 << 6);
  b6k.ql[32] = 9 << 4;
  b6k.ql[72] = 15 << 4;
  b6k.qh[32 + 8] = 2 << 4;
  dequantize_row(DType::Q6_K, &b6k, y, 256);
  CHECK(y[0] == 2.f * 3 * (21 - 32));
  CHECK(y[96] == 2.f * -5 * ((9 | 48) - 32));
  CHECK(y[200] == 2.f * 7 * ((15 | 32) - 32));
  CHECK(y[1] == 2.f * 3 * -32);
}

TEST(round_trip_error_within_format_step) {
  // Relative RMSE on N(0,1) below the uniform-quantizer figure for each bit width (step / sqrt(12)
  // with step = expected block range / levels; derivation in tests/test_quant.py), and for Q8_0
  // every element within half a step plus the f16 rounding of the scale.
  const int64_t rows = 6, cols = 256 * 5;
  std::vector<float> x = normal(rows * cols, 42);
  struct Case {
    DType t;
    double max_rel_rmse;
  };
  const Case cases[] = {{DType::Q8_0, 0.006}, {DType::Q4_0, 0.095}, {DType::Q4_1, 0.085},
                        {DType::Q5_0, 0.048}, {DType::Q5_1, 0.042}, {DType::Q4_K, 0.079},
                        {DType::Q5_K, 0.038}, {DType::Q6_K, 0.02},  {DType::F16, 5e-4},
                        {DType::BF16, 4e-3}};
  for (const Case& c : cases) {
    const double e = rel_rmse(x, round_trip(c.t, x, rows, nullptr));
    CHECK_MSG(e < c.max_rel_rmse, "%s: rel rmse %.5f >= %.5f", type_name(c.t), e, c.max_rel_rmse);
  }
  std::vector<float> y = round_trip(DType::Q8_0, x, rows, nullptr);
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[b + j]));
    // half a step, plus |q| <= 127 times the f16 rounding of d (relative 2^-11)
    const float bound = amax / 127 * (0.5f + 127.f / 2048.f) * 1.001f;
    for (int j = 0; j < 32; ++j) CHECK(std::fabs(x[b + j] - y[b + j]) <= bound);
  }
  std::vector<float> f = round_trip(DType::F32, x, rows, nullptr);
  CHECK(std::memcmp(f.data(), x.data(), x.size() * 4) == 0);
}

TEST(zero_rows_stay_zero) {
  std::vector<float> x(3 * 256, 0.f);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K,
                  DType::Q5_K, DType::Q6_K}) {
    std::vector<float> y = round_trip(t, x, 3, nullptr);
    bool ok = true;
    for (float v : y) ok = ok && v == 0.f;
    CHECK_MSG(ok, "%s", type_name(t));
  }
}

TEST(q8_K_invariants) {
  std::vector<float> x = normal(512, 7, 3.f);
  x[300] = -20.f;  // the largest magnitude is negative: it maps to +127 * sign(d) exactly
  block_q8_K y[2];
  quantize_row_q8_K(x.data(), y, 512);
  for (int b = 0; b < 2; ++b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 256; ++j)
      if (std::fabs(x[256 * b + j]) > amax) {
        amax = std::fabs(x[256 * b + j]);
        max = x[256 * b + j];
      }
    CHECK(y[b].d == 1 / (-127.f / max));
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += y[b].qs[16 * g + l];
      CHECK(y[b].bsums[g] == s);
    }
    for (int j = 0; j < 256; ++j) {
      CHECK(y[b].qs[j] >= -127 && y[b].qs[j] <= 127);
      CHECK(std::fabs(y[b].d * y[b].qs[j] - x[256 * b + j]) <= std::fabs(y[b].d) * 0.5001f);
    }
  }
  CHECK(y[1].qs[300 - 256] == -127);
  std::vector<float> z(256, 0.f);
  quantize_row_q8_K(z.data(), y, 256);
  CHECK(y[0].d == 0.f && y[0].qs[5] == 0 && y[0].bsums[3] == 0);
  // Q8_0 activation quantizer = the Q8_0 weight format.
  block_q8_0 a[16];
  std::vector<uint8_t> w(row_size(DType::Q8_0, 512));
  quantize_row_q8_0(x.data(), a, 512);
  quantize_rows(DType::Q8_0, x.data(), w.data(), 1, 512);
  CHECK(std::memcmp(a, w.data(), w.size()) == 0);
}

TEST(threads_match_single_thread) {
  const int64_t rows = 13, cols = 256 * 7;
  std::vector<float> x = normal(rows * cols, 3);
  ThreadPool one(1), three(3);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                  DType::F16, DType::BF16}) {
    std::vector<uint8_t> a(row_size(t, cols) * rows), b(a.size());
    quantize_rows(t, x.data(), a.data(), rows, cols, &one);
    quantize_rows(t, x.data(), b.data(), rows, cols, &three);
    CHECK_MSG(a == b, "%s", type_name(t));
  }
}

TEST(bad_input_throws) {
  std::vector<float> x(512, 1.f);
  std::vector<uint8_t> q(4096);
  CHECK_THROWS(quantize_rows(DType::Q4_K, x.data(), q.data(), 1, 100));
  CHECK_THROWS(quantize_rows(DType::Q8_1, x.data(), q.data(), 1, 64));
  CHECK_THROWS(dequantize_row(DType::Q4_0, q.data(), x.data(), 33));
  CHECK_THROWS(dequantize_row(DType::Q2_K, q.data(), x.data(), 256));
  x[77] = std::nanf("");
  bool typed = false;
  try {
    quantize_rows(DType::Q6_K, x.data(), q.data(), 2, 256);
  } catch (const InvalidArgument& e) {
    typed = std::strstr(e.what(), "row 0, column 77") != nullptr;
  }
  CHECK(typed);
  quantize_rows(DType::F16, x.data(), q.data(), 2, 256);  // float types keep NaN
  CHECK(dtype_from_name("Q4_k") == DType::Q4_K && dtype_from_name("bf16") == DType::BF16);
  CHECK_THROWS(dtype_from_name("q4_9"));
}

TEST_MAIN()
