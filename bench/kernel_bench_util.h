// Timing shared by the CUDA kernel benchmarks (bench/kernel_bench_*.cpp; not tests).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>

#include "loom/core/device.h"
#include "loom/ops/ops.h"

namespace loom::kbench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Mean seconds per call of f on `dev`: 3 warm-up calls, then batches (doubling from 5, at most 1000)
// until min_ms have passed, the device synchronized after each batch.
inline double time_call(const std::function<void()>& f, Device dev, double min_ms) {
  for (int i = 0; i < 3; ++i) f();
  synchronize(dev);
  int64_t calls = 0;
  const double t0 = now_s();
  double t = t0;
  int batch = 5;
  while ((t - t0) * 1e3 < min_ms) {
    for (int i = 0; i < batch; ++i) f();
    synchronize(dev);
    calls += batch;
    batch = std::min(batch * 2, 1000);
    t = now_s();
  }
  return (t - t0) / static_cast<double>(calls);
}

}  // namespace loom::kbench
