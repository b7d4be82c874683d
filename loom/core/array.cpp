#include "loom/core/array.h"

#include <cstring>
#include <sstream>

#include "loom/common/error.h"
#include "loom/core/device_runtime.h"

namespace loom {

Strides contiguous_strides(const Shape& shape) {
  Strides s(shape.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

int64_t shape_size(const Shape& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream ss;
  ss << '[';
  for (size_t i = 0; i < shape.size(); ++i) ss << (i ? ", " : "") << shape[i];
  ss << ']';
  return ss.str();
}

Array::Array(std::shared_ptr<Buffer> buffer, Shape shape, Strides strides, int64_t offset, Dtype dtype)
    : buffer_(std::move(buffer)), shape_(std::move(shape)), strides_(std::move(strides)), offset_(offset), dtype_(dtype) {}

Array Array::empty(const Shape& shape, Dtype dtype, Device device) {
  for (auto d : shape)
    if (d < 0) throw ValueError(format_error("Array::empty", "negative dimension in shape " + shape_str(shape)));
  size_t bytes = static_cast<size_t>(shape_size(shape)) * size_of(dtype);
  return Array(allocator::allocate(bytes, device), shape, contiguous_strides(shape), 0, dtype);
}

Array Array::scalar(double v, Dtype dtype) {
  Array a = empty({}, dtype, Device::cpu());
  convert_span(&v, Dtype::f64, a.raw_data(), dtype, 1);
  return a;
}

int64_t Array::shape(int axis) const {
  int ax = axis < 0 ? axis + ndim() : axis;
  if (ax < 0 || ax >= ndim())
    throw ValueError(format_error("Array::shape", "axis " + std::to_string(axis) + " out of range for " +
                                                      std::to_string(ndim()) + "-d array"));
  return shape_[ax];
}

Device Array::device() const { return buffer_ ? buffer_->device : Device::cpu(); }

void* Array::raw_data() const {
  return static_cast<char*>(buffer_->ptr) + offset_ * static_cast<int64_t>(itemsize());
}

bool Array::is_contiguous() const {
  int64_t acc = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

namespace {

// Copies a strided array into contiguous bytes in host memory. A device array's span (the bytes
// between its lowest and highest element) is copied to the host first.
std::vector<uint8_t> gather_bytes(const Array& a) {
  size_t isz = a.itemsize();
  std::vector<uint8_t> out(a.nbytes());
  if (a.size() == 0) return out;
  const auto* base = static_cast<const uint8_t*>(a.raw_data());
  std::vector<uint8_t> staged;
  if (!a.device().is_cpu()) {
    int64_t lo = 0, hi = 0;
    for (int d = 0; d < a.ndim(); ++d) {
      int64_t ext = a.strides()[d] * (a.shape()[d] - 1);
      (ext < 0 ? lo : hi) += ext;
    }
    staged.resize(static_cast<size_t>(hi - lo + 1) * isz);
    require_device_runtime(a.device(), "Array::to_vector")
        .copy_bytes(staged.data(), Device::cpu(), base + lo * static_cast<int64_t>(isz), a.device(), staged.size());
    base = staged.data() - lo * static_cast<int64_t>(isz);
  }
  if (a.is_contiguous()) {
    std::memcpy(out.data(), base, out.size());
    return out;
  }
  std::vector<int64_t> idx(a.ndim(), 0);
  int64_t off = 0;
  for (int64_t n = 0; n < a.size(); ++n) {
    std::memcpy(out.data() + n * isz, base + off * static_cast<int64_t>(isz), isz);
    for (int d = a.ndim() - 1; d >= 0; --d) {
      if (++idx[d] < a.shape()[d]) {
        off += a.strides()[d];
        break;
      }
      off -= a.strides()[d] * (a.shape()[d] - 1);
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace

std::vector<float> Array::to_float_vector() const { return to_vector<float>(); }

template <typename T>
std::vector<T> Array::to_vector() const {
  if (!valid()) throw ValueError(format_error("Array::to_vector", "array is empty (default-constructed)"));
  synchronize(device());
  std::vector<uint8_t> bytes = gather_bytes(*this);
  std::vector<T> out(size());
  if constexpr (std::is_same_v<T, bool>) {
    std::vector<uint8_t> tmp(size());
    convert_span(bytes.data(), dtype_, tmp.data(), Dtype::bool_, size());
    for (size_t i = 0; i < tmp.size(); ++i) out[i] = tmp[i] != 0;
  } else {
    convert_span(bytes.data(), dtype_, out.data(), dtype_of<T>(), size());
  }
  return out;
}

template <typename T>
T Array::item() const {
  if (size() != 1)
    throw ValueError(format_error("Array::item", "array of shape " + shape_str(shape_) + " has " +
                                                     std::to_string(size()) + " elements, expected 1"));
  return to_vector<T>()[0];
}

#define LOOM_INSTANTIATE(T)                           \
  template std::vector<T> Array::to_vector<T>() const; \
  template T Array::item<T>() const;
LOOM_INSTANTIATE(float)
LOOM_INSTANTIATE(double)
LOOM_INSTANTIATE(int32_t)
LOOM_INSTANTIATE(int64_t)
LOOM_INSTANTIATE(uint32_t)
LOOM_INSTANTIATE(uint8_t)
LOOM_INSTANTIATE(int8_t)
LOOM_INSTANTIATE(bool)
#undef LOOM_INSTANTIATE

}  // namespace loom
