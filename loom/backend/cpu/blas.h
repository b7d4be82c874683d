// OpenBLAS as the CPU kernels use it: sgemm, its thread count set once to loom's pool size.
#pragma once

#include <cblas.h>

#include "loom/core/thread_pool.h"

namespace loom::cpu {

// Call before the first cblas_* of a kernel: OpenBLAS then splits a product over num_threads() threads.
inline void blas_threads_once() {
  static const bool done = [] {
    openblas_set_num_threads(num_threads());
    return true;
  }();
  (void)done;
}

}  // namespace loom::cpu
