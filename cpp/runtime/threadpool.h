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
  // Calls from different threads (two sessions sharing a pool, used from two Python threads with
  // the GIL released) are serialized. Not reentrant: run() from inside a job of the same pool
  // throws InvalidArgument (it would otherwise deadlock or mix the two jobs' thread counts).
  void run(const std::function<void(int ith, int nth)>& fn);

  // Calls fn(begin, end) over [0, n) in chunks of `grain` items, handed out dynamically so that
  // a thread that finishes early takes more (threads on a phone or a VM do not run at one speed).
  // From inside a job of the same pool it runs fn(0, n) on the calling thread (fn has no thread
  // index, so that is always correct).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

  // The calling thread is running a job of this pool (a worker, or the caller inside run()).
  bool in_job() const;

  static int default_threads();

 private:
  void worker(int ith);
  // Publishes fn to the workers and runs it as thread 0. every_thread: wait until each worker has
  // run it (run()). Otherwise (parallel_for, whose items any thread may take) the job closes once
  // the caller's own share is done: only workers that had already joined are waited for, and a
  // worker that wakes later skips it, so a descheduled worker cannot hold the caller up.
  void dispatch(const std::function<void(int, int)>& fn, bool every_thread);

  int n_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  // entry_ = (low 32 bits of the job's generation) << 32 | kClosed | number of workers that
  // joined the job; a worker joins with a CAS, which fails once the caller has closed the job.
  std::atomic<uint64_t> entry_{0};
  std::atomic<int> finished_{0};  // joined workers that have finished the current job
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::mutex run_mu_;  // one job at a time: job_ / entry_ / finished_ / worker_error_ belong to it
  std::mutex err_mu_;
  std::exception_ptr worker_error_;  // first exception thrown by a worker in the current run()
};

// A pool used when the caller passes none (tests, one-off conversions).
ThreadPool& default_pool();

}  // namespace minicpmv
