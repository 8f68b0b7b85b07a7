// A persistent thread pool: threads are created once and reused by every call, so a decode step
// (a few hundred kernel calls) never creates a thread. The calling thread takes part as thread 0.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace minicpmv {

class ThreadPool {
 public:
  // n_threads <= 0 means "one per available core".
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(ith, nth) once on each of the nth threads and returns when all have finished.
  // Not reentrant: fn must not call run() on the same pool.
  void run(const std::function<void(int ith, int nth)>& fn);

  // Calls fn(begin, end) over [0, n) in chunks of `grain` items, handed out dynamically so that
  // a thread that finishes early takes more (threads on a phone or a VM do not run at one speed).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

  static int default_threads();

 private:
  void worker(int ith);

  int n_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::mutex err_mu_;
  std::exception_ptr worker_error_;  // first exception thrown by a worker in the current run()
};

// A pool used when the caller passes none (tests, one-off conversions).
ThreadPool& default_pool();

}  // namespace minicpmv
