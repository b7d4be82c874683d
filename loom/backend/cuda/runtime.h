// The CUDA runtime as the rest of loom sees it (plain C++, no CUDA headers): the DeviceRuntime that
// loom_ops registers with loom_core, and facts about the GPUs. backend/no_cuda implements the same
// functions for builds without CUDA (no runtime, no devices).
#pragma once

#include <cstddef>
#include <string>

#include "loom/core/device_runtime.h"

namespace loom::cuda {

// The CUDA DeviceRuntime, or nullptr in a build without CUDA.
DeviceRuntime* runtime();
// Visible CUDA devices; 0 without a GPU or driver (never throws).
int device_count();
// "NVIDIA H100 80GB HBM3" etc. (device must exist).
std::string device_name(int index);
// Free and total device memory in bytes.
void memory_info(int index, size_t& free_bytes, size_t& total_bytes);

}  // namespace loom::cuda
