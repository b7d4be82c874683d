// The one-by-one form of the grouped product kernels (matmul_t_group, quantized_matmul_group in
// kernel_api.inc): the CPU backend's implementation and the CUDA fallback for shapes its fused GEMV does not
// take. Header-only, templated on the backend's product and swiglu.
#pragma once

#include <cstddef>
#include <vector>

#include "loom/core/array.h"

namespace loom {

// product(i, out) writes product i into out. Without `swiglu`, product i goes to outs[i]; with it, products
// 0 and 1 (gate, up) go to temporaries in outs[0]'s dtype and swiglu_into(gate, up, outs[0]) combines them.
template <typename Product, typename Swiglu>
void run_product_group(size_t count, bool swiglu, std::vector<Array>& outs, Product&& product, Swiglu&& swiglu_into) {
  if (!swiglu) {
    for (size_t i = 0; i < count; ++i) product(i, outs[i]);
    return;
  }
  Array gate = Array::empty(outs[0].shape(), outs[0].dtype(), outs[0].device());
  Array up = Array::empty(outs[0].shape(), outs[0].dtype(), outs[0].device());
  product(0, gate);
  product(1, up);
  swiglu_into(gate, up, outs[0]);
}

}  // namespace loom
