// Creation and elementwise ops: dtype promotion (MLX's rules, weak scalars), broadcasting to a
// common shape through zero-stride views, then one kernel call.
#include <cmath>

#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"

namespace loom {
using ops_detail::device_of;

namespace {

bool is_comparison(BinaryOp op) {
  switch (op) {
    case BinaryOp::equal: case BinaryOp::not_equal: case BinaryOp::less: case BinaryOp::less_equal:
    case BinaryOp::greater: case BinaryOp::greater_equal: case BinaryOp::logical_and: case BinaryOp::logical_or:
      return true;
    default: return false;
  }
}

bool float_only(UnaryOp op) {
  switch (op) {
    case UnaryOp::negative: case UnaryOp::abs: case UnaryOp::square: case UnaryOp::logical_not: case UnaryOp::sign:
      return false;
    default: return true;
  }
}
}  // namespace

Array zeros(const Shape& shape, Dtype dtype, StreamOrDevice s) { return full(shape, 0.0, dtype, s); }
Array ones(const Shape& shape, Dtype dtype, StreamOrDevice s) { return full(shape, 1.0, dtype, s); }

Array full(const Shape& shape, double value, Dtype dtype, StreamOrDevice s) {
  Array out = Array::empty(shape, dtype, ops_detail::target_device(s));
  device_of({&out}, "full");
  LOOM_KERNEL(out.device(), fill)(out, value);
  return out;
}

Array arange(double start, double stop, double step, Dtype dtype, StreamOrDevice s) {
  if (step == 0) throw ValueError(format_error("arange", "step must not be zero"));
  int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((stop - start) / step)));
  Array out = Array::empty({n}, dtype, ops_detail::target_device(s));
  device_of({&out}, "arange");
  LOOM_KERNEL(out.device(), arange)(out, start, step);
  return out;
}

Array zeros_like(const Array& a, StreamOrDevice) { return zeros(a.shape(), a.dtype(), a.device()); }

Array weak_scalar(double v, const Array& like) {
  Dtype dt = like.dtype();
  if (!is_floating(dt) && v != std::floor(v)) dt = Dtype::f32;
  if (dt == Dtype::bool_) dt = Dtype::i32;
  return Array::scalar(v, dt);
}

Array unary(UnaryOp op, const Array& a, StreamOrDevice) {
  ops_detail::require_valid(a, "unary", "input");
  device_of({&a}, "unary");
  Dtype out_dt = a.dtype();
  if (op == UnaryOp::logical_not) out_dt = Dtype::bool_;
  else if (float_only(op) && !is_floating(a.dtype())) out_dt = Dtype::f32;
  Array out = Array::empty(a.shape(), out_dt, a.device());
  LOOM_KERNEL(out.device(), unary)(op, a, out);
  return out;
}

Array binary(BinaryOp op, const Array& a_in, const Array& b_in, StreamOrDevice) {
  ops_detail::require_valid(a_in, "binary", "first operand");
  ops_detail::require_valid(b_in, "binary", "second operand");
  Array a = a_in, b = b_in;
  Device dev = ops_detail::unify_devices({&a, &b}, "binary");
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  Dtype dt = promote_types(a.dtype(), b.dtype());
  if (op == BinaryOp::divide && !is_floating(dt)) dt = Dtype::f32;
  Dtype out_dt = is_comparison(op) ? Dtype::bool_ : dt;
  Array out = Array::empty(shape, out_dt, dev);
  LOOM_KERNEL(dev, binary)(op, broadcast_to(a, shape), broadcast_to(b, shape), out);
  return out;
}

Array where(const Array& cond_in, const Array& a_in, const Array& b_in, StreamOrDevice) {
  Array cond = cond_in, a = a_in, b = b_in;
  Device dev = ops_detail::unify_devices({&cond, &a, &b}, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
  Array out = Array::empty(shape, promote_types(a.dtype(), b.dtype()), dev);
  LOOM_KERNEL(dev, where)(broadcast_to(cond, shape), broadcast_to(a, shape), broadcast_to(b, shape), out);
  return out;
}

#define LOOM_UNARY(fn, op) \
  Array fn(const Array& a, StreamOrDevice s) { return unary(UnaryOp::op, a, s); }
LOOM_UNARY(negative, negative)
LOOM_UNARY(abs, abs)
LOOM_UNARY(exp, exp)
LOOM_UNARY(log, log)
LOOM_UNARY(log1p, log1p)
LOOM_UNARY(sqrt, sqrt)
LOOM_UNARY(rsqrt, rsqrt)
LOOM_UNARY(square, square)
LOOM_UNARY(sin, sin)
LOOM_UNARY(cos, cos)
LOOM_UNARY(tanh, tanh)
LOOM_UNARY(sigmoid, sigmoid)
LOOM_UNARY(erf, erf)
LOOM_UNARY(floor, floor)
LOOM_UNARY(reciprocal, reciprocal)
LOOM_UNARY(logical_not, logical_not)
LOOM_UNARY(silu, silu)
LOOM_UNARY(gelu, gelu)
LOOM_UNARY(gelu_approx, gelu_approx)
LOOM_UNARY(relu, relu)
LOOM_UNARY(softplus, softplus)
#undef LOOM_UNARY

#define LOOM_BINARY(fn, op) \
  Array fn(const Array& a, const Array& b, StreamOrDevice s) { return binary(BinaryOp::op, a, b, s); }
LOOM_BINARY(add, add)
LOOM_BINARY(subtract, subtract)
LOOM_BINARY(multiply, multiply)
LOOM_BINARY(divide, divide)
LOOM_BINARY(maximum, maximum)
LOOM_BINARY(minimum, minimum)
LOOM_BINARY(power, power)
LOOM_BINARY(equal, equal)
LOOM_BINARY(not_equal, not_equal)
LOOM_BINARY(less, less)
LOOM_BINARY(less_equal, less_equal)
LOOM_BINARY(greater, greater)
LOOM_BINARY(greater_equal, greater_equal)
LOOM_BINARY(logical_and, logical_and)
LOOM_BINARY(logical_or, logical_or)
#undef LOOM_BINARY

Array operator-(const Array& a) { return negative(a); }
Array operator+(const Array& a, const Array& b) { return add(a, b); }
Array operator-(const Array& a, const Array& b) { return subtract(a, b); }
Array operator*(const Array& a, const Array& b) { return multiply(a, b); }
Array operator/(const Array& a, const Array& b) { return divide(a, b); }
Array operator+(const Array& a, double b) { return add(a, weak_scalar(b, a)); }
Array operator-(const Array& a, double b) { return subtract(a, weak_scalar(b, a)); }
Array operator*(const Array& a, double b) { return multiply(a, weak_scalar(b, a)); }
Array operator/(const Array& a, double b) { return divide(a, weak_scalar(b, a)); }
Array operator+(double a, const Array& b) { return add(weak_scalar(a, b), b); }
Array operator-(double a, const Array& b) { return subtract(weak_scalar(a, b), b); }
Array operator*(double a, const Array& b) { return multiply(weak_scalar(a, b), b); }
Array operator/(double a, const Array& b) { return divide(weak_scalar(a, b), b); }

// Shape sugar on Array.
Array Array::reshape(const Shape& shape) const { return loom::reshape(*this, shape); }
Array Array::transpose(const std::vector<int>& axes) const { return loom::transpose(*this, axes); }
Array Array::transpose() const { return loom::transpose(*this); }
Array Array::astype(Dtype dtype) const { return loom::astype(*this, dtype); }

}  // namespace loom
