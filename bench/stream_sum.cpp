// Read bandwidth of this machine, for bench/bench_full.py (not part of the CMake build: that
// script compiles it with `g++ -O3 -march=native -pthread` into its cache directory).
//
//   stream_sum MiB threads...      -> one line per thread count: "<threads> <GB/s>"
//
// STREAM-like: a 64-bit integer sum over a buffer much larger than the caches (2 GiB by default),
// split in equal contiguous parts over the threads, best of 5 passes. Four independent
// accumulators so the adds are not a dependency chain; the compiler vectorises the loop. This is
// the rate at which decode can stream weights from DRAM, the ceiling for a memory-bound matvec.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

static void sum_part(const uint64_t* p, size_t n, uint64_t* out) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
  for (; i < n; ++i) s0 += p[i];
  *out = s0 + s1 + s2 + s3;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: stream_sum MiB threads...\n");
    return 2;
  }
  const size_t n = (size_t(std::atoll(argv[1])) << 20) / 8;
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n]);
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // touch every page before timing
  uint64_t sink = 0;
  for (int a = 2; a < argc; ++a) {
    const int nt = std::max(1, std::atoi(argv[a]));
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<uint64_t> part(nt, 0);
      std::vector<std::thread> th;
      const auto t0 = std::chrono::steady_clock::now();
      for (int t = 1; t < nt; ++t)
        th.emplace_back(sum_part, buf.get() + n * t / nt, n * (t + 1) / nt - n * t / nt, &part[t]);
      sum_part(buf.get(), n / nt, &part[0]);
      for (auto& x : th) x.join();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (uint64_t v : part) sink += v;
      best = std::max(best, n * 8.0 / dt / 1e9);
    }
    std::printf("%d %.3f\n", nt, best);
  }
  return sink == 42 ? 1 : 0;  // keeps the sums live
}
