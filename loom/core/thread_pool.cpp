#include "loom/core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace loom {
namespace {

thread_local bool t_inside_pool = false;

class Pool {
 public:
  explicit Pool(int threads) { resize(threads); }
  ~Pool() { stop_workers(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    stop_workers();
    stop_ = false;
    for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    int parts = static_cast<int>(std::min<int64_t>(size(), std::max<int64_t>(1, n / std::max<int64_t>(1, grain))));
    if (parts <= 1 || t_inside_pool) {
      fn(0, n);
      return;
    }
    parts = std::min(parts, kMaxParts);
    std::lock_guard<std::mutex> run_lock(run_mu_);
    fn_ = &fn;
    n_ = n;
    remaining_.store(parts - 1, std::memory_order_relaxed);
    const uint32_t job = ++job_;
    claim_.store(claim_word(job, parts, 1), std::memory_order_release);  // publishes fn_ and n_
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    t_inside_pool = true;
    run_part(0, parts);
    // Help with parts no worker has claimed yet, then wait for the rest.
    int np = 0;
    for (int p; (p = claim(job, np)) >= 0;) {
      run_part(p, np);
      remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
    t_inside_pool = false;
    while (remaining_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    fn_ = nullptr;
  }

 private:
  // The claim word: job number (32 bits) | part count (16) | next unclaimed part (16). Parts are claimed
  // by a compare-and-swap on the whole word, so a worker can only take a part of the job whose number it
  // read, and only while that job has parts left. (A separate `next` counter reset per job let a worker
  // still leaving the previous job take an index of the next one between the main thread's stores: a
  // part ran twice, `remaining` reached zero early and `run` returned while a worker still ran its
  // caller's lambda — an intermittent crash on 16-core machines.)
  static constexpr int kMaxParts = 0xFFFF;
  static uint64_t claim_word(uint32_t job, int parts, int next) {
    return (static_cast<uint64_t>(job) << 32) | (static_cast<uint64_t>(parts) << 16) | static_cast<uint64_t>(next);
  }

  // The next part of job `job` (its part count in `parts`), or -1 when that job has no part left or
  // another job is current.
  int claim(uint32_t job, int& parts) {
    uint64_t w = claim_.load(std::memory_order_acquire);
    while (true) {
      if (static_cast<uint32_t>(w >> 32) != job) return -1;
      const int np = static_cast<int>((w >> 16) & 0xFFFF), p = static_cast<int>(w & 0xFFFF);
      if (p >= np) return -1;
      if (claim_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        parts = np;
        return p;
      }
    }
  }

  void run_part(int p, int parts) {
    int64_t begin = n_ * p / parts, end = n_ * (p + 1) / parts;
    if (begin < end) (*fn_)(begin, end);
  }

  void worker_loop(int) {
    t_inside_pool = true;
    uint64_t seen = generation_.load(std::memory_order_acquire);
    while (true) {
      // Spin a little before parking: decode issues many short jobs back to back.
      bool got = false;
      for (int spin = 0; spin < 20000; ++spin) {
        if (generation_.load(std::memory_order_acquire) != seen || stop_) { got = true; break; }
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      if (!got) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen || stop_; });
      }
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      const uint32_t job = static_cast<uint32_t>(claim_.load(std::memory_order_acquire) >> 32);
      int np = 0;
      for (int p; (p = claim(job, np)) >= 0;) {
        run_part(p, np);
        remaining_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> remaining_{0};
  std::atomic<bool> stop_{false};
  uint32_t job_ = 0;  // the last job's number (main thread, under run_mu_)
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
};

int initial_threads() {
  if (const char* env = std::getenv("LOOM_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  static Pool* p = new Pool(initial_threads());  // never destroyed: workers may outlive statics
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(std::max(1, n)); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  pool().run(n, grain, fn);
}

}  // namespace loom
