// Reading a small device result (a sampled token id) back to the host without waiting for the work
// queued after it. A Readback queues the copy on the array's stream when it is made; get() waits for
// that copy alone, so work queued later (the next decode step) keeps the device busy meanwhile. This
// is what lets the generation loop queue step n+1 before it reads token n (mlx-lm's look-ahead). On
// the CPU, where every op has finished when it returns, the bytes are copied at construction.
#pragma once

#include <cstddef>
#include <cstdint>

#include "loom/core/array.h"

namespace loom {

class Readback {
 public:
  static constexpr size_t kMaxBytes = 256;

  Readback() = default;
  // Queues the copy of `a` (at most kMaxBytes; any layout).
  explicit Readback(const Array& a);
  Readback(Readback&& o) noexcept;
  Readback& operator=(Readback&& o) noexcept;
  Readback(const Readback&) = delete;
  Readback& operator=(const Readback&) = delete;
  ~Readback();

  // True between construction and get().
  bool pending() const { return ticket_ >= 0; }
  // The array on the CPU (same shape and dtype), after waiting for its copy. Once per Readback.
  Array get();

 private:
  void release() noexcept;

  Device device_;
  int64_t ticket_ = -1;
  Shape shape_;
  Dtype dtype_ = Dtype::f32;
};

}  // namespace loom
