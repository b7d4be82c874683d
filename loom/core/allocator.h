// Memory for arrays. The CPU allocator caches freed blocks by size class, so a steady-state decode
// step (which frees and reallocates the same sizes every step) makes no new system allocation;
// stats() exposes the counters the tests check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "loom/core/device.h"

namespace loom {

// A block of device memory shared by every array viewing it. `release` returns it to its owner
// (the caching allocator, an mmap'd file, ...).
struct Buffer {
  void* ptr = nullptr;
  size_t size = 0;
  Device device;
  std::function<void(void*, size_t)> release;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (release) release(ptr, size);
  }
};

struct AllocatorStats {
  size_t active_bytes = 0;    // bytes held by live arrays
  size_t peak_bytes = 0;      // high-water mark of active_bytes
  size_t cached_bytes = 0;    // freed blocks kept for reuse
  uint64_t system_allocs = 0; // calls that went to the system allocator
  uint64_t allocs = 0;        // all allocations served
};

namespace allocator {

// Allocates `bytes` (64-byte aligned) on `device`, reusing a cached block when one fits.
std::shared_ptr<Buffer> allocate(size_t bytes, Device device);
// Wraps memory owned elsewhere (mmap, a caller's vector); `keep_alive` is held until the last view dies.
std::shared_ptr<Buffer> wrap(void* ptr, size_t bytes, Device device, std::shared_ptr<void> keep_alive);
AllocatorStats stats(Device device = Device::cpu());
void reset_peak(Device device = Device::cpu());
// Returns cached blocks to the system.
void clear_cache(Device device = Device::cpu());

}  // namespace allocator
}  // namespace loom
