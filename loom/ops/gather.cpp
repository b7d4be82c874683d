// gather_mm, gather_qmm, argpartition, argsort, take_along_axis: validation and layout
// (loom/ops/gather.h); kernels in backend/cpu/gather_mm.cpp and backend/cpu/gather_qmm.cpp.
#include "loom/ops/gather.h"

#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"

namespace loom {
using ops_detail::device_of;

namespace {

Shape batch_of(const Array& x) { return Shape(x.shape().begin(), x.shape().end() - 2); }

// The index array of one operand: given (checked integer, in range) or an arange over its batch.
Array operand_indices(const Array& idx, const Array& x, const char* what, const char* op = "gather_mm") {
  Shape batch = batch_of(x);
  int64_t n = shape_size(batch);
  // Made where the operand lives: an arange on the CPU would be uploaded (a stream sync, which also
  // breaks a captured decode step).
  if (!idx.valid()) return reshape(arange(0, static_cast<double>(n), 1, Dtype::i32, x.device()), batch);
  if (is_floating(idx.dtype()) || idx.dtype() == Dtype::bool_)
    throw ValueError(format_error(op, std::string(what) + " must be integers, got " + std::string(name(idx.dtype()))));
  // Host indices are checked here; device ones come from ops that keep them in range (MoE routing's
  // argpartition), and reading them back would stall the stream (and break a captured decode step).
  if (idx.device().is_cpu())
    for (int64_t v : idx.to_vector<int64_t>())
      if (v < 0 || v >= n)
      throw ValueError(format_error(op, std::string(what) + " holds " + std::to_string(v) +
                                            ", out of range for a batch of " + std::to_string(n)));
  return idx;
}

}  // namespace

Array gather_mm(const Array& a_in, const Array& b_in, const Array& lhs_indices, const Array& rhs_indices,
                bool sorted_indices, StreamOrDevice s) {
  (void)sorted_indices;  // a locality hint; the CPU kernel's result does not depend on it
  ops_detail::require_valid(a_in, "gather_mm", "a");
  ops_detail::require_valid(b_in, "gather_mm", "b");
  device_of({&a_in, &b_in, &lhs_indices, &rhs_indices}, "gather_mm");
  if (a_in.ndim() < 2 || b_in.ndim() < 2)
    throw ValueError(format_error("gather_mm", "operands need at least 2 dims, got " + shape_str(a_in.shape()) +
                                                   " and " + shape_str(b_in.shape())));
  if (!is_floating(a_in.dtype()) || !is_floating(b_in.dtype()))
    throw ValueError(format_error("gather_mm", "only floating point operands are supported"));
  int64_t M = a_in.shape(-2), K = a_in.shape(-1), N = b_in.shape(-1);
  if (b_in.shape(-2) != K)
    throw ValueError(format_error("gather_mm", "inner dimensions differ: " + shape_str(a_in.shape()) + " @ " +
                                                   shape_str(b_in.shape())));
  Array li = operand_indices(lhs_indices, a_in, "lhs_indices");
  Array ri = operand_indices(rhs_indices, b_in, "rhs_indices");
  Shape batch = broadcast_shapes(li.shape(), ri.shape());
  // Flat int32 index lists of the output batch.
  li = contiguous(astype(broadcast_to(li, batch), Dtype::i32));
  ri = contiguous(astype(broadcast_to(ri, batch), Dtype::i32));
  Array a = contiguous(reshape(a_in, {-1, M, K}));
  // b: keep a view whose K or N axis is unit-stride (stacked weights [E, N, K] transposed, or row-major).
  Array b = b_in;
  int nb = b.ndim();
  bool ok_layout = b.strides()[nb - 2] == 1 || b.strides()[nb - 1] == 1 || K == 1;
  bool flat_batch = true;  // batch dims must flatten to one stride
  for (int d = nb - 3; d > 0; --d)
    if (b.shape()[d - 1] > 1 && b.strides()[d - 1] != b.strides()[d] * b.shape()[d]) flat_batch = false;
  if (!ok_layout || !flat_batch) b = contiguous(b);
  Shape b3{shape_size(batch_of(b)), K, N};
  Strides bs{nb > 2 ? b.strides()[nb - 3] : 0, b.strides()[nb - 2], b.strides()[nb - 1]};
  Array bv(b.buffer(), b3, bs, b.offset(), b.dtype());
  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {M, N});
  // Index lists given on the host join a device op.
  ops_detail::unify_devices({&a, &bv, &li, &ri}, "gather_mm");
  Array out = Array::empty(out_shape, promote_types(a.dtype(), b.dtype()), a.device());
  if (out.size() > 0) LOOM_KERNEL(out.device(), gather_mm)(a, bv, li, ri, out);
  (void)s;
  return out;
}

