// Gather-family ops for mixture-of-experts layers, with MLX names and semantics: gather_mm (a batched
// matmul whose operands are picked per output entry by index arrays), gather_qmm (the same over a
// quantized stack of matrices), and the selection helpers a router needs (argpartition, argsort,
// take_along_axis). Each has its twin in loom::detail.
#pragma once

#include "loom/core/array.h"
#include "loom/core/quant.h"
#include "loom/core/specs.h"

namespace loom {

// out[i] = a[lhs_indices[i]] @ b[rhs_indices[i]] over the flattened batch dims of a [..., M, K] and
// b [..., K, N]. A missing (empty) index array means "each batch entry in order" (an arange shaped
// like that operand's batch dims). Out shape: broadcast(lhs.shape, rhs.shape) + [M, N], dtype
// promote(a, b), f32 accumulation. `sorted_indices` promises rhs_indices is non-decreasing (a hint;
// the result is the same). b may be a transposed view of stacked weights [E, N, K] (SwitchLinear's
// layout): half-precision weights are read as stored, never copied to f32.
Array gather_mm(const Array& a, const Array& b, const Array& lhs_indices, const Array& rhs_indices,
                bool sorted_indices = false, StreamOrDevice s = {});

// mx.gather_qmm: out[i] = x[lhs_indices[i]] @ W[rhs_indices[i]].T (transpose) or @ W[rhs_indices[i]],
// where W is the stack of quantized matrices (wq uint32 [..., N, K*bits/32] with scales/biases
// [..., N, K/group_size] for transpose; [..., K, N*bits/32] otherwise) in any format quantized_matmul
// takes. x [..., M, K]; index arrays as gather_mm's (missing = each batch entry in order). Out shape:
// broadcast(lhs, rhs) + [M, N]; dtype and precision as quantized_matmul's (f32 activations: equal to
// dequantize + gather_mm up to f32 summation order). Only the selected matrices are read.
// `sorted_indices` is a hint (rhs non-decreasing); the result does not depend on it.
Array gather_qmm(const Array& x, const Array& wq, const Array& scales, const Array& biases, const Array& lhs_indices,
                 const Array& rhs_indices, bool transpose, const QuantSpec& spec, bool sorted_indices = false,
                 const Array& global_scale = {}, StreamOrDevice s = {});

// uint32 indices that partition `a` along `axis`: the first kth+1 positions hold the indices of the
// kth+1 smallest values (MLX leaves their order unspecified; here they come sorted, ties by index).
Array argpartition(const Array& a, int kth, int axis = -1, StreamOrDevice s = {});
// uint32 indices that sort `a` along `axis` (stable).
Array argsort(const Array& a, int axis = -1, StreamOrDevice s = {});
// out[..., j, ...] = a[..., indices[..., j, ...], ...] along `axis`; indices broadcast against a
// on the other axes.
Array take_along_axis(const Array& a, const Array& indices, int axis, StreamOrDevice s = {});

namespace detail {
// gather_mm from take + matmul (the test oracle).
Array gather_mm_reference(const Array& a, const Array& b, const Array& lhs_indices, const Array& rhs_indices);
// gather_qmm from dequantize (to f32) + gather_mm_reference (the test oracle).
Array gather_qmm_reference(const Array& x, const Array& wq, const Array& scales, const Array& biases,
                           const Array& lhs_indices, const Array& rhs_indices, bool transpose, const QuantSpec& spec,
                           const Array& global_scale = {});
}  // namespace detail

}  // namespace loom
