// Shape ops. Most are views: they share the buffer and only change shape, strides and offset.
#include <algorithm>
#include <numeric>

#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"

namespace loom {
using ops_detail::device_of;

int normalize_axis(int axis, int ndim, const char* op) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim)
    throw ValueError(format_error(op, "axis " + std::to_string(axis) + " is out of range for a " +
                                          std::to_string(ndim) + "-d array"));
  return a;
}

Array contiguous(const Array& a, StreamOrDevice) {
  ops_detail::require_valid(a, "contiguous", "input");
  if (a.is_contiguous() && a.offset() >= 0) return a;
  device_of({&a}, "contiguous");
  Array out = Array::empty(a.shape(), a.dtype(), a.device());
  LOOM_KERNEL(out.device(), copy)(a, out);
  return out;
}

Array astype(const Array& a, Dtype dtype, StreamOrDevice) {
  ops_detail::require_valid(a, "astype", "input");
  if (a.dtype() == dtype) return a;
  device_of({&a}, "astype");
  Array out = Array::empty(a.shape(), dtype, a.device());
  LOOM_KERNEL(out.device(), copy)(a, out);
  return out;
}

Array reshape(const Array& a, Shape shape, StreamOrDevice s) {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw ValueError(format_error("reshape", "only one dimension can be -1"));
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[infer] = known == 0 ? 0 : a.size() / known;
  if (shape_size(shape) != a.size())
    throw ValueError(format_error("reshape", "cannot reshape array of shape " + shape_str(a.shape()) + " into " +
                                                 shape_str(shape)));
  Array c = contiguous(a, s);
  return Array(c.buffer(), shape, contiguous_strides(shape), c.offset(), c.dtype());
}

Array flatten(const Array& a, int start_axis, int end_axis, StreamOrDevice s) {
  if (a.ndim() == 0) return reshape(a, {1}, s);
  int st = normalize_axis(start_axis, a.ndim(), "flatten"), en = normalize_axis(end_axis, a.ndim(), "flatten");
  Shape sh(a.shape().begin(), a.shape().begin() + st);
  int64_t m = 1;
  for (int i = st; i <= en; ++i) m *= a.shape()[i];
  sh.push_back(m);
  sh.insert(sh.end(), a.shape().begin() + en + 1, a.shape().end());
  return reshape(a, sh, s);
}

Array transpose(const Array& a, const std::vector<int>& axes, StreamOrDevice) {
  if (static_cast<int>(axes.size()) != a.ndim())
    throw ValueError(format_error("transpose", "expected " + std::to_string(a.ndim()) + " axes, got " +
                                                   std::to_string(axes.size())));
  Shape sh(a.ndim());
  Strides st(a.ndim());
  std::vector<bool> seen(a.ndim(), false);
  for (int i = 0; i < a.ndim(); ++i) {
    int ax = normalize_axis(axes[i], a.ndim(), "transpose");
    if (seen[ax]) throw ValueError(format_error("transpose", "repeated axis " + std::to_string(ax)));
    seen[ax] = true;
    sh[i] = a.shape()[ax];
    st[i] = a.strides()[ax];
  }
  return Array(a.buffer(), sh, st, a.offset(), a.dtype());
}

Array transpose(const Array& a, StreamOrDevice s) {
  std::vector<int> axes(a.ndim());
  std::iota(axes.rbegin(), axes.rend(), 0);
  return transpose(a, axes, s);
}

Array swapaxes(const Array& a, int axis1, int axis2, StreamOrDevice s) {
  std::vector<int> axes(a.ndim());
  std::iota(axes.begin(), axes.end(), 0);
  std::swap(axes[normalize_axis(axis1, a.ndim(), "swapaxes")], axes[normalize_axis(axis2, a.ndim(), "swapaxes")]);
  return transpose(a, axes, s);
}

Array moveaxis(const Array& a, int source, int destination, StreamOrDevice s) {
  int src = normalize_axis(source, a.ndim(), "moveaxis"), dst = normalize_axis(destination, a.ndim(), "moveaxis");
  std::vector<int> axes;
  for (int i = 0; i < a.ndim(); ++i)
    if (i != src) axes.push_back(i);
  axes.insert(axes.begin() + dst, src);
  return transpose(a, axes, s);
}

Array expand_dims(const Array& a, int axis, StreamOrDevice) {
  int ax = normalize_axis(axis, a.ndim() + 1, "expand_dims");
  Shape sh = a.shape();
  Strides st = a.strides();
  int64_t stride = ax < a.ndim() ? a.strides()[ax] * a.shape()[ax] : 1;
  sh.insert(sh.begin() + ax, 1);
  st.insert(st.begin() + ax, stride);
  return Array(a.buffer(), sh, st, a.offset(), a.dtype());
}

