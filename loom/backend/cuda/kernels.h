// CUDA kernels: the API of loom/backend/kernel_api.inc in loom::cuda. Implemented by backend/cuda/*.cu
// when LOOM_CUDA is on, and by backend/no_cuda (each kernel throws NotSupportedError) when it is off.
#pragma once

#include <vector>

#include "loom/core/array.h"
#include "loom/core/quant.h"
#include "loom/core/specs.h"

namespace loom::cuda {
#include "loom/backend/kernel_api.inc"
}  // namespace loom::cuda
