#include "loom/core/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "loom/common/error.h"
#include "loom/core/device_runtime.h"

namespace loom::allocator {
namespace {

// Size classes: powers of two up to 1 MiB, then multiples of 1 MiB — so blocks of the same
// request size always land in the same class and get reused.
size_t size_class(size_t bytes) {
  if (bytes <= 64) return 64;
  if (bytes <= (1u << 20)) {
    size_t c = 64;
    while (c < bytes) c <<= 1;
    return c;
  }
  constexpr size_t mb = 1u << 20;
  return (bytes + mb - 1) / mb * mb;
}

struct CpuCache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;
  AllocatorStats st;
};

CpuCache& cpu_cache() {
  static CpuCache* c = new CpuCache();  // leaked on purpose: buffers may die after static destructors
  return *c;
}

void cpu_release(void* p, size_t cls) {
  auto& c = cpu_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.st.active_bytes -= cls;
  c.st.cached_bytes += cls;
  c.free_blocks[cls].push_back(p);
}

}  // namespace

std::shared_ptr<Buffer> allocate(size_t bytes, Device device) {
  if (!device.is_cpu()) return require_device_runtime(device, "allocator").allocate(bytes, device);
  size_t cls = size_class(bytes);
  auto& c = cpu_cache();
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.st.allocs++;
    auto it = c.free_blocks.find(cls);
    if (it != c.free_blocks.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      c.st.cached_bytes -= cls;
    }
    c.st.active_bytes += cls;
    if (c.st.active_bytes > c.st.peak_bytes) c.st.peak_bytes = c.st.active_bytes;
  }
  if (!p) {
    p = std::aligned_alloc(64, cls);
    if (!p) {
      std::lock_guard<std::mutex> lock(c.mu);
      c.st.active_bytes -= cls;
      throw Error(format_error("allocator", "out of memory allocating " + std::to_string(bytes) + " bytes"));
    }
    std::lock_guard<std::mutex> lock(c.mu);
    c.st.system_allocs++;
  }
  auto buf = std::make_shared<Buffer>();
  buf->ptr = p;
  buf->size = bytes;
  buf->device = device;
  buf->release = [cls](void* ptr, size_t) { cpu_release(ptr, cls); };
  return buf;
}

std::shared_ptr<Buffer> wrap(void* ptr, size_t bytes, Device device, std::shared_ptr<void> keep_alive) {
  auto buf = std::make_shared<Buffer>();
  buf->ptr = ptr;
  buf->size = bytes;
  buf->device = device;
  buf->release = [keep = std::move(keep_alive)](void*, size_t) mutable { keep.reset(); };
  return buf;
}

AllocatorStats stats(Device d) {
  if (!d.is_cpu()) return require_device_runtime(d, "allocator").stats(d);
  auto& c = cpu_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.st;
}

void reset_peak(Device d) {
  if (!d.is_cpu()) return require_device_runtime(d, "allocator").reset_peak(d);
  auto& c = cpu_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.st.peak_bytes = c.st.active_bytes;
}

void clear_cache(Device d) {
  if (!d.is_cpu()) return require_device_runtime(d, "allocator").clear_cache(d);
  auto& c = cpu_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [cls, v] : c.free_blocks)
    for (void* p : v) std::free(p);
  c.free_blocks.clear();
  c.st.cached_bytes = 0;
}

}  // namespace loom::allocator