Array squeeze(const Array& a, int axis, StreamOrDevice) {
  int ax = normalize_axis(axis, a.ndim(), "squeeze");
  if (a.shape()[ax] != 1)
    throw ValueError(format_error("squeeze", "axis " + std::to_string(axis) + " has size " +
                                                 std::to_string(a.shape()[ax]) + ", expected 1"));
  Shape sh = a.shape();
  Strides st = a.strides();
  sh.erase(sh.begin() + ax);
  st.erase(st.begin() + ax);
  return Array(a.buffer(), sh, st, a.offset(), a.dtype());
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw ValueError(format_error("broadcast", "shapes " + shape_str(a) + " and " + shape_str(b) +
                                                     " cannot be broadcast together"));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Array broadcast_to(const Array& a, const Shape& shape, StreamOrDevice) {
  if (a.shape() == shape) return a;
  if (shape.size() < a.shape().size() || broadcast_shapes(a.shape(), shape) != shape)
    throw ValueError(format_error("broadcast_to", "cannot broadcast shape " + shape_str(a.shape()) + " to " +
                                                      shape_str(shape)));
  size_t lead = shape.size() - a.shape().size();
  Strides st(shape.size(), 0);
  for (size_t i = 0; i < a.shape().size(); ++i) st[lead + i] = a.shape()[i] == 1 ? 0 : a.strides()[i];
  return Array(a.buffer(), shape, st, a.offset(), a.dtype());
}

Array slice(const Array& a, const Shape& start, const Shape& stop, const Shape& step, StreamOrDevice) {
  if (start.size() != static_cast<size_t>(a.ndim()) || stop.size() != start.size() ||
      (!step.empty() && step.size() != start.size()))
    throw ValueError(format_error("slice", "start/stop/step need one entry per axis of the " +
                                               std::to_string(a.ndim()) + "-d array"));
  Shape sh(a.ndim());
  Strides st(a.ndim());
  int64_t off = a.offset();
  for (int i = 0; i < a.ndim(); ++i) {
    int64_t n = a.shape()[i], stp = step.empty() ? 1 : step[i];
    if (stp <= 0) throw ValueError(format_error("slice", "step must be positive"));
    int64_t b = start[i] < 0 ? std::max<int64_t>(0, start[i] + n) : std::min(start[i], n);
    int64_t e = stop[i] < 0 ? std::max<int64_t>(0, stop[i] + n) : std::min(stop[i], n);
    sh[i] = e > b ? (e - b + stp - 1) / stp : 0;
    st[i] = a.strides()[i] * stp;
    off += b * a.strides()[i];
  }
  return Array(a.buffer(), sh, st, off, a.dtype());
}

Array slice_axis(const Array& a, int axis, int64_t start, int64_t stop, StreamOrDevice s) {
  int ax = normalize_axis(axis, a.ndim(), "slice");
  Shape b(a.ndim(), 0), e = a.shape();
  b[ax] = start;
  e[ax] = stop;
  return slice(a, b, e, {}, s);
}

void assign(const Array& dst, const Array& src) {
  Array d = dst, source = src;
  // The destination stays where it is (an upload of it would take the write); only a small host
  // source may join a device destination.
  if (d.device().is_cpu()) device_of({&d, &source}, "assign");
  Device dev = ops_detail::unify_devices({&d, &source}, "assign");
  Array b = broadcast_to(source, dst.shape());
  LOOM_KERNEL(dev, copy_into)(b, d);
}

void assign_at(const Array& dst, const Array& src, int axis, const Array& position, int64_t base) {
  ops_detail::require_valid(dst, "assign_at", "dst");
  ops_detail::require_valid(src, "assign_at", "src");
  ops_detail::require_valid(position, "assign_at", "position");
  int ax = normalize_axis(axis, dst.ndim(), "assign_at");
  bool shapes_ok = src.ndim() == dst.ndim() && src.shape(ax) <= dst.shape(ax);
  for (int d = 0; d < dst.ndim() && shapes_ok; ++d) shapes_ok = d == ax || src.shape(d) == dst.shape(d);
  if (!shapes_ok)
    throw ValueError(format_error("assign_at", "src " + shape_str(src.shape()) + " does not fit dst " +
                                                   shape_str(dst.shape()) + " along axis " + std::to_string(axis)));
  if (src.dtype() != dst.dtype())
    throw ValueError(format_error("assign_at", "src dtype " + std::string(name(src.dtype())) + " differs from dst dtype " +
                                                   std::string(name(dst.dtype()))));
  if (position.dtype() != Dtype::i32 || position.size() != 1 || position.device() != dst.device() ||
      src.device() != dst.device())
    throw ValueError(format_error("assign_at", "position must be one int32 on dst's device, with src there too"));
  Array window = slice_axis(dst, ax, 0, src.shape(ax));
  LOOM_KERNEL(dst.device(), copy_into_at)(src, window, position, base, dst.strides()[ax], dst.shape(ax) - src.shape(ax));
}

Array slice_update(const Array& dst, const Array& src, const Shape& start, StreamOrDevice s) {
  Array out = Array::empty(dst.shape(), dst.dtype(), dst.device());
  LOOM_KERNEL(out.device(), copy)(dst, out);
  Shape stop(start.size());
  for (size_t i = 0; i < start.size(); ++i) stop[i] = start[i] + (i < src.shape().size() ? src.shape()[i] : 1);
  assign(slice(out, start, stop, {}, s), src);
  return out;
}

Array concatenate(const std::vector<Array>& arrays, int axis, StreamOrDevice s) {
  if (arrays.empty()) throw ValueError(format_error("concatenate", "no arrays given"));
  int ax = normalize_axis(axis, arrays[0].ndim(), "concatenate");
  Shape sh = arrays[0].shape();
  Dtype dt = arrays[0].dtype();
  sh[ax] = 0;
  for (const auto& a : arrays) {
    if (a.ndim() != static_cast<int>(sh.size()))
      throw ValueError(format_error("concatenate", "all arrays need the same number of dimensions"));
    for (int i = 0; i < a.ndim(); ++i)
      if (i != ax && a.shape()[i] != arrays[0].shape()[i])
        throw ValueError(format_error("concatenate", "shapes " + shape_str(arrays[0].shape()) + " and " +
                                                         shape_str(a.shape()) + " differ outside axis " + std::to_string(ax)));
    sh[ax] += a.shape()[ax];
    dt = promote_types(dt, a.dtype());
  }
  Array out = Array::empty(sh, dt, arrays[0].device());
  int64_t pos = 0;
  for (const auto& a : arrays) {
    assign(slice_axis(out, ax, pos, pos + a.shape()[ax], s), a);
    pos += a.shape()[ax];
  }
  return out;
}

Array stack(const std::vector<Array>& arrays, int axis, StreamOrDevice s) {
  std::vector<Array> ex;
  for (const auto& a : arrays) ex.push_back(expand_dims(a, axis, s));
  return concatenate(ex, axis, s);
}

std::vector<Array> split(const Array& a, const std::vector<int64_t>& indices, int axis, StreamOrDevice s) {
  int ax = normalize_axis(axis, a.ndim(), "split");
  std::vector<Array> out;
  int64_t prev = 0;
  for (int64_t idx : indices) {
    out.push_back(slice_axis(a, ax, prev, idx, s));
    prev = idx;
  }
  out.push_back(slice_axis(a, ax, prev, a.shape()[ax], s));
  return out;
}

std::vector<Array> split(const Array& a, int parts, int axis, StreamOrDevice s) {
  int ax = normalize_axis(axis, a.ndim(), "split");
  if (parts <= 0 || a.shape()[ax] % parts != 0)
    throw ValueError(format_error("split", "cannot split axis of size " + std::to_string(a.shape()[ax]) + " into " +
                                               std::to_string(parts) + " equal parts"));
  std::vector<int64_t> idx;
  int64_t step = a.shape()[ax] / parts;
  for (int i = 1; i < parts; ++i) idx.push_back(i * step);
  return split(a, idx, ax, s);
}

Array take(const Array& a, const Array& indices_in, int axis, StreamOrDevice s) {
  if (is_floating(indices_in.dtype()))
    throw ValueError(format_error("take", "indices must be integers, got " + std::string(name(indices_in.dtype()))));
  int ax = normalize_axis(axis, a.ndim(), "take");
  int64_t n = a.shape()[ax];
  // Host indices (token ids) are checked here; device ones come from ops that keep them in range,
  // and the CUDA kernel clamps rather than reading outside the table.
  if (indices_in.device().is_cpu())
    for (int64_t v : indices_in.to_vector<int64_t>())
      if (v < -n || v >= n)
        throw ValueError(format_error("take", "index " + std::to_string(v) + " is out of range for axis " +
                                                  std::to_string(ax) + " of size " + std::to_string(n)));
  Array table = a, indices = indices_in;
  ops_detail::unify_devices({&table, &indices}, "take");
  // Move the axis first, gather rows, move it back.
  Array moved = contiguous(moveaxis(a, ax, 0, s), s);
  Shape inner(moved.shape().begin() + 1, moved.shape().end());
  Shape out_shape = indices.shape();
  out_shape.insert(out_shape.end(), inner.begin(), inner.end());
  Array out = Array::empty(out_shape, a.dtype(), a.device());
  LOOM_KERNEL(out.device(), take_rows)(moved, indices, out);
  if (ax == 0) return out;
  // out is [idx..., a.shape without axis]; move the index dims to position ax.
  int k = indices.ndim();
  std::vector<int> perm;
  for (int i = 0; i < ax; ++i) perm.push_back(k + i);
  for (int i = 0; i < k; ++i) perm.push_back(i);
  for (int i = k + ax; i < out.ndim(); ++i) perm.push_back(i);
  return transpose(out, perm, s);
}

}  // namespace loom
