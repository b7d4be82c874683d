// Copies with dtype conversion between strided layouts. Rows of the collapsed iteration space are
// gathered into a small contiguous buffer when strided, then converted with convert_span.
#include <cstring>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/strided.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

void strided_copy(const Array& in, Array& out) {
  StridedLoop<2> loop(out.shape(), {&in.strides(), &out.strides()});
  const auto* ib = static_cast<const uint8_t*>(in.raw_data());
  auto* ob = static_cast<uint8_t*>(out.raw_data());
  size_t isz = in.itemsize(), osz = out.itemsize();
  Dtype idt = in.dtype(), odt = out.dtype();
  int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, loop.inner()));
  parallel_for(loop.rows(), grain, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> tmp_in, tmp_out;
    loop.for_rows(b, e, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
      const uint8_t* src = ib + off[0] * static_cast<int64_t>(isz);
      uint8_t* dst = ob + off[1] * static_cast<int64_t>(osz);
      if (st[0] == 1 && st[1] == 1) {
        convert_span(src, idt, dst, odt, n);
        return;
      }
      tmp_in.resize(n * isz);
      tmp_out.resize(n * osz);
      for (int64_t i = 0; i < n; ++i) std::memcpy(&tmp_in[i * isz], src + i * st[0] * static_cast<int64_t>(isz), isz);
      convert_span(tmp_in.data(), idt, tmp_out.data(), odt, n);
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * st[1] * static_cast<int64_t>(osz), &tmp_out[i * osz], osz);
    });
  });
}

}  // namespace

void copy(const Array& in, Array& out) { strided_copy(in, out); }
void copy_into(const Array& in, Array& out) { strided_copy(in, out); }

void copy_into_at(const Array& in, Array& out, const Array& index, int64_t base, int64_t stride, int64_t max_p) {
  const int64_t p = static_cast<int64_t>(index.data<int32_t>()[0]) - base;
  if (p < 0 || p > max_p) return;
  Array shifted(out.buffer(), out.shape(), out.strides(), out.offset() + p * stride, out.dtype());
  strided_copy(in, shifted);
}

void fill(Array& out, double value) {
  if (out.size() == 0) return;
  Array one = Array::scalar(value, out.dtype());
  size_t isz = out.itemsize();
  auto* p = static_cast<uint8_t*>(out.raw_data());
  const void* v = one.raw_data();
  for (int64_t i = 0; i < out.size(); ++i) std::memcpy(p + i * isz, v, isz);
}

void arange(Array& out, double start, double step) {
  std::vector<double> v(out.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + step * static_cast<double>(i);
  convert_span(v.data(), Dtype::f64, out.raw_data(), out.dtype(), out.size());
}

}  // namespace loom::cpu
