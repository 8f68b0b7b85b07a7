// Speed of the Qwen2 decoder's attention step (not a test; prints a table): Qwen2-7B shapes
// (28 query heads, 4 KV heads, head_dim 128) over an f16 KV cache, one layer:
//   decode   1 query at 512 and 2048 cached positions
//   prefill  a 512-token chunk from an empty cache (causal)
// for the previous scalar implementation (per query head, f16 -> f32 by a 256 KB table, kept here
// as the baseline), the scalar twin (ref) and every SIMD path; plus store_kv (f32 -> f16 of one
// chunk's K and V rows).
//
//   bench_attention [n_threads=1]
//
// Times are CPU seconds of the calling thread with 1 thread (the machine may be shared: it shows
// what the step costs on an idle core), best of several repetitions; wall time with more threads.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "ops/ops.h"
#include "quant/f16.h"
#include "runtime/threadpool.h"

using namespace minicpmv;
using namespace minicpmv::kernels;

namespace {

constexpr int64_t kHead = 28, kHeadKv = 4, kHd = 128, kD = kHead * kHd, kKvd = kHeadKv * kHd;

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Best of reps (after one warm-up): CPU time of this thread with 1 thread, else wall time.
double best_time(int n_threads, double budget_s, const std::function<void()>& fn) {
  fn();
  double best = 1e30, spent = 0;
  for (int rep = 0; rep < 20 && (rep < 3 || spent < budget_s); ++rep) {
    const double c0 = thread_cpu_seconds();
    const auto w0 = std::chrono::steady_clock::now();
    fn();
    const double dt = n_threads == 1 ? thread_cpu_seconds() - c0
                                     : std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
    best = std::min(best, dt);
    spent += dt;
  }
  return best;
}

// The implementation this replaces (cpp/model/qwen2.cpp before issue #8), as the baseline.
const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

void old_attention(const float* q, const uint16_t* K, const uint16_t* V, float* att, int64_t n, int64_t n_past,
                   ThreadPool& pool, std::vector<float>& scores_all, int64_t n_ctx) {
  const int64_t group = kHead / kHeadKv, n_items = n * kHead;
  const float* table = f16_table();
  std::atomic<int64_t> next{0};
  pool.run([&](int ith, int) {
    float* scores = &scores_all[static_cast<size_t>(ith) * n_ctx];
    for (int64_t it = next++; it < n_items; it = next++) {
      const int64_t i = it / kHead, h = it % kHead;
      const uint16_t* k0 = K + (h / group) * kHd;
      const uint16_t* v0 = V + (h / group) * kHd;
      const float* qh = q + i * kD + h * kHd;
      float* out = att + i * kD + h * kHd;
      const int64_t n_kv = n_past + i + 1;
      const float scale = 1.0f / std::sqrt(static_cast<float>(kHd));
      for (int64_t t = 0; t < n_kv; ++t) {
        float dot = 0;
        for (int64_t j = 0; j < kHd; ++j) dot += qh[j] * table[k0[t * kKvd + j]];
        scores[t] = dot * scale;
      }
      ops::softmax(scores, n_kv);
      std::fill(out, out + kHd, 0.0f);
      for (int64_t t = 0; t < n_kv; ++t)
        for (int64_t j = 0; j < kHd; ++j) out[j] += scores[t] * table[v0[t * kKvd + j]];
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  const int n_threads = argc > 1 ? std::atoi(argv[1]) : 1;
  ThreadPool pool(n_threads);
  const int64_t n_ctx = 2048 + 512;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> K(n_ctx * kKvd), V(n_ctx * kKvd);
  for (auto& x : K) x = fp32_to_fp16(nd(rng));
  for (auto& x : V) x = fp32_to_fp16(nd(rng));
  std::vector<float> q(512 * kD), att(512 * kD), scores(static_cast<size_t>(n_threads) * n_ctx);
  for (auto& x : q) x = nd(rng);

  std::printf("attention step, one layer: %lld heads / %lld KV heads, head_dim %lld, f16 cache, %d thread(s), %s\n",
              (long long)kHead, (long long)kHeadKv, (long long)kHd, n_threads,
              n_threads == 1 ? "CPU ms of the thread" : "wall ms");
  struct Shape {
    const char* name;
    int64_t n_q, n_past;
  };
  const Shape shapes[] = {{"decode @512", 1, 511}, {"decode @2048", 1, 2047}, {"prefill 512", 512, 0}};
  std::printf("%-14s %12s", "shape", "old-scalar");
  for (Isa isa : available_isas()) std::printf(" %10s", isa_name(isa));
  std::printf("\n");
  for (const Shape& s : shapes) {
    std::printf("%-14s", s.name);
    const double budget = s.n_q > 1 ? 3.0 : 0.5;
    std::printf(" %12.3f", 1e3 * best_time(n_threads, budget, [&] {
                  old_attention(q.data(), K.data(), V.data(), att.data(), s.n_q, s.n_past, pool, scores, n_ctx);
                }));
    for (Isa isa : available_isas()) {
      GqaArgs a;
      a.q = q.data(), a.q_stride = kD, a.out = att.data(), a.out_stride = kD;
      a.k = K.data(), a.v = V.data(), a.kv_stride = kKvd, a.kv_type = DType::F16;
      a.n_q = s.n_q, a.n_past = s.n_past, a.n_head = kHead, a.n_head_kv = kHeadKv, a.head_dim = kHd;
      a.scale = 1.0f / std::sqrt(static_cast<float>(kHd));
      std::printf(" %10.3f", 1e3 * best_time(n_threads, budget, [&] { gqa_attention(a, pool, isa); }));
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  // Decode as in a real model: 28 layers' caches (117 MB at 2048 positions) visited in turn, so the
  // K/V rows come from DRAM rather than from the cache levels the warm figures above enjoy. Two
  // cache layouts: position-major [pos][kv_head][hd] (each KV head reads 256 of every 1024 bytes)
  // and head-major [kv_head][pos][hd] (each KV head reads one contiguous run).
  {
    constexpr int64_t kLayers = 28, n_pos = 2048;
    std::vector<uint16_t> big(static_cast<size_t>(kLayers) * 2 * n_pos * kKvd);
    for (size_t j = 0; j < big.size(); ++j) big[j] = K[j % K.size()];
    for (int head_major = 0; head_major < 2; ++head_major) {
      std::printf("decode @2048 from DRAM (28 layers in turn), %s, per layer\n%-14s",
                  head_major ? "head-major cache" : "position-major cache", "");
      for (int which = head_major ? 0 : -1; which < static_cast<int>(available_isas().size()); ++which) {
        const double t = best_time(n_threads, 1.0, [&] {
          for (int64_t l = 0; l < kLayers; ++l) {
            const uint16_t* Kl = &big[static_cast<size_t>(l) * 2 * n_pos * kKvd];
            const uint16_t* Vl = Kl + n_pos * kKvd;
            if (which < 0) {
              old_attention(q.data(), Kl, Vl, att.data(), 1, n_pos - 1, pool, scores, n_ctx);
              continue;
            }
            GqaArgs a;
            a.q = q.data(), a.q_stride = kD, a.out = att.data(), a.out_stride = kD;
            a.k = Kl, a.v = Vl, a.kv_type = DType::F16;
            a.kv_stride = head_major ? kHd : kKvd;
            a.kv_head_stride = head_major ? n_pos * kHd : 0;
            a.n_q = 1, a.n_past = n_pos - 1, a.n_head = kHead, a.n_head_kv = kHeadKv, a.head_dim = kHd;
            a.scale = 1.0f / std::sqrt(static_cast<float>(kHd));
            gqa_attention(a, pool, available_isas()[which]);
          }
        });
        std::printf(which < 0 ? " %12.3f" : " %10.3f", 1e3 * t / kLayers);
      }
      std::printf("\n");
    }
  }

  // store_kv: one chunk's K and V rows, f32 -> f16.
  std::vector<float> kv(512 * kKvd);
  for (auto& x : kv) x = nd(rng);
  std::vector<uint16_t> dst(kv.size());
  for (int64_t n : {int64_t(1), int64_t(512)}) {
    std::printf("store_kv %-5lld %12.4f", (long long)n, 1e3 * best_time(1, 0.3, [&] {
                  for (int rep = 0; rep < 2; ++rep)
                    for (int64_t j = 0; j < n * kKvd; ++j) dst[j] = fp32_to_fp16(kv[j]);
                }));
    for (Isa isa : available_isas())
      std::printf(" %10.4f", 1e3 * best_time(1, 0.3, [&] {
                    for (int rep = 0; rep < 2; ++rep) fp32_to_fp16_row(kv.data(), dst.data(), n * kKvd, isa);
                  }));
    std::printf("\n");
  }
  return 0;
}
