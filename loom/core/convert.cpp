// Dtype conversion of contiguous spans. Fast paths for the float conversions the models use
// (f32 <-> bf16/f16); everything else goes through a double buffer, chunk by chunk.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "loom/common/error.h"
#include "loom/core/array.h"

namespace loom {
namespace {

void load_double(const void* in, Dtype src, double* out, int64_t n) {
  switch (src) {
    case Dtype::bool_: { auto p = static_cast<const uint8_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i] ? 1 : 0; break; }
    case Dtype::u8: { auto p = static_cast<const uint8_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::i8: { auto p = static_cast<const int8_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::i16: { auto p = static_cast<const int16_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::u16: { auto p = static_cast<const uint16_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::i32: { auto p = static_cast<const int32_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::u32: { auto p = static_cast<const uint32_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::i64: { auto p = static_cast<const int64_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(p[i]); break; }
    case Dtype::u64: { auto p = static_cast<const uint64_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(p[i]); break; }
    case Dtype::f16: { auto p = static_cast<const uint16_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(p[i]); break; }
    case Dtype::bf16: { auto p = static_cast<const uint16_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(p[i]); break; }
    case Dtype::f32: { auto p = static_cast<const float*>(in); for (int64_t i = 0; i < n; ++i) out[i] = p[i]; break; }
    case Dtype::f64: std::memcpy(out, in, n * 8); break;
    case Dtype::f8_e4m3: { auto p = static_cast<const uint8_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = f8e4m3_to_float(p[i]); break; }
    case Dtype::f8_e5m2: { auto p = static_cast<const uint8_t*>(in); for (int64_t i = 0; i < n; ++i) out[i] = f8e5m2_to_float(p[i]); break; }
  }
}

template <typename T>
T sat_int(double v) {
  // Float to integer conversion truncates toward zero, as C++/numpy casts do.
  if (std::isnan(v)) return 0;
  return static_cast<T>(static_cast<int64_t>(v));
}

void store_double(const double* in, void* out, Dtype dst, int64_t n) {
  switch (dst) {
    case Dtype::bool_: { auto p = static_cast<uint8_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = in[i] != 0; break; }
    case Dtype::u8: { auto p = static_cast<uint8_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<uint8_t>(in[i]); break; }
    case Dtype::i8: { auto p = static_cast<int8_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<int8_t>(in[i]); break; }
    case Dtype::i16: { auto p = static_cast<int16_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<int16_t>(in[i]); break; }
    case Dtype::u16: { auto p = static_cast<uint16_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<uint16_t>(in[i]); break; }
    case Dtype::i32: { auto p = static_cast<int32_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<int32_t>(in[i]); break; }
    case Dtype::u32: { auto p = static_cast<uint32_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<uint32_t>(in[i]); break; }
    case Dtype::i64: { auto p = static_cast<int64_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<int64_t>(in[i]); break; }
    case Dtype::u64: { auto p = static_cast<uint64_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = sat_int<uint64_t>(in[i]); break; }
    case Dtype::f16: { auto p = static_cast<uint16_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = float_to_f16(static_cast<float>(in[i])); break; }
    case Dtype::bf16: { auto p = static_cast<uint16_t*>(out); for (int64_t i = 0; i < n; ++i) p[i] = float_to_bf16(static_cast<float>(in[i])); break; }
    case Dtype::f32: { auto p = static_cast<float*>(out); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(in[i]); break; }
    case Dtype::f64: std::memcpy(out, in, n * 8); break;
    case Dtype::f8_e4m3: case Dtype::f8_e5m2:
      throw NotSupportedError(format_error("astype", "conversion to " + std::string(name(dst)) + " is not supported"));
  }
}

}  // namespace

void convert_span(const void* in, Dtype src, void* out, Dtype dst, int64_t n) {
  if (n <= 0) return;
  if (src == dst) {
    std::memcpy(out, in, static_cast<size_t>(n) * size_of(src));
    return;
  }
  if (src == Dtype::bf16 && dst == Dtype::f32) {
    auto p = static_cast<const uint16_t*>(in);
    auto q = static_cast<uint32_t*>(out);
    for (int64_t i = 0; i < n; ++i) q[i] = static_cast<uint32_t>(p[i]) << 16;
    return;
  }
  if (src == Dtype::f32 && dst == Dtype::bf16) {
    auto p = static_cast<const float*>(in);
    auto q = static_cast<uint16_t*>(out);
    for (int64_t i = 0; i < n; ++i) q[i] = float_to_bf16(p[i]);
    return;
  }
  if (src == Dtype::f16 && dst == Dtype::f32) {
    auto p = static_cast<const uint16_t*>(in);
    auto q = static_cast<float*>(out);
    for (int64_t i = 0; i < n; ++i) q[i] = f16_to_float(p[i]);
    return;
  }
  if (src == Dtype::f32 && dst == Dtype::f16) {
    auto p = static_cast<const float*>(in);
    auto q = static_cast<uint16_t*>(out);
    for (int64_t i = 0; i < n; ++i) q[i] = float_to_f16(p[i]);
    return;
  }
  constexpr int64_t chunk = 1024;
  double buf[chunk];
  const auto* ip = static_cast<const uint8_t*>(in);
  auto* op = static_cast<uint8_t*>(out);
  for (int64_t i = 0; i < n; i += chunk) {
    int64_t m = std::min(chunk, n - i);
    load_double(ip + i * size_of(src), src, buf, m);
    store_double(buf, op + i * size_of(dst), dst, m);
  }
}

}  // namespace loom
