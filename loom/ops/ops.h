// Public ops: free functions with MLX names and argument order; const Array& in, Array out,
// StreamOrDevice last. Each validates its arguments (throwing loom::ValueError with "[op] ..."),
// allocates its output and runs the kernel of the arrays' device. Views (reshape of contiguous
// data, transpose, slice, broadcast_to, expand_dims, squeeze) share the input's buffer.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/specs.h"
#include "loom/ops/device.h"

namespace loom {

// ---- creation ----
Array zeros(const Shape& shape, Dtype dtype = Dtype::f32, StreamOrDevice s = {});
Array ones(const Shape& shape, Dtype dtype = Dtype::f32, StreamOrDevice s = {});
Array full(const Shape& shape, double value, Dtype dtype = Dtype::f32, StreamOrDevice s = {});
Array arange(double start, double stop, double step = 1.0, Dtype dtype = Dtype::i32, StreamOrDevice s = {});
Array zeros_like(const Array& a, StreamOrDevice s = {});

// ---- type and layout ----
Array astype(const Array& a, Dtype dtype, StreamOrDevice s = {});
// `a` itself when already row-major contiguous, else a contiguous copy.
Array contiguous(const Array& a, StreamOrDevice s = {});
// Copies to another device (a no-op handle copy when already there).
Array to_device(const Array& a, Device d);

// ---- shape (views where possible) ----
Array reshape(const Array& a, Shape shape, StreamOrDevice s = {});  // one -1 allowed
Array flatten(const Array& a, int start_axis = 0, int end_axis = -1, StreamOrDevice s = {});
Array transpose(const Array& a, const std::vector<int>& axes, StreamOrDevice s = {});
Array transpose(const Array& a, StreamOrDevice s = {});  // reverses the axes
Array swapaxes(const Array& a, int axis1, int axis2, StreamOrDevice s = {});
Array moveaxis(const Array& a, int source, int destination, StreamOrDevice s = {});
Array expand_dims(const Array& a, int axis, StreamOrDevice s = {});
Array squeeze(const Array& a, int axis, StreamOrDevice s = {});
Array broadcast_to(const Array& a, const Shape& shape, StreamOrDevice s = {});
Shape broadcast_shapes(const Shape& a, const Shape& b);
// a[start:stop:step] per axis (negative indices count from the end; clamped as Python does).
Array slice(const Array& a, const Shape& start, const Shape& stop, const Shape& step = {}, StreamOrDevice s = {});
// Slices one axis.
Array slice_axis(const Array& a, int axis, int64_t start, int64_t stop, StreamOrDevice s = {});
// A copy of `dst` whose region [start, start + src.shape) holds `src` (functional, as MLX).
Array slice_update(const Array& dst, const Array& src, const Shape& start, StreamOrDevice s = {});
// In place: writes `src` (broadcast, converted) into the view `dst`. For caches that own their storage.
void assign(const Array& dst, const Array& src);
// In place: writes `src` into `dst` at positions [p, p + src.shape(axis)) of `axis`, where
// p = position[0] - base is read on dst's device when the write runs (int32 `position` of one
// element, on dst's device). For a captured decode step, whose cache slot only the device knows.
// Same dtype; src's other dims equal dst's. A p outside [0, dst.shape(axis) - src.shape(axis)]
// writes nothing.
void assign_at(const Array& dst, const Array& src, int axis, const Array& position, int64_t base = 0);
Array concatenate(const std::vector<Array>& arrays, int axis = 0, StreamOrDevice s = {});
Array stack(const std::vector<Array>& arrays, int axis = 0, StreamOrDevice s = {});
std::vector<Array> split(const Array& a, const std::vector<int64_t>& indices, int axis = 0, StreamOrDevice s = {});
std::vector<Array> split(const Array& a, int parts, int axis, StreamOrDevice s = {});
// Gathers along `axis` with integer indices (any shape): out shape = a.shape[:axis] + idx.shape + a.shape[axis+1:].
Array take(const Array& a, const Array& indices, int axis, StreamOrDevice s = {});
// A copy of `a` with a[..., indices[..., j, ...], ...] = values[..., j, ...] along `axis`
// (mx.put_along_axis): indices (integers, a.ndim dims) broadcast to a's shape on the other axes,
// values (converted to a's dtype) to the indices' shape. Negative indices count from the end. Host
// indices must be in range (checked); device ones out of range are skipped (never read back). With a
// repeated index one of its writes wins (on the CPU the last).
Array put_along_axis(const Array& a, const Array& indices, const Array& values, int axis, StreamOrDevice s = {});
// As put_along_axis, but adds the values (mx.scatter_add_axis; a repeated index adds each of its
// values). f32 and i32 only; on CUDA repeated indices add in an unspecified order.
Array scatter_add_axis(const Array& a, const Array& indices, const Array& values, int axis, StreamOrDevice s = {});

// ---- elementwise ----
Array negative(const Array& a, StreamOrDevice s = {});
Array abs(const Array& a, StreamOrDevice s = {});
Array exp(const Array& a, StreamOrDevice s = {});
Array log(const Array& a, StreamOrDevice s = {});
Array log1p(const Array& a, StreamOrDevice s = {});
Array sqrt(const Array& a, StreamOrDevice s = {});
Array rsqrt(const Array& a, StreamOrDevice s = {});
Array square(const Array& a, StreamOrDevice s = {});
Array sin(const Array& a, StreamOrDevice s = {});
Array cos(const Array& a, StreamOrDevice s = {});
Array tanh(const Array& a, StreamOrDevice s = {});
Array sigmoid(const Array& a, StreamOrDevice s = {});
Array erf(const Array& a, StreamOrDevice s = {});
Array floor(const Array& a, StreamOrDevice s = {});
Array reciprocal(const Array& a, StreamOrDevice s = {});
Array logical_not(const Array& a, StreamOrDevice s = {});
Array unary(UnaryOp op, const Array& a, StreamOrDevice s = {});

Array add(const Array& a, const Array& b, StreamOrDevice s = {});
Array subtract(const Array& a, const Array& b, StreamOrDevice s = {});
Array multiply(const Array& a, const Array& b, StreamOrDevice s = {});
Array divide(const Array& a, const Array& b, StreamOrDevice s = {});
Array maximum(const Array& a, const Array& b, StreamOrDevice s = {});
Array minimum(const Array& a, const Array& b, StreamOrDevice s = {});
Array power(const Array& a, const Array& b, StreamOrDevice s = {});
Array equal(const Array& a, const Array& b, StreamOrDevice s = {});
Array not_equal(const Array& a, const Array& b, StreamOrDevice s = {});
Array less(const Array& a, const Array& b, StreamOrDevice s = {});
Array less_equal(const Array& a, const Array& b, StreamOrDevice s = {});
Array greater(const Array& a, const Array& b, StreamOrDevice s = {});
Array greater_equal(const Array& a, const Array& b, StreamOrDevice s = {});
Array logical_and(const Array& a, const Array& b, StreamOrDevice s = {});
Array logical_or(const Array& a, const Array& b, StreamOrDevice s = {});
Array binary(BinaryOp op, const Array& a, const Array& b, StreamOrDevice s = {});
Array where(const Array& cond, const Array& a, const Array& b, StreamOrDevice s = {});
// A weak scalar (MLX's rule): takes `like`'s dtype when that is floating, or when `v` is integral.
Array weak_scalar(double v, const Array& like);

// ---- activations ----
Array silu(const Array& a, StreamOrDevice s = {});
Array gelu(const Array& a, StreamOrDevice s = {});
Array gelu_approx(const Array& a, StreamOrDevice s = {});
Array relu(const Array& a, StreamOrDevice s = {});
Array softplus(const Array& a, StreamOrDevice s = {});

// ---- reductions (axes may be negative; empty axes = all) ----
Array sum(const Array& a, const std::vector<int>& axes = {}, bool keepdims = false, StreamOrDevice s = {});
Array mean(const Array& a, const std::vector<int>& axes = {}, bool keepdims = false, StreamOrDevice s = {});
Array max(const Array& a, const std::vector<int>& axes = {}, bool keepdims = false, StreamOrDevice s = {});
Array min(const Array& a, const std::vector<int>& axes = {}, bool keepdims = false, StreamOrDevice s = {});
Array prod(const Array& a, const std::vector<int>& axes = {}, bool keepdims = false, StreamOrDevice s = {});
// uint32 indices of the first maximum along `axis`.
Array argmax(const Array& a, int axis = -1, bool keepdims = false, StreamOrDevice s = {});
Array argmin(const Array& a, int axis = -1, bool keepdims = false, StreamOrDevice s = {});
// Softmax along `axis`, computed in f32, returned in a's dtype.
Array softmax(const Array& a, int axis = -1, StreamOrDevice s = {});
Array logsumexp(const Array& a, int axis = -1, bool keepdims = false, StreamOrDevice s = {});
// Cumulative sum along `axis` (mx.cumsum), inclusive or exclusive, from the front or (reverse) the
// back. Floating inputs, result in a's dtype; f32 accumulation in one fixed blocked order shared by the
// CPU and CUDA kernels, so both give the same bits (the order: backend/cpu/sampling_support.cpp).
Array cumsum(const Array& a, int axis = -1, bool reverse = false, bool inclusive = true, StreamOrDevice s = {});

// ---- linear algebra ----
// a [.., M, K] @ b [.., K, N] with broadcast batch dims (1-d operands as numpy). f32 accumulation.
Array matmul(const Array& a, const Array& b, StreamOrDevice s = {});
// x [..., K] @ W_i.T for one or several row-major model weights W_i [N_i, K] read with one input (a layer's
// q/k/v projections): each result as matmul(x, transpose(W_i)) gives it. Weights of one floating dtype go
// to the backend together (CUDA decode: one GEMV launch); anything else runs as separate matmuls. The W_i
// must be weights no op of the current step writes (a backend may read them early: kernel_api.inc).
std::vector<Array> matmuls_t(const Array& x, const std::vector<Array>& ws, StreamOrDevice s = {});
// swiglu(x @ gate.T, x @ up.T) with each product in its output dtype first (a gated MLP's first half), as
// fast::swiglu of the two matmuls; one pass where the backend can.
Array swiglu_matmul_t(const Array& x, const Array& gate, const Array& up, StreamOrDevice s = {});

// ---- operators ----
Array operator-(const Array& a);
Array operator+(const Array& a, const Array& b);
Array operator-(const Array& a, const Array& b);
Array operator*(const Array& a, const Array& b);
Array operator/(const Array& a, const Array& b);
Array operator+(const Array& a, double b);
Array operator-(const Array& a, double b);
Array operator*(const Array& a, double b);
Array operator/(const Array& a, double b);
Array operator+(double a, const Array& b);
Array operator-(double a, const Array& b);
Array operator*(double a, const Array& b);
Array operator/(double a, const Array& b);

// Normalises a possibly negative axis for an ndim-d array; throws naming `op` when out of range.
int normalize_axis(int axis, int ndim, const char* op);

}  // namespace loom
