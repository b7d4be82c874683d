// CPU kernels (the API is loom/backend/kernel_api.inc; backend/cuda/kernels.h declares the same in loom::cuda).
#pragma once

#include <vector>

#include "loom/core/array.h"
#include "loom/core/quant.h"
#include "loom/core/specs.h"

namespace loom::cpu {
#include "loom/backend/kernel_api.inc"
}  // namespace loom::cpu
