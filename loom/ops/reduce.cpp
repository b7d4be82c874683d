// Reductions: the reduced axes are moved last and made contiguous, so each backend only reduces
// independent rows of a [rows, n] matrix.
#include <algorithm>

#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"

namespace loom {
using ops_detail::device_of;

namespace {

struct Prepared {
  Array rows;       // contiguous [kept..., n]
  Shape out_shape;  // result shape (keepdims applied)
  int64_t n;
};

Prepared prepare(const Array& a, std::vector<int> axes, bool keepdims, const char* op) {
  ops_detail::require_valid(a, op, "input");
  device_of({&a}, op);
  if (axes.empty())
    for (int i = 0; i < a.ndim(); ++i) axes.push_back(i);
  for (auto& ax : axes) ax = normalize_axis(ax, a.ndim(), op);
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  std::vector<int> perm;
  Shape kept, out_shape;
  int64_t n = 1;
  for (int i = 0; i < a.ndim(); ++i) {
    bool red = std::find(axes.begin(), axes.end(), i) != axes.end();
    if (!red) {
      perm.push_back(i);
      kept.push_back(a.shape()[i]);
      out_shape.push_back(a.shape()[i]);
    } else {
      n *= a.shape()[i];
      if (keepdims) out_shape.push_back(1);
    }
  }
  for (int ax : axes) perm.push_back(ax);
  Array t = contiguous(transpose(a, perm));
  Shape rs = kept;
  rs.push_back(n);
  return {reshape(t, rs), out_shape, n};
}

Array reduce(ReduceOp op, const Array& a, const std::vector<int>& axes, bool keepdims, const char* name) {
  Prepared p = prepare(a, axes, keepdims, name);
  Dtype dt = a.dtype();
  if (op == ReduceOp::sum && (dt == Dtype::bool_ || dt == Dtype::u8 || dt == Dtype::i8 || dt == Dtype::i16)) dt = Dtype::i32;
  if (p.n == 0 && (op == ReduceOp::max || op == ReduceOp::min))
    throw ValueError(format_error(name, "cannot reduce over an empty axis"));
  Array out = Array::empty(p.out_shape, dt, a.device());
  LOOM_KERNEL(out.device(), reduce_last)(op, p.rows, out);
  return out;
}

Array arg_reduce(ArgReduceOp op, const Array& a, int axis, bool keepdims, const char* name) {
  Prepared p = prepare(a, {axis}, keepdims, name);
  if (p.n == 0) throw ValueError(format_error(name, "cannot reduce over an empty axis"));
  Array out = Array::empty(p.out_shape, Dtype::u32, a.device());
  LOOM_KERNEL(out.device(), arg_reduce_last)(op, p.rows, out);
  return out;
}

}  // namespace

Array sum(const Array& a, const std::vector<int>& axes, bool keepdims, StreamOrDevice) {
  return reduce(ReduceOp::sum, a, axes, keepdims, "sum");
}
Array prod(const Array& a, const std::vector<int>& axes, bool keepdims, StreamOrDevice) {
  return reduce(ReduceOp::prod, a, axes, keepdims, "prod");
}
Array max(const Array& a, const std::vector<int>& axes, bool keepdims, StreamOrDevice) {
  return reduce(ReduceOp::max, a, axes, keepdims, "max");
}
Array min(const Array& a, const std::vector<int>& axes, bool keepdims, StreamOrDevice) {
  return reduce(ReduceOp::min, a, axes, keepdims, "min");
}
Array mean(const Array& a, const std::vector<int>& axes, bool keepdims, StreamOrDevice s) {
  Array x = is_floating(a.dtype()) ? a : astype(a, Dtype::f32);
  Prepared p = prepare(x, axes, keepdims, "mean");
  Array out = Array::empty(p.out_shape, x.dtype(), x.device());
  LOOM_KERNEL(out.device(), reduce_last)(ReduceOp::sum, p.rows, out);
  return out * (1.0 / static_cast<double>(std::max<int64_t>(1, p.n)));
}
Array argmax(const Array& a, int axis, bool keepdims, StreamOrDevice) {
  return arg_reduce(ArgReduceOp::argmax, a, axis, keepdims, "argmax");
}
Array argmin(const Array& a, int axis, bool keepdims, StreamOrDevice) {
  return arg_reduce(ArgReduceOp::argmin, a, axis, keepdims, "argmin");
}

Array softmax(const Array& a, int axis, StreamOrDevice s) {
  int ax = normalize_axis(axis, a.ndim(), "softmax");
  device_of({&a}, "softmax");
  Array moved = contiguous(moveaxis(a, ax, -1, s), s);
  Dtype dt = is_floating(a.dtype()) ? a.dtype() : Dtype::f32;
  Array out = Array::empty(moved.shape(), dt, a.device());
  LOOM_KERNEL(out.device(), softmax_last)(moved, out);
  return moveaxis(out, -1, ax, s);
}

Array logsumexp(const Array& a, int axis, bool keepdims, StreamOrDevice) {
  Prepared p = prepare(a, {axis}, keepdims, "logsumexp");
  Array out = Array::empty(p.out_shape, is_floating(a.dtype()) ? a.dtype() : Dtype::f32, a.device());
  LOOM_KERNEL(out.device(), logsumexp_last)(p.rows, out);
  return out;
}

}  // namespace loom
