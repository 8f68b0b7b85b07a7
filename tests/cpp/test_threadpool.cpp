#include <atomic>
#include <thread>
#include <vector>

#include "minicpmv/error.h"
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

// Two callers sharing one pool (two sessions over one pool, driven from two Python threads with
// the GIL released): each run() must still see every thread exactly once with its own job.
TEST(concurrent_runs_from_two_threads_are_serialized) {
  ThreadPool pool(3);
  std::atomic<int> bad{0};
  auto caller = [&] {
    for (int rep = 0; rep < 300; ++rep) {
      std::vector<std::atomic<int>> hits(3);
      pool.run([&](int ith, int nth) {
        if (nth != 3) bad.fetch_add(1);
        hits[ith].fetch_add(1);
      });
      for (auto& h : hits)
        if (h.load() != 1) bad.fetch_add(1);
      std::vector<std::atomic<int>> seen(100);
      pool.parallel_for(100, 7, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
      });
      for (auto& s : seen)
        if (s.load() != 1) bad.fetch_add(1);
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  CHECK(bad.load() == 0);
}

TEST(nested_run_throws_and_nested_parallel_for_runs_inline) {
  for (int n : {1, 3}) {
    ThreadPool pool(n);
    std::atomic<int> threw{0};
    pool.run([&](int, int) {
      try {
        pool.run([](int, int) {});
      } catch (const minicpmv::InvalidArgument&) {
        threw.fetch_add(1);
      }
    });
    CHECK(threw.load() == n);
    std::vector<std::atomic<int>> seen(50 * n);
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        CHECK(pool.in_job() == (n > 1));  // a 1-thread pool runs parallel_for inline, not as a job
        pool.parallel_for(50, 4, [&](int64_t b2, int64_t e2) {
          for (int64_t i = b2; i < e2; ++i) seen[j * 50 + i].fetch_add(1);
        });
      }
    });
    for (auto& s : seen) CHECK(s.load() == 1);
    CHECK(!pool.in_job());
    pool.run([&](int, int) {});  // still usable
  }
}

// parallel_for jobs close once the caller has taken every item: workers that had not joined skip
// them. Interleaving many tiny parallel_for jobs (which workers often miss) with run() jobs (which
// every worker must run exactly once) checks that a late worker never runs a closed job, nor a
// newer job twice, nor touches a job after its call returned (the lambdas live on this stack).
TEST(closed_parallel_for_jobs_and_run_jobs_interleave) {
  for (int n : {2, 3}) {
    ThreadPool pool(n);
    for (int rep = 0; rep < 3000; ++rep) {
      std::vector<std::atomic<int>> seen(5);
      pool.parallel_for(5, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
      });
      for (auto& s : seen) CHECK(s.load() == 1);
      if (rep % 3 == 0) {
        std::vector<std::atomic<int>> hits(n);
        pool.run([&](int ith, int) { hits[ith].fetch_add(1); });
        for (auto& h : hits) CHECK(h.load() == 1);
      }
    }
  }
}

TEST_MAIN()
