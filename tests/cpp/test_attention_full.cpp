// model/attention_full against a naive float64 attention, on every kernel path this CPU (or qemu)
// runs: strided heads, odd sizes, one key, one query, more queries than a score block.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "model/attention_full.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;

namespace {

// out_h = softmax(Q_h K_h^T * scale) V_h in double.
std::vector<double> naive(const model::AttentionShape& s, const std::vector<float>& q, const std::vector<float>& k,
                          const std::vector<float>& v) {
  std::vector<double> out(static_cast<size_t>(s.n_q * s.n_heads * s.head_dim));
  std::vector<double> p(static_cast<size_t>(s.n_kv));
  for (int64_t h = 0; h < s.n_heads; ++h)
    for (int64_t i = 0; i < s.n_q; ++i) {
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < s.n_kv; ++j) {
        double d = 0;
        for (int64_t c = 0; c < s.head_dim; ++c)
          d += double(q[i * s.q_stride + h * s.head_dim + c]) * k[j * s.k_stride + h * s.head_dim + c];
        p[j] = d * s.scale;
        mx = std::fmax(mx, p[j]);
      }
      for (int64_t j = 0; j < s.n_kv; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t c = 0; c < s.head_dim; ++c) {
        double o = 0;
        for (int64_t j = 0; j < s.n_kv; ++j) o += p[j] / sum * v[j * s.v_stride + h * s.head_dim + c];
        out[(i * s.n_heads + h) * s.head_dim + c] = o;
      }
    }
  return out;
}

void run_case(int64_t n_q, int64_t n_kv, int64_t heads, int64_t d, ThreadPool& pool) {
  std::mt19937 rng(static_cast<unsigned>(n_q * 131 + n_kv * 7 + d));
  std::normal_distribution<float> nd(0.f, 1.f);
  model::AttentionShape s;
  s.n_q = n_q;
  s.n_kv = n_kv;
  s.n_heads = heads;
  s.head_dim = d;
  const int64_t width = heads * d;
  s.q_stride = width + 3;  // strided rows, as when Q/K/V are column slices of a wider buffer
  s.k_stride = width + 5;
  s.v_stride = width;
  s.out_stride = width + 1;
  s.scale = 2.0f / std::sqrt(static_cast<float>(d));  // sharper than uniform attention
  std::vector<float> q(n_q * s.q_stride), k(n_kv * s.k_stride), v(n_kv * s.v_stride);
  for (auto* b : {&q, &k, &v})
    for (auto& x : *b) x = nd(rng);
  std::vector<float> out(n_q * s.out_stride, 123.0f), scratch;
  model::attention_full(s, q.data(), k.data(), v.data(), out.data(), pool, scratch);
  const std::vector<double> ref = naive(s, q, k, v);
  double max_err = 0;
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t c = 0; c < width; ++c) {
      // (a plain compare, not fmax: aarch64 gcc 12 ICEs vectorizing that reduction)
      const double e = std::fabs(out[i * s.out_stride + c] - ref[i * width + c]);
      if (e > max_err) max_err = e;
    }
  // f32 products over <= 128 terms and softmax sums: ~1e-6 on O(1) values
  CHECK_MSG(max_err < 2e-5, "n_q %lld n_kv %lld heads %lld d %lld: max err %g", (long long)n_q, (long long)n_kv,
            (long long)heads, (long long)d, max_err);
  for (int64_t i = 0; i < n_q; ++i) CHECK(out[i * s.out_stride + width] == 123.0f);  // padding untouched
}

}  // namespace

TEST(attention_full_matches_naive) {
  ThreadPool pool(2);
  for (kernels::Isa isa : {kernels::Isa::Ref, kernels::best_isa()}) {
    kernels::set_isa(isa);
    run_case(1, 1, 1, 8, pool);
    run_case(5, 7, 3, 12, pool);
    run_case(64, 300, 2, 128, pool);  // resampler-like
    run_case(77, 77, 4, 72, pool);    // tower-like, odd count
    run_case(3000, 400, 1, 16, pool); // more queries than one score block (1M floats / 400 keys)
  }
  kernels::set_isa(kernels::best_isa());
}

TEST_MAIN()
