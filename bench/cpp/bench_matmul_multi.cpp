// Separate matmul calls vs kernels::matmul_multi for a Qwen2 layer's products over one input
// (q/k/v and gate/up), over every layer of a real GGUF (weights streamed from DRAM as in decode).
// Passes alternate between the two modes so a loaded machine hurts both alike; min and median.
//
//   bench_matmul_multi MODEL.gguf [threads=1,2] [n=1] [passes=8]
//   bench_matmul_multi MODEL.gguf decode THREADS TOKENS   (a whole decode loop, for perf record)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "model/qwen2.h"
#include "runtime/threadpool.h"

using namespace minicpmv;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [threads=1,2] [n=1] [passes=8]\n", argv[0]);
    return 2;
  }
  auto model = Qwen2Model::load(argv[1]);
  if (argc > 4 && std::string(argv[2]) == "decode") {
    auto pool = std::make_shared<ThreadPool>(std::atoi(argv[3]));
    Qwen2Session s(model, pool);
    const int n_tok = std::atoi(argv[4]);
    std::vector<int32_t> tok(16);
    for (int i = 0; i < 16; ++i) tok[i] = 1000 + 37 * i;
    s.eval(tok.data(), 16);
    std::vector<double> t;
    for (int i = 0; i < n_tok; ++i) {
      const int32_t id = 500 + 11 * i;
      auto t0 = std::chrono::steady_clock::now();
      s.eval(&id, 1);
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    std::printf("decode %s threads: min %.1f ms, median %.1f ms per token\n", argv[3], 1e3 * t[0], 1e3 * t[t.size() / 2]);
    return 0;
  }
  std::vector<int> threads;
  std::stringstream ts(argc > 2 ? argv[2] : "1,2");
  for (std::string t; std::getline(ts, t, ',');) threads.push_back(std::atoi(t.c_str()));
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 1;
  const int passes = argc > 4 ? std::atoi(argv[4]) : 8;
  const Qwen2Config& c = model->config();
  std::vector<float> x(n * c.n_embd, 0.01f), q(n * c.n_embd), k(n * c.kv_dim()), v(n * c.kv_dim()),
      g(n * c.n_ff), u(n * c.n_ff);
  double bytes = 0;
  for (const Qwen2Layer& L : model->weights().layers)
    for (const kernels::Weight* w : {&L.attn_q, &L.attn_k, &L.attn_v, &L.ffn_gate, &L.ffn_up})
      bytes += static_cast<double>(w->rows()) * w->row_bytes();

  for (int nt : threads) {
    ThreadPool pool(nt);
    std::vector<double> t_sep, t_multi;
    for (int p = 0; p < 2 * passes + 2; ++p) {
      const bool multi = p % 2;
      auto t0 = std::chrono::steady_clock::now();
      for (const Qwen2Layer& L : model->weights().layers) {
        if (multi) {
          const kernels::MatmulOut qkv[3] = {{&L.attn_q, q.data()}, {&L.attn_k, k.data()}, {&L.attn_v, v.data()}};
          kernels::matmul_multi(qkv, 3, x.data(), n, pool);
          const kernels::MatmulOut gu[2] = {{&L.ffn_gate, g.data()}, {&L.ffn_up, u.data()}};
          kernels::matmul_multi(gu, 2, x.data(), n, pool);
        } else {
          kernels::matmul(L.attn_q, x.data(), n, q.data(), pool);
          kernels::matmul(L.attn_k, x.data(), n, k.data(), pool);
          kernels::matmul(L.attn_v, x.data(), n, v.data(), pool);
          kernels::matmul(L.ffn_gate, x.data(), n, g.data(), pool);
          kernels::matmul(L.ffn_up, x.data(), n, u.data(), pool);
        }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (p >= 2) (multi ? t_multi : t_sep).push_back(s);  // the first pair pages the weights in
    }
    for (auto* t : {&t_sep, &t_multi}) std::sort(t->begin(), t->end());
    auto line = [&](const char* name, const std::vector<double>& t) {
      std::printf("threads %d n %lld %-9s min %7.2f ms (%5.1f GB/s)  median %7.2f ms (%5.1f GB/s)\n", nt,
                  static_cast<long long>(n), name, 1e3 * t[0], bytes / t[0] / 1e9, 1e3 * t[t.size() / 2],
                  bytes / t[t.size() / 2] / 1e9);
    };
    line("separate", t_sep);
    line("multi", t_multi);
  }
  return 0;
}