Array gather_qmm(const Array& x_in, const Array& wq_in, const Array& scales_in, const Array& biases_in,
                 const Array& lhs_indices, const Array& rhs_indices, bool transpose, const QuantSpec& spec,
                 bool sorted_indices, const Array& global_scale, StreamOrDevice) {
  (void)sorted_indices;  // the kernels group pairs by matrix themselves; the result does not depend on it
  const char* op = "gather_qmm";
  ops_detail::require_valid(x_in, op, "x");
  ops_detail::require_valid(wq_in, op, "the packed matrices");
  ops_detail::require_valid(scales_in, op, "scales");
  device_of({&x_in, &wq_in, &scales_in, &biases_in, &lhs_indices, &rhs_indices}, op);
  if (!quant_spec_valid(spec)) throw ValueError(format_error(op, "unsupported quantization " + quant_spec_str(spec)));
  const bool affine = spec.mode == QuantMode::affine;
  if (wq_in.dtype() != Dtype::u32)
    throw ValueError(format_error(op, "the packed matrices must be uint32, got " + std::string(name(wq_in.dtype()))));
  if (wq_in.ndim() < 2 || x_in.ndim() < 2)
    throw ValueError(format_error(op, "x and the packed matrices need at least 2 dims, got " + shape_str(x_in.shape()) +
                                          " and " + shape_str(wq_in.shape())));
  if (affine) {
    if (!biases_in.valid()) throw ValueError(format_error(op, "biases must be provided for affine quantization"));
    if (!is_floating(scales_in.dtype()) || !is_floating(biases_in.dtype()) || biases_in.shape() != scales_in.shape())
      throw ValueError(format_error(op, "affine scales and biases must be floating and of one shape, got " +
                                            shape_str(scales_in.shape()) + " and " + shape_str(biases_in.shape())));
  } else if (biases_in.valid() || scales_in.dtype() != Dtype::u8) {
    throw ValueError(format_error(op, std::string(quant_mode_name(spec.mode)) + " takes uint8 scales and no biases"));
  }
  Shape wlead(wq_in.shape().begin(), wq_in.shape().end() - 1);
  Shape slead(scales_in.shape().begin(), scales_in.shape().end() - 1);
  if (scales_in.ndim() != wq_in.ndim() || wlead != slead ||
      wq_in.shape(-1) * 32 != scales_in.shape(-1) * spec.group_size * spec.bits)
    throw ValueError(format_error(op, "packed matrices " + shape_str(wq_in.shape()) + " and scales " +
                                          shape_str(scales_in.shape()) + " do not fit " + quant_spec_str(spec)));
  float g = 0.0f;
  if (global_scale.valid()) {
    if (spec.mode != QuantMode::nvfp4 || global_scale.size() != 1 || global_scale.dtype() != Dtype::f32)
      throw ValueError(format_error(op, "a global scale must be a float32 scalar and is only supported for nvfp4"));
    g = global_scale.item<float>();
  }
  const int64_t rows = wq_in.shape(-2), words = wq_in.shape(-1), k_full = words * 32 / spec.bits;
  const int64_t K = transpose ? k_full : rows, N = transpose ? rows : k_full, M = x_in.shape(-2);
  if (x_in.shape(-1) != K)
    throw ValueError(format_error(op, "last dimension of x " + shape_str(x_in.shape()) +
                                          " does not match the expanded matrices (" +
                                          std::to_string(transpose ? N : K) + ", " + std::to_string(transpose ? K : N) +
                                          ") with transpose=" + (transpose ? "true" : "false")));
  if (!is_floating(x_in.dtype()) || !is_compute_dtype(x_in.dtype()))
    throw ValueError(
        format_error(op, "activations must be float32, bfloat16 or float16, got " + std::string(name(x_in.dtype()))));
  const Dtype odt =
      affine ? promote_types(x_in.dtype(), promote_types(scales_in.dtype(), biases_in.dtype())) : x_in.dtype();
  if (!is_compute_dtype(odt))
    throw ValueError(format_error(op, "output dtype " + std::string(name(odt)) + " is not a compute dtype"));
  Array li = operand_indices(lhs_indices, x_in, "lhs_indices", op);
  Array ri = operand_indices(rhs_indices, wq_in, "rhs_indices", op);
  Shape batch = broadcast_shapes(li.shape(), ri.shape());
  li = contiguous(astype(broadcast_to(li, batch), Dtype::i32));
  ri = contiguous(astype(broadcast_to(ri, batch), Dtype::i32));
  // Contiguous stacks [E, rows, .]; affine scales and biases share one float dtype (as quantized_matmul).
  Array x = contiguous(reshape(x_in, {-1, M, K}));
  Array wq = contiguous(reshape(wq_in, {-1, rows, words}));
  Dtype sdt = Dtype::u8;
  if (affine)
    sdt =
        is_compute_dtype(scales_in.dtype()) && scales_in.dtype() == biases_in.dtype() ? scales_in.dtype() : Dtype::f32;
  Array scales = contiguous(reshape(astype(scales_in, sdt), {-1, rows, scales_in.shape(-1)}));
  Array biases = affine ? contiguous(reshape(astype(biases_in, sdt), {-1, rows, biases_in.shape(-1)})) : Array();
  ops_detail::unify_devices({&x, &wq, &scales, &biases, &li, &ri}, op);
  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {M, N});
  Array out = Array::empty(out_shape, odt, x.device());
  if (out.size() > 0) LOOM_KERNEL(out.device(), gather_qmm)(x, wq, scales, biases, li, ri, transpose, spec, g, out);
  return out;
}

