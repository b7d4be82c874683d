// The ops samplers and logits processors are built from, beyond the core set: cumsum, put_along_axis /
// scatter_add_axis (loom/ops/ops.h), random_uniform (loom/ops/random.h) and Readback
// (loom/ops/readback.h). Validation and layout here; kernels in backend/{cpu,cuda}/sampling_support.
#include <string>
#include <utility>

#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"
#include "loom/ops/random.h"
#include "loom/ops/readback.h"

namespace loom {
using ops_detail::device_of;

Array cumsum(const Array& a, int axis, bool reverse, bool inclusive, StreamOrDevice s) {
  ops_detail::require_valid(a, "cumsum", "input");
  device_of({&a}, "cumsum");
  if (!is_floating(a.dtype()))
    throw NotSupportedError(
        format_error("cumsum", "only floating inputs are supported, got " + std::string(name(a.dtype()))));
  if (a.ndim() == 0) return reshape(cumsum(reshape(a, {1}), 0, reverse, inclusive, s), {});
  int ax = normalize_axis(axis, a.ndim(), "cumsum");
  Array moved = contiguous(astype(moveaxis(a, ax, -1, s), Dtype::f32, s), s);
  Array out = Array::empty(moved.shape(), Dtype::f32, a.device());
  if (out.size() > 0) LOOM_KERNEL(out.device(), cumsum_last)(moved, reverse, inclusive, out);
  return moveaxis(astype(out, a.dtype(), s), -1, ax, s);
}

namespace {

// put_along_axis (add = false) and scatter_add_axis (add = true).
Array scatter_along(const Array& a, const Array& indices, const Array& values, int axis, bool add, const char* op,
                    StreamOrDevice s) {
  ops_detail::require_valid(a, op, "input");
  ops_detail::require_valid(indices, op, "indices");
  ops_detail::require_valid(values, op, "values");
  if (is_floating(indices.dtype()) || indices.dtype() == Dtype::bool_)
    throw ValueError(format_error(op, "indices must be integers, got " + std::string(name(indices.dtype()))));
  if (indices.ndim() != a.ndim())
    throw ValueError(
        format_error(op, "indices need " + std::to_string(a.ndim()) + " dims, got " + shape_str(indices.shape())));
  if (add && a.dtype() != Dtype::f32 && a.dtype() != Dtype::i32)
    throw NotSupportedError(
        format_error(op, "only float32 and int32 arrays are supported, got " + std::string(name(a.dtype()))));
  const int ax = normalize_axis(axis, a.ndim(), op);
  const int64_t n = a.shape()[ax];
  // The indices' other axes must broadcast to a's (the output keeps a's shape).
  Shape ishape = a.shape();
  ishape[ax] = indices.shape()[ax];
  for (int d = 0; d < a.ndim(); ++d)
    if (d != ax && indices.shape()[d] != 1 && indices.shape()[d] != a.shape()[d])
      throw ValueError(format_error(op, "indices of shape " + shape_str(indices.shape()) +
                                            " do not broadcast against an input of shape " + shape_str(a.shape()) +
                                            " outside axis " + std::to_string(ax)));
  // Host indices (token ids) are checked; device ones come from ops and the kernels skip strays.
  if (indices.device().is_cpu())
    for (int64_t v : indices.to_vector<int64_t>())
      if (v < -n || v >= n)
        throw ValueError(format_error(op, "index " + std::to_string(v) + " is out of range for axis " +
                                              std::to_string(ax) + " of size " + std::to_string(n)));
  Array src = a, idx = indices, val = values;
  ops_detail::unify_devices({&src, &idx, &val}, op);
  idx = broadcast_to(idx, ishape, s);
  val = broadcast_to(astype(val, a.dtype(), s), ishape, s);  // throws naming broadcast_to when it cannot
  // A fresh row-major copy of a with the axis last, updated in place as [rows, n].
  Array moved = moveaxis(src, ax, -1, s);
  Array out = Array::empty(moved.shape(), a.dtype(), src.device());
  if (out.size() > 0) LOOM_KERNEL(out.device(), copy)(moved, out);
  const int64_t k = ishape[ax];
  const int64_t rows = n > 0 ? out.size() / n : 0;
  if (rows > 0 && k > 0) {
    Array im = moveaxis(idx, ax, -1, s), vm = moveaxis(val, ax, -1, s);
    Array idx2 = reshape(contiguous(astype(im, Dtype::i32, s), s), {rows, k});
    bool scalar_values = true;  // a broadcast scalar stays one element
    for (int64_t st : vm.strides()) scalar_values = scalar_values && st == 0;
    Array val2 = scalar_values ? Array(vm.buffer(), {rows, k}, {0, 0}, vm.offset(), vm.dtype())
                               : reshape(contiguous(vm, s), {rows, k});
    Array out2 = reshape(out, {rows, n});
    LOOM_KERNEL(out.device(), scatter_last)(idx2, val2, add, out2);
  }
  return moveaxis(out, -1, ax, s);
}

}  // namespace

Array put_along_axis(const Array& a, const Array& indices, const Array& values, int axis, StreamOrDevice s) {
  return scatter_along(a, indices, values, axis, /*add=*/false, "put_along_axis", s);
}

Array scatter_add_axis(const Array& a, const Array& indices, const Array& values, int axis, StreamOrDevice s) {
  return scatter_along(a, indices, values, axis, /*add=*/true, "scatter_add_axis", s);
}

Array random_uniform(const Shape& shape, uint64_t key, StreamOrDevice s) {
  for (int64_t d : shape)
    if (d < 0) throw ValueError(format_error("random_uniform", "negative dimension in shape " + shape_str(shape)));
  Array out = Array::empty(shape, Dtype::f32, ops_detail::target_device(s));
  if (out.size() > 0) LOOM_KERNEL(out.device(), random_uniform)(key, out);
  return out;
}

// ---- Readback ----

Readback::Readback(const Array& a) {
  ops_detail::require_valid(a, "Readback", "input");
  if (a.nbytes() > kMaxBytes)
    throw ValueError(format_error("Readback", "reads at most " + std::to_string(kMaxBytes) + " bytes, got " +
                                                  shape_str(a.shape()) + " " + std::string(name(a.dtype()))));
  Array c = contiguous(a);
  device_ = c.device();
  shape_ = c.shape();
  dtype_ = c.dtype();
  ticket_ = LOOM_KERNEL(device_, queue_readback)(c);
}

Readback::Readback(Readback&& o) noexcept
    : device_(o.device_), ticket_(std::exchange(o.ticket_, -1)), shape_(std::move(o.shape_)), dtype_(o.dtype_) {}

Readback& Readback::operator=(Readback&& o) noexcept {
  if (this != &o) {
    release();
    device_ = o.device_;
    ticket_ = std::exchange(o.ticket_, -1);
    shape_ = std::move(o.shape_);
    dtype_ = o.dtype_;
  }
  return *this;
}

Readback::~Readback() { release(); }

Array Readback::get() {
  if (ticket_ < 0) throw ValueError(format_error("Readback::get", "nothing pending (get() was already called)"));
  Array out = Array::empty(shape_, dtype_, Device::cpu());
  int64_t t = std::exchange(ticket_, -1);
  LOOM_KERNEL(device_, finish_readback)(t, out);
  return out;
}

void Readback::release() noexcept {
  if (ticket_ < 0) return;
  try {
    get();  // frees the staging slot
  } catch (...) {
    ticket_ = -1;
  }
}

}  // namespace loom
