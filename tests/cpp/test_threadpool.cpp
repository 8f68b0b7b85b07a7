#include <atomic>
#include <vector>

#include "runtime/threadpool.h"
#include "testing.h"

using minicpmv::ThreadPool;

TEST(run_calls_every_thread_once) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int ith, int nth) {
        CHECK(nth == n);
        hits[ith].fetch_add(1);
      });
      for (int i = 0; i < n; ++i) CHECK(hits[i].load() == 1);
    }
  }
}

TEST(parallel_for_covers_range_exactly_once) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 64, 1000, 12345}) {
    for (int64_t grain : {1, 3, 64, 5000}) {
      std::vector<std::atomic<int>> seen(n);
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        CHECK(b < e && e <= n);
        for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) CHECK(seen[i].load() == 1);
    }
  }
}

TEST(worker_exception_reaches_caller_and_pool_survives) {
  ThreadPool pool(2);
  CHECK_THROWS(pool.run([&](int ith, int) {
    if (ith == 1) throw std::runtime_error("boom");
  }));
  std::atomic<int> count{0};
  pool.run([&](int, int) { count.fetch_add(1); });
  CHECK(count.load() == 2);
}

TEST_MAIN()