Array argpartition(const Array& a, int kth, int axis, StreamOrDevice s) {
  ops_detail::require_valid(a, "argpartition", "input");
  device_of({&a}, "argpartition");
  int ax = normalize_axis(axis, a.ndim(), "argpartition");
  int64_t n = a.shape()[ax];
  if (kth < 0) kth += static_cast<int>(n);
  if (kth < 0 || kth >= n)
    throw ValueError(format_error("argpartition", "kth " + std::to_string(kth) + " is out of range for an axis of " +
                                                      std::to_string(n)));
  Array moved = contiguous(astype(moveaxis(a, ax, -1, s), Dtype::f32, s), s);
  Array out = Array::empty(moved.shape(), Dtype::u32, a.device());
  LOOM_KERNEL(out.device(), argpartition_last)(moved, kth, out);
  return moveaxis(out, -1, ax, s);
}

Array argsort(const Array& a, int axis, StreamOrDevice s) {
  int ax = normalize_axis(axis, a.ndim(), "argsort");
  return argpartition(a, static_cast<int>(a.shape()[ax]) - 1, ax, s);
}

Array take_along_axis(const Array& a, const Array& indices, int axis, StreamOrDevice s) {
  ops_detail::require_valid(a, "take_along_axis", "input");
  device_of({&a, &indices}, "take_along_axis");
  if (indices.ndim() != a.ndim())
    throw ValueError(format_error("take_along_axis", "indices need " + std::to_string(a.ndim()) + " dims, got " +
                                                         shape_str(indices.shape())));
  int ax = normalize_axis(axis, a.ndim(), "take_along_axis");
  // Move the axis last, flatten, and offset each row's indices by row * n: one flat take.
  Shape other_a = a.shape(), other_i = indices.shape();
  other_a[ax] = 1;
  other_i[ax] = 1;
  Shape bshape = broadcast_shapes(other_a, other_i);
  Shape sa = bshape, si = bshape;
  sa[ax] = a.shape()[ax];
  si[ax] = indices.shape()[ax];
  Array am = moveaxis(broadcast_to(a, sa), ax, -1, s);
  Array im = moveaxis(broadcast_to(astype(indices, Dtype::i64), si), ax, -1, s);
  int64_t n = am.shape(-1), k = im.shape(-1), rows = am.size() / std::max<int64_t>(1, n);
  // (Made on the operand's device: an arange on the CPU would be an upload, a stream sync that also
  // keeps a decode step from being recorded as a CUDA graph.)
  Array base = reshape(arange(0, static_cast<double>(rows * n), static_cast<double>(n), Dtype::i64, am.device()),
                       {rows, 1});
  Array flat_idx = add(reshape(im, {rows, k}), base);
  Array got = take(reshape(contiguous(am), {-1}), flat_idx, 0, s);  // [rows, k]
  Shape out_moved = im.shape();
  return moveaxis(reshape(got, out_moved), -1, ax, s);
}

