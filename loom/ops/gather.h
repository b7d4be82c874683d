// Gather-family ops for mixture-of-experts layers, with MLX names and semantics: gather_mm (a batched
// matmul whose operands are picked per output entry by index arrays), and the selection helpers a
// router needs (argpartition, argsort, take_along_axis). Each has its twin in loom::detail.
#pragma once

#include "loom/core/array.h"
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
}  // namespace detail

}  // namespace loom
