// CPU quantization kernels, called by loom/ops/quantized.cpp after validation: arrays are on the
// CPU, contiguous, with the shapes and dtypes the op promised. backend/cuda will mirror this file.
#pragma once

#include "loom/core/array.h"
#include "loom/core/quant.h"

namespace loom::cpu {

// w [rows, K] (f32/f16/bf16) -> wq uint32 [rows, K*bits/32], scales/biases [rows, K/gs].
void quantize(const Array& w, const QuantSpec& spec, float global_scale, Array& wq, Array& scales, Array& biases);
// wq [rows, Kw] -> out [rows, K] in out's dtype. `global_scale` is used by nvfp4 only (0 = none).
void dequantize(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec, float global_scale,
                Array& out);
// out [M, N] = x [M, K] @ W.T (transpose: wq [N, ..]) or x @ W (wq [K, ..]); x and out f32.
void quantized_matmul(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                      const QuantSpec& spec, float global_scale, Array& out);

}  // namespace loom::cpu
