// matmul: numpy semantics for 1-d operands, broadcast batch dims, and a layout check so kernels
// only see row-major or transposed 2-d blocks (anything else is copied first).
#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom {
using ops_detail::device_of;

namespace {
// True when the last two dims are row-major or column-major with a legal leading dimension.
bool blas_layout(const Array& a) {
  int n = a.ndim();
  int64_t r = a.shape()[n - 2], c = a.shape()[n - 1], rs = a.strides()[n - 2], cs = a.strides()[n - 1];
  if ((cs == 1 || c == 1) && (rs >= c || r == 1)) return true;
  if ((rs == 1 || r == 1) && (cs >= r || c == 1)) return true;
  return false;
}
}  // namespace

Array matmul(const Array& a_in, const Array& b_in, StreamOrDevice s) {
  ops_detail::require_valid(a_in, "matmul", "first operand");
  ops_detail::require_valid(b_in, "matmul", "second operand");
  device_of({&a_in, &b_in}, "matmul");
  if (a_in.ndim() == 0 || b_in.ndim() == 0) throw ValueError(format_error("matmul", "operands must have at least 1 dimension"));
  if (!is_floating(a_in.dtype()) || !is_floating(b_in.dtype()))
    throw ValueError(format_error("matmul", "only floating point operands are supported, got " +
                                                std::string(name(a_in.dtype())) + " and " + std::string(name(b_in.dtype()))));
  Array a = a_in.ndim() == 1 ? expand_dims(a_in, 0) : a_in;
  Array b = b_in.ndim() == 1 ? expand_dims(b_in, 1) : b_in;
  if (a.shape(-1) != b.shape(-2))
    throw ValueError(format_error("matmul", "inner dimensions differ: " + shape_str(a_in.shape()) + " @ " +
                                                shape_str(b_in.shape())));
  Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(batch_a, batch_b);
  Shape sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {a.shape(-2), a.shape(-1)});
  sb.insert(sb.end(), {b.shape(-2), b.shape(-1)});
  so.insert(so.end(), {a.shape(-2), b.shape(-1)});
  a = broadcast_to(a, sa);
  b = broadcast_to(b, sb);
  if (!blas_layout(a)) a = contiguous(a);
  if (!blas_layout(b)) b = contiguous(b);
  Dtype dt = promote_types(a.dtype(), b.dtype());
  Array out = Array::empty(so, dt, a.device());
  LOOM_KERNEL(out.device(), matmul)(a, b, out);
  if (a_in.ndim() == 1) out = squeeze(out, -2, s);
  if (b_in.ndim() == 1) out = squeeze(out, -1, s);
  return out;
}

namespace {

// Products x @ W_i.T that can go to matmul_t_group: floating x [..., K] and contiguous 2-d weights [N_i, K]
// of one floating dtype on x's device. Returns x as [M, K] (contiguous), or an invalid array when they
// cannot. The weights must already be contiguous: a copy made here would be the kernel queued right
// before matmul_t_group, which may read its weights before that kernel finishes (kernel_api.inc).
Array group_input(const Array& x, const std::vector<Array>& ws) {
  if (!x.valid() || x.ndim() < 1 || !is_floating(x.dtype()) || ws.empty()) return Array();
  for (const Array& w : ws)
    if (!w.valid() || w.ndim() != 2 || !w.is_contiguous() || w.dtype() != ws[0].dtype() || !is_floating(w.dtype()) ||
        w.shape(1) != x.shape(-1) || !(w.device() == x.device()))
      return Array();
  return contiguous(reshape(x, {-1, x.shape(-1)}));
}

// An output [..., N] for x [..., K].
Array group_output(const Array& x, const Array& w) {
  Shape os = x.shape();
  os.back() = w.shape(0);
  return Array::empty(os, promote_types(x.dtype(), w.dtype()), x.device());
}

// View of out [..., N] as [M, N] (contiguous, so the kernel writes through it).
Array rows_of(const Array& out) { return reshape(out, {-1, out.shape(-1)}); }

}  // namespace

std::vector<Array> matmuls_t(const Array& x, const std::vector<Array>& ws, StreamOrDevice) {
  std::vector<Array> outs;
  Array x2 = group_input(x, ws);
  if (!x2.valid()) {
    for (const Array& w : ws) outs.push_back(matmul(x, transpose(w)));
    return outs;
  }
  std::vector<Array> views;
  for (const Array& w : ws) {
    outs.push_back(group_output(x, w));
    views.push_back(rows_of(outs.back()));
  }
  LOOM_KERNEL(x2.device(), matmul_t_group)(x2, ws, false, views);
  return outs;
}

Array swiglu_matmul_t(const Array& x, const Array& gate, const Array& up, StreamOrDevice) {
  Array x2 = gate.valid() && up.valid() && gate.shape() == up.shape() ? group_input(x, {gate, up}) : Array();
  if (!x2.valid()) return fast::swiglu(matmul(x, transpose(gate)), matmul(x, transpose(up)));
  Array out = group_output(x, gate);
  std::vector<Array> views{rows_of(out)};
  LOOM_KERNEL(x2.device(), matmul_t_group)(x2, {gate, up}, true, views);
  return out;
}

}  // namespace loom
