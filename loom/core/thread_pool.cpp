#include "loom/core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
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
    std::lock_guard<std::mutex> run_lock(run_mu_);
    fn_ = &fn;
    n_ = n;
    parts_ = parts;
    remaining_.store(parts - 1, std::memory_order_relaxed);
    next_.store(1, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    t_inside_pool = true;
    run_part(0);
    // Help with parts no worker has claimed yet, then wait for the rest.
    for (int p; (p = next_.fetch_add(1, std::memory_order_acq_rel)) < parts_;) {
      run_part(p);
      remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
    t_inside_pool = false;
    while (remaining_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    fn_ = nullptr;
  }

 private:
  void run_part(int p) {
    int64_t begin = n_ * p / parts_, end = n_ * (p + 1) / parts_;
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
      for (int p; (p = next_.fetch_add(1, std::memory_order_acq_rel)) < parts_;) {
        run_part(p);
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
  std::atomic<int> next_{0}, remaining_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0;
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