namespace detail {

Array gather_mm_reference(const Array& a, const Array& b, const Array& lhs_indices, const Array& rhs_indices) {
  int64_t M = a.shape(-2), K = a.shape(-1), N = b.shape(-1);
  auto flat_batch = [](const Array& x) { return shape_size(Shape(x.shape().begin(), x.shape().end() - 2)); };
  Array li = lhs_indices.valid() ? lhs_indices
                                 : reshape(arange(0, static_cast<double>(flat_batch(a)), 1, Dtype::i32),
                                           Shape(a.shape().begin(), a.shape().end() - 2));
  Array ri = rhs_indices.valid() ? rhs_indices
                                 : reshape(arange(0, static_cast<double>(flat_batch(b)), 1, Dtype::i32),
                                           Shape(b.shape().begin(), b.shape().end() - 2));
  Shape batch = broadcast_shapes(li.shape(), ri.shape());
  Array lf = reshape(contiguous(broadcast_to(li, batch)), {-1});
  Array rf = reshape(contiguous(broadcast_to(ri, batch)), {-1});
  Array A = take(reshape(a, {-1, M, K}), lf, 0);  // [P, M, K]
  Array B = take(reshape(b, {-1, K, N}), rf, 0);  // [P, K, N]
  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {M, N});
  return reshape(matmul(A, B), out_shape);
}

Array gather_qmm_reference(const Array& x, const Array& wq, const Array& scales, const Array& biases,
                           const Array& lhs_indices, const Array& rhs_indices, bool transpose, const QuantSpec& spec,
                           const Array& global_scale) {
  bool affine = spec.mode == QuantMode::affine;
  Array w = dequantize(wq, affine ? astype(scales, Dtype::f32) : scales, affine ? astype(biases, Dtype::f32) : biases,
                       spec, Dtype::f32, global_scale);
  Array y = gather_mm_reference(astype(x, Dtype::f32), transpose ? swapaxes(w, -1, -2) : w, lhs_indices, rhs_indices);
  Dtype odt = affine ? promote_types(x.dtype(), promote_types(scales.dtype(), biases.dtype())) : x.dtype();
  return odt == Dtype::f32 ? y : astype(y, odt);
}

}  // namespace detail
}  // namespace loom
