// ops/fast_math against libm (double) over the ranges the encoder sees, with odd lengths so the
// 8-lane main loops and their tails both run.
#include <cmath>
#include <random>
#include <vector>

#include "ops/fast_math.h"
#include "ops/ops.h"
#include "testing.h"

using namespace minicpmv;

TEST(exp_fast_relative_error) {
  std::vector<float> x, y;
  for (float v = -87.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  y.resize(x.size());
  ops::exp_fast(x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = std::exp(static_cast<double>(x[i]));
    worst = std::fmax(worst, std::fabs(y[i] - ref) / ref);
  }
  CHECK_MSG(worst < 4e-7, "worst relative error %g", worst);
  float big[3] = {-200.0f, -1e30f, 0.0f};
  ops::exp_fast(big, big, 3);
  CHECK(big[0] >= 0.0f && big[0] < 1e-37f && big[1] >= 0.0f && big[1] < 1e-37f && big[2] == 1.0f);
}

TEST(softmax_fast_matches_softmax) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  for (int64_t n : {1, 2, 7, 8, 9, 63, 1024, 1031}) {
    std::vector<float> a(n), b(n);
    for (auto& v : a) v = nd(rng);
    b = a;
    const float scale = n % 2 ? 0.37f : 1.0f;
    ops::scale(a.data(), scale, n);
    ops::softmax(a.data(), n);
    ops::softmax_fast(b.data(), n, scale);
    double worst = 0, sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      worst = std::fmax(worst, std::fabs(a[i] - b[i]) / std::fmax(a[i], 1e-30f));
      sum += b[i];
    }
    CHECK_MSG(worst < 2e-6, "n %lld worst rel %g", (long long)n, worst);
    CHECK(std::fabs(sum - 1.0) < 1e-5);
  }
}

TEST(gelu_tanh_fast_matches_gelu_tanh) {
  std::vector<float> a, b;
  for (float v = -30.0f; v <= 30.0f; v += 0.00731f) a.push_back(v);
  b = a;
  const int64_t n = static_cast<int64_t>(a.size());
  ops::gelu_tanh(a.data(), n);
  ops::gelu_tanh_fast(b.data(), n);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = -30.0 + 0.00731 * static_cast<double>(i);
    worst = std::fmax(worst, std::fabs(a[i] - b[i]) / std::fmax(1.0, std::fabs(x)));
  }
  CHECK_MSG(worst < 1e-6, "worst scaled error %g", worst);
}

// Against the libm pieces the decoder used before (ops::silu then ops::mul), on a dense grid of
// gates (past the exp clamp at both ends) times up values of both signs and odd tail lengths.
TEST(swiglu_fast_matches_silu_times_up) {
  std::vector<float> g, u;
  for (float v = -120.0f; v <= 120.0f; v += 0.00917f) {
    g.push_back(v);
    u.push_back(static_cast<float>(g.size() % 7) - 3.25f);
  }
  for (int64_t n : {int64_t(1), int64_t(255), int64_t(257), static_cast<int64_t>(g.size())}) {
    std::vector<float> a(g.begin(), g.begin() + n), b = a;
    ops::silu(a.data(), n);
    ops::mul(a.data(), u.data(), n);
    ops::swiglu_fast(b.data(), u.data(), n);
    double worst = 0;
    // (a plain compare: GCC 12 for aarch64 ICEs vectorizing an fmax reduction of this shape)
    for (int64_t i = 0; i < n; ++i) {
      const double err = std::fabs(a[i] - b[i]) / (std::fmax(1.0, std::fabs(g[i])) * std::fabs(u[i]));
      if (err > worst) worst = err;
    }
    CHECK_MSG(worst < 1e-6, "n %lld: worst scaled error %g", static_cast<long long>(n), worst);
  }
}

TEST_MAIN()
