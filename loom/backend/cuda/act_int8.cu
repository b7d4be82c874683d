// The registry of act_int8.h: code buffers a producer wrote, keyed by the bytes they describe.
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "loom/backend/cuda/act_int8.h"

namespace loom::cuda::act_int8 {
namespace {

struct Entry {
  std::weak_ptr<Buffer> buffer;
  int64_t offset = 0;
  size_t nbytes = 0;
  Dtype dtype = Dtype::f32;
  bool nibbles = false;
  Array q, db;
};

// A decode step consumes each entry within a kernel or two of its producer; a few are enough.
constexpr size_t kMaxEntries = 4;

struct State {
  std::mutex mu;
  std::vector<Entry> entries;  // newest last
};
// Never destroyed: entries hold device arrays, whose release must not run after the runtime's teardown.
State& state() {
  static State* s = new State;
  return *s;
}
std::atomic<int> wanted{-1};  // -1: no fast-tier product seen; else 1 for nibble order
std::atomic<int64_t> hit_count{0};

bool same_bytes(const Entry& e, const Array& a) {
  std::shared_ptr<Buffer> b = e.buffer.lock();
  return b && b == a.buffer() && e.offset == a.offset() && e.nbytes == a.nbytes() && e.dtype == a.dtype();
}

// Drops entries whose buffer is gone or is `a`'s (caller holds the state's mutex).
void drop(std::vector<Entry>& entries, const Array* a) {
  std::erase_if(entries, [&](const Entry& e) {
    std::shared_ptr<Buffer> b = e.buffer.lock();
    return !b || (a && b == a->buffer());
  });
}

}  // namespace

Int8Out offer(const Array& out) {
  const int w = wanted.load(std::memory_order_relaxed);
  if (w < 0 || !out.valid() || out.size() == 0 || out.size() % 32 || !out.is_contiguous()) return {};
  const int64_t blocks = out.size() / 32;
  Entry e{out.buffer(), out.offset(), out.nbytes(), out.dtype(), w == 1,
          Array::empty({blocks * 8}, Dtype::u32, out.device()), Array::empty({blocks * 2}, Dtype::f32, out.device())};
  const Int8Out o{e.q.raw_data(), e.db.raw_data(), e.nibbles};
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  drop(st.entries, &out);
  if (st.entries.size() >= kMaxEntries) st.entries.erase(st.entries.begin());
  st.entries.push_back(std::move(e));
  return o;
}

bool find(const Array& x, bool nibbles, Array& q, Array& db) {
  want(nibbles);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  for (auto it = st.entries.rbegin(); it != st.entries.rend(); ++it)
    if (it->nibbles == nibbles && same_bytes(*it, x)) {
      q = it->q;
      db = it->db;
      hit_count.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  return false;
}

void want(bool nibbles) { wanted.store(nibbles ? 1 : 0, std::memory_order_relaxed); }

void forget(const Array& written) {
  if (!written.valid()) return;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  drop(st.entries, &written);
}

void clear() {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.entries.clear();
}

int64_t hits() { return hit_count.load(std::memory_order_relaxed); }

}  // namespace loom::cuda::act_int8
