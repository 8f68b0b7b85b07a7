// kernels::matmul_multi (several weights over one X in one pool job) against separate
// kernels::matmul calls, bit for bit: the fused call must pick the same kernel and the same
// activation bytes for every weight and only change how rows are grouped into pool tasks, so any
// difference (a weight given another weight's activation layout, a wrong row offset or output
// stride, a chunk that starts off a 16-row tile) is a bug; no tolerance. Every available ISA path,
// mixed types (Q4_K + Q6_K + Q4_0 + F16 + Q8_0, as q/k/v of a Q4_K_M file mix Q4_K and Q6_K),
// token counts 1 (decode kernels) to 67 (prefill tiles and tails), 1 and 2 threads, row counts
// that are not multiples of 16. The separate calls are themselves checked against the scalar
// reference in test_kernels.
#include <cstring>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "minicpmv/error.h"
#include "quant/quant.h"
#include "runtime/threadpool.h"
#include "testing.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

namespace {

struct TestWeight {
  std::vector<uint8_t> bytes;
  Weight w;
};

TestWeight make_weight(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> f(rows * cols);
  for (float& v : f) v = u(rng);
  TestWeight t;
  t.bytes.resize(rows * row_size(type, cols));
  quantize_rows(type, f.data(), t.bytes.data(), rows, cols);
  t.w = Weight::view(type, rows, cols, t.bytes.data());
  return t;
}

// Fused and separate products of `types` x rows over n tokens on every path and pool; returns
// the number of mismatching cases (each printed).
int compare(const std::vector<DType>& types, const std::vector<int64_t>& rows, int64_t cols,
            const std::vector<int64_t>& ns, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<TestWeight> ws;
  for (size_t i = 0; i < types.size(); ++i) ws.push_back(make_weight(types[i], rows[i], cols, rng));
  ThreadPool p1(1), p2(2);
  int bad = 0;
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t n : ns) {
    std::vector<float> x(n * cols);
    for (float& v : x) v = g(rng);
    for (Isa isa : available_isas()) {
      for (ThreadPool* pool : {&p1, &p2}) {
        std::vector<std::vector<float>> sep(ws.size()), fused(ws.size());
        std::vector<MatmulOut> outs(ws.size());
        for (size_t i = 0; i < ws.size(); ++i) {
          sep[i].assign(n * rows[i], -1.0f);
          fused[i].assign(n * rows[i], -2.0f);
          matmul(ws[i].w, x.data(), n, sep[i].data(), *pool, isa);
          outs[i].w = &ws[i].w;
          outs[i].y = fused[i].data();
        }
        matmul_multi(outs.data(), static_cast<int>(outs.size()), x.data(), n, *pool, isa);
        for (size_t i = 0; i < ws.size(); ++i) {
          if (std::memcmp(sep[i].data(), fused[i].data(), sep[i].size() * sizeof(float)) != 0) {
            ++bad;
            std::printf("  mismatch: %s, %d threads, n %lld, weight %zu (%s, %lld x %lld)\n", isa_name(isa),
                        pool->size(), static_cast<long long>(n), i, type_name(types[i]),
                        static_cast<long long>(rows[i]), static_cast<long long>(cols));
          }
        }
      }
    }
  }
  return bad;
}

bool throws_invalid(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InvalidArgument&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

}  // namespace

TEST(mixed_types_every_path_bit_identical) {
  const std::vector<int64_t> ns = {1, 2, 5, 16, 17, 67};
  CHECK(compare({DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::F16, DType::Q8_0}, {100, 37, 53, 29, 150}, 512, ns,
                1) == 0);
}

// The decode shapes of a Q4_K_M layer in miniature: q, k (Q4_K) and v (Q6_K), gate/up; with
// enough rows that 2 threads split every weight into several chunks.
TEST(qkv_and_gate_up_shapes) {
  const std::vector<int64_t> ns = {1, 2, 17};
  CHECK(compare({DType::Q4_K, DType::Q4_K, DType::Q6_K}, {448, 64, 64}, 768, ns, 2) == 0);
  CHECK(compare({DType::Q4_K, DType::Q4_K}, {1003, 1003}, 512, ns, 3) == 0);
  CHECK(compare({DType::Q8_0, DType::F32, DType::Q4_0}, {301, 45, 96}, 256, ns, 4) == 0);
}

TEST(one_weight_equals_matmul) {
  CHECK(compare({DType::Q6_K}, {257}, 512, {1, 5}, 5) == 0);
}

TEST(bad_arguments) {
  std::mt19937 rng(6);
  TestWeight a = make_weight(DType::Q4_K, 16, 256, rng);
  TestWeight b = make_weight(DType::Q4_K, 16, 512, rng);
  std::vector<float> x(512), y1(16), y2(16);
  ThreadPool pool(1);
  MatmulOut mismatch[2] = {{&a.w, y1.data()}, {&b.w, y2.data()}};
  CHECK(throws_invalid([&] { matmul_multi(mismatch, 2, x.data(), 1, pool); }));
  CHECK(throws_invalid([&] { matmul_multi(mismatch, 0, x.data(), 1, pool); }));
  CHECK(throws_invalid([&] { matmul_multi(nullptr, 1, x.data(), 1, pool); }));
  Weight empty;
  MatmulOut with_empty[2] = {{&a.w, y1.data()}, {&empty, y2.data()}};
  CHECK(throws_invalid([&] { matmul_multi(with_empty, 2, x.data(), 1, pool); }));
  MatmulOut null_y[1] = {{&a.w, nullptr}};
  CHECK(throws_invalid([&] { matmul_multi(null_y, 1, x.data(), 1, pool); }));
  MatmulOut many[kMaxMatmulMulti + 1];
  for (MatmulOut& m : many) m = {&a.w, y1.data()};
  CHECK(throws_invalid([&] { matmul_multi(many, kMaxMatmulMulti + 1, x.data(), 1, pool); }));
  MatmulOut ok[1] = {{&a.w, y1.data()}};
  CHECK(throws_invalid([&] { matmul_multi(ok, 1, nullptr, 1, pool); }));
  CHECK(!throws_invalid([&] { matmul_multi(ok, 1, x.data(), 1, pool); }));
}

TEST_MAIN()
