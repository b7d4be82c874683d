// Quantization ops with MLX's names, formats and algorithms (see loom/core/quant.h for layouts):
// quantize, dequantize and quantized_matmul. Affine needs biases; the fp modes (mxfp4, nvfp4, mxfp8)
// take none and keep uint8 scales. nvfp4 accepts an optional f32 global scale (size 1).
#pragma once

#include <optional>

#include "loom/core/array.h"
#include "loom/core/quant.h"

namespace loom {

// The three arrays of a quantized matrix w [..., K]: wq uint32 [..., K*bits/32], scales [..., K/gs]
// (w's dtype for affine, uint8 for the fp modes) and biases (affine only, else invalid).
struct QuantizedArrays {
  Array wq, scales, biases;
};

// Quantizes the last axis of w (floating, ndim >= 2, K divisible by group_size), as mx.quantize.
QuantizedArrays quantize(const Array& w, const QuantSpec& spec, const Array& global_scale = {}, StreamOrDevice s = {});

// Inverse of quantize. Output dtype: `dtype` when given, else the scales' dtype for affine and
// bfloat16 for the fp modes (MLX's defaults).
Array dequantize(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec,
                 std::optional<Dtype> dtype = std::nullopt, const Array& global_scale = {}, StreamOrDevice s = {});

// x [..., K] @ W.T (transpose, W [N, K] quantized along K) or x @ W (W [K, N] quantized along N),
// with W 2-d. Output dtype: promote(x, scales) for affine, x's dtype for the fp modes. f32
// activations take the exact path: equal to dequantize + matmul up to f32 summation order.
Array quantized_matmul(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                       const QuantSpec& spec, const Array& global_scale = {}, StreamOrDevice s = {});

namespace detail {
// Slow twin of quantized_matmul: dequantize to f32, then matmul (the test oracle).
Array quantized_matmul_reference(const Array& x, const Array& wq, const Array& scales, const Array& biases,
                                 bool transpose, const QuantSpec& spec, const Array& global_scale = {});
}  // namespace detail

}  // namespace loom
