#include "runtime/threadpool.h"

#include <algorithm>
#include <cstdlib>
#include <exception>

#include "minicpmv/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MCV_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define MCV_PAUSE() __asm__ __volatile__("yield")
#else
#define MCV_PAUSE() ((void)0)
#endif

namespace minicpmv {

namespace {
// Spin this many rounds before sleeping: a decode step issues calls microseconds apart, and a
// sleep/wake through the kernel costs more than the work of a small matvec.
constexpr int kSpinRounds = 1 << 14;

// The pools whose job the calling thread is running, innermost first (a job may use another
// pool, e.g. a single-thread one, so this is a chain rather than one pointer).
struct JobFrame {
  const ThreadPool* pool;
  const JobFrame* outer;
};
thread_local const JobFrame* tl_jobs = nullptr;

struct InJob {
  JobFrame frame;
  explicit InJob(const ThreadPool* p) : frame{p, tl_jobs} { tl_jobs = &frame; }
  ~InJob() { tl_jobs = frame.outer; }
  InJob(const InJob&) = delete;
  InJob& operator=(const InJob&) = delete;
};
}  // namespace

bool ThreadPool::in_job() const {
  for (const JobFrame* f = tl_jobs; f; f = f->outer)
    if (f->pool == this) return true;
  return false;
}

int ThreadPool::default_threads() {
  if (const char* env = std::getenv("MINICPMV_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads > 0 ? n_threads : default_threads()) {
  threads_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

namespace {
constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kCountMask = kClosed - 1;
inline uint64_t gen_tag(uint64_t generation) { return (generation & 0xffffffffu) << 32; }
}  // namespace

void ThreadPool::worker(int ith) {
  InJob mark(this);  // a worker only ever runs this pool's jobs
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinRounds; ++spin) {
      if (spin < kSpinRounds / 2)
        MCV_PAUSE();
      else
        std::this_thread::yield();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load()) return;
    // Join the job of generation `gen` unless it is closed or already replaced by a newer one
    // (then job_ may point elsewhere: do not touch it; the loop picks the newer one up).
    uint64_t e = entry_.load(std::memory_order_acquire);
    bool joined = false;
    while ((e & ~(kClosed | kCountMask)) == gen_tag(gen) && !(e & kClosed)) {
      if (entry_.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;
    try {
      (*job_)(ith, n_threads_);
    } catch (...) {
      std::lock_guard<std::mutex> lock(err_mu_);
      if (!worker_error_) worker_error_ = std::current_exception();
    }
    finished_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) { dispatch(fn, true); }

void ThreadPool::dispatch(const std::function<void(int, int)>& fn, bool every_thread) {
  if (in_job())
    throw InvalidArgument("ThreadPool::run called from inside a job of the same pool (not reentrant)");
  InJob mark(this);
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  std::lock_guard<std::mutex> serialize(run_mu_);
  job_ = &fn;
  finished_.store(0, std::memory_order_relaxed);
  // entry_ is in place before the generation moves: a worker that sees the new generation sees
  // its entry word (and job_).
  const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
  entry_.store(gen_tag(gen), std::memory_order_release);
  {
    // Taking the lock orders the increment with a worker that is about to wait.
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  std::exception_ptr err;
  try {
    fn(0, n_threads_);
  } catch (...) {
    err = std::current_exception();
  }
  int wait_for = n_threads_ - 1;
  if (!every_thread)
    wait_for = static_cast<int>(entry_.fetch_or(kClosed, std::memory_order_acq_rel) & kCountMask);
  // Wait for the workers; yield after a while so that an oversubscribed machine (more runnable
  // threads than cores) lets a descheduled worker finish instead of burning our time slice.
  for (int spin = 0; finished_.load(std::memory_order_acquire) != wait_for; ++spin) {
    if (spin < kSpinRounds)
      MCV_PAUSE();
    else
      std::this_thread::yield();
  }
  job_ = nullptr;
  if (!err && worker_error_) err = worker_error_;
  worker_error_ = nullptr;
  if (err) std::rethrow_exception(err);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (n_threads_ == 1 || n <= grain || in_job()) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  dispatch([&](int, int) {
    for (;;) {
      int64_t b = next.fetch_add(grain, std::memory_order_relaxed);
      if (b >= n) break;
      fn(b, std::min(n, b + grain));
    }
  }, /*every_thread=*/false);
}

ThreadPool& default_pool() {
  static ThreadPool pool(0);
  return pool;
}

}  // namespace minicpmv
