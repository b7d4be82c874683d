// Helpers of the CUDA parity tests: each CUDA kernel is checked against its CPU twin (the CPU kernel,
// itself checked against numpy and the detail:: references in tests/ops) on the same inputs, with
// the same non-contiguous views on both devices. Without a usable GPU these tests skip — the one
// skip the project allows (issue 7): they run on the GPU machine in every session that touches CUDA.
#pragma once

#include <gtest/gtest.h>

#include "loom/core/device_runtime.h"
#include "loom/ops/ops.h"
#include "tests/ops/op_test_util.h"

namespace loom::test {

inline const Device kGpu = Device::cuda(0);

#define LOOM_REQUIRE_CUDA()                                                    \
  do {                                                                         \
    if (!::loom::device_available(::loom::Device::cuda(0))) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

// The same view (shape, strides, offset) of a copy of a's whole buffer on the GPU, so kernels see
// the same non-contiguous layouts on both devices.
inline Array on_gpu(const Array& a) {
  if (!a.valid()) return a;
  const Buffer& b = *a.buffer();
  Array whole = Array::empty({static_cast<int64_t>(b.size)}, Dtype::u8, kGpu);
  require_device_runtime(kGpu, "on_gpu").copy_bytes(whole.raw_data(), kGpu, b.ptr, b.device, b.size);
  return Array(whole.buffer(), a.shape(), a.strides(), a.offset(), a.dtype());
}

inline Array on_cpu(const Array& a) { return a.valid() ? to_device(a, Device::cpu()) : a; }

// GPU result (moved to the host) vs the CPU twin: same shape and dtype, values within rel_tol of
// max |cpu| (op_test_util's all_close).
inline ::testing::AssertionResult gpu_matches_cpu(const Array& gpu, const Array& cpu, double rel_tol) {
  if (!(gpu.device() == kGpu)) return ::testing::AssertionFailure() << "result is on " << gpu.device().str();
  if (gpu.dtype() != cpu.dtype())
    return ::testing::AssertionFailure() << "dtype " << name(gpu.dtype()) << " vs cpu " << name(cpu.dtype());
  return all_close(on_cpu(gpu), cpu, rel_tol);
}

}  // namespace loom::test
