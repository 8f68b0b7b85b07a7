// The pieces of the vision encoder's fast softmax (ops/fast_math: max_fast, exp_shift_sum_fast)
// against libm / long double, at the sizes attention uses (1024 keys) and with odd tails.
#include <cmath>
#include <random>
#include <vector>

#include "ops/fast_math.h"
#include "testing.h"

using namespace minicpmv;

TEST(max_fast_matches_std) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 10.f);
  for (int64_t n : {1, 7, 8, 9, 100, 1024, 1031}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    float ref = x[0];
    for (float v : x) ref = v > ref ? v : ref;
    CHECK(ops::max_fast(x.data(), n) == ref);
    x[static_cast<size_t>(n - 1)] = 1e30f;  // in the scalar tail
    CHECK(ops::max_fast(x.data(), n) == 1e30f);
  }
}

TEST(exp_shift_sum_matches_libm) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.f, 8.f);
  for (int64_t n : {1, 5, 256, 257, 1024, 1300}) {
    std::vector<float> x(static_cast<size_t>(n)), y;
    for (auto& v : x) v = nd(rng);
    if (n > 1) x[0] = -200.0f;  // far below the clamp: flushes to e^-87.3, not a denormal or garbage
    const float shift = 3.0f;
    y = x;
    const float sum = ops::exp_shift_sum_fast(y.data(), n, shift);
    long double ref_sum = 0;
    double max_rel = 0;
    for (int64_t i = 0; i < n; ++i) {
      // of the float argument x - shift (its rounding, ~1e-6 relative in e at |x| ~ 30, is the
      // caller's; exp_fast's own error is what is bounded here)
      const float arg = x[i] - shift;
      const long double e = std::exp(static_cast<long double>(arg));
      ref_sum += e;
      if (arg > -87.0f) max_rel = std::fmax(max_rel, double(std::fabs((y[i] - e) / e)));
      else CHECK(y[i] >= 0.0f && y[i] < 2e-38f);
    }
    // exp_fast: < 4e-7 relative (fast_math.h); the float sum of <= 1300 positive terms in 8
    // lanes adds ~n/8 * 6e-8 relative at most.
    CHECK_MSG(max_rel < 4e-7, "n %lld: max rel %g", (long long)n, max_rel);
    CHECK_MSG(std::fabs(sum - ref_sum) / ref_sum < 2e-5, "n %lld: sum %g vs %Lg", (long long)n, sum, ref_sum);
  }
}

TEST_MAIN()
