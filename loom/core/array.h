// Array: a cheap shared handle on a buffer with shape, strides (in elements), offset, dtype and
// device. Views (reshape of contiguous data, transpose, slice) share the buffer; ops allocate new
// outputs. Shape sugar on Array forwards to the free functions in loom/ops.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/allocator.h"
#include "loom/core/device.h"
#include "loom/core/dtype.h"

namespace loom {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// Row-major strides for a shape.
Strides contiguous_strides(const Shape& shape);
// Number of elements of a shape.
int64_t shape_size(const Shape& shape);
std::string shape_str(const Shape& shape);

class Array {
 public:
  Array() = default;
  Array(std::shared_ptr<Buffer> buffer, Shape shape, Strides strides, int64_t offset, Dtype dtype);

  // An uninitialised contiguous array.
  static Array empty(const Shape& shape, Dtype dtype, Device device = default_device());
  // Copies host values into a new array of dtype `dtype` (converting) on the CPU.
  template <typename T>
  static Array from(const std::vector<T>& values, const Shape& shape, Dtype dtype = dtype_of<T>());
  template <typename T>
  static Array from(std::initializer_list<T> values, const Shape& shape, Dtype dtype = dtype_of<T>()) {
    return from(std::vector<T>(values), shape, dtype);
  }
  // A 0-d array holding `v` converted to `dtype`.
  static Array scalar(double v, Dtype dtype = Dtype::f32);

  bool valid() const { return buffer_ != nullptr; }
  const Shape& shape() const { return shape_; }
  // Size of one axis; negative axes count from the end.
  int64_t shape(int axis) const;
  const Strides& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t size() const { return shape_size(shape_); }
  Dtype dtype() const { return dtype_; }
  size_t itemsize() const { return size_of(dtype_); }
  size_t nbytes() const { return static_cast<size_t>(size()) * itemsize(); }
  Device device() const;
  const std::shared_ptr<Buffer>& buffer() const { return buffer_; }

  // Pointer to the first element (buffer + offset).
  void* raw_data() const;
  template <typename T>
  T* data() const { return static_cast<T*>(raw_data()); }

  // True when elements are laid out row-major with no gaps.
  bool is_contiguous() const;
  // Reads the single element of a size-1 array, converted to T (synchronizes).
  template <typename T>
  T item() const;
  // All elements in row-major order, converted to float (synchronizes; for tests and IO).
  std::vector<float> to_float_vector() const;
  template <typename T>
  std::vector<T> to_vector() const;

  // Sugar forwarding to loom ops.
  Array reshape(const Shape& shape) const;
  Array transpose(const std::vector<int>& axes) const;
  Array transpose() const;
  Array astype(Dtype dtype) const;

 private:
  std::shared_ptr<Buffer> buffer_;
  Shape shape_;
  Strides strides_;
  int64_t offset_ = 0;
  Dtype dtype_ = Dtype::f32;
};

// Converts n values of dtype `src` at `in` to dtype `dst` at `out` (contiguous spans).
void convert_span(const void* in, Dtype src, void* out, Dtype dst, int64_t n);

template <typename T>
Array Array::from(const std::vector<T>& values, const Shape& shape, Dtype dtype) {
  Array a = empty(shape, dtype, Device::cpu());
  if (static_cast<int64_t>(values.size()) != a.size())
    throw std::invalid_argument("[Array::from] " + std::to_string(values.size()) + " values for shape " +
                                shape_str(shape));
  if constexpr (std::is_same_v<T, bool>) {
    std::vector<uint8_t> tmp(values.begin(), values.end());
    convert_span(tmp.data(), Dtype::bool_, a.raw_data(), dtype, a.size());
  } else {
    convert_span(values.data(), dtype_of<T>(), a.raw_data(), dtype, a.size());
  }
  return a;
}


}  // namespace loom
