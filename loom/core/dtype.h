// Element types. Compute dtypes are f32/f16/bf16 and the integer types; the f8 and f64 entries exist
// so every safetensors dtype can be read and named — an op that cannot compute on one says so.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace loom {

enum class Dtype : uint8_t {
  bool_,
  u8,
  i8,
  i16,
  u16,
  i32,
  u32,
  i64,
  u64,
  f16,
  bf16,
  f32,
  f64,
  f8_e4m3,
  f8_e5m2,
};

// Bytes per element.
size_t size_of(Dtype dt);
// MLX-style name: "float32", "bfloat16", "int32", "bool" ...
std::string_view name(Dtype dt);
// Parses an MLX/numpy/torch-style name ("float32", "bfloat16", "torch.float16", "bf16").
Dtype dtype_from_name(std::string_view s);
bool is_floating(Dtype dt);
bool is_integral(Dtype dt);  // integers and bool
// Dtypes the CPU kernels compute on (the f8 and f64 ones are storage only).
bool is_compute_dtype(Dtype dt);
// MLX's type promotion for two arrays (not weak scalars).
Dtype promote_types(Dtype a, Dtype b);

// IEEE half and bfloat16 storage types with round-to-nearest-even conversion from float.
struct float16_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);
float f8e4m3_to_float(uint8_t v);
float f8e5m2_to_float(uint8_t v);

inline float to_float(float16_t v) { return f16_to_float(v.bits); }
inline float to_float(bfloat16_t v) { return bf16_to_float(v.bits); }

// Compile-time mapping from C++ storage type to Dtype.
template <typename T>
constexpr Dtype dtype_of();
template <> constexpr Dtype dtype_of<bool>() { return Dtype::bool_; }
template <> constexpr Dtype dtype_of<uint8_t>() { return Dtype::u8; }
template <> constexpr Dtype dtype_of<int8_t>() { return Dtype::i8; }
template <> constexpr Dtype dtype_of<int16_t>() { return Dtype::i16; }
template <> constexpr Dtype dtype_of<uint16_t>() { return Dtype::u16; }
template <> constexpr Dtype dtype_of<int32_t>() { return Dtype::i32; }
template <> constexpr Dtype dtype_of<uint32_t>() { return Dtype::u32; }
template <> constexpr Dtype dtype_of<int64_t>() { return Dtype::i64; }
template <> constexpr Dtype dtype_of<uint64_t>() { return Dtype::u64; }
template <> constexpr Dtype dtype_of<float16_t>() { return Dtype::f16; }
template <> constexpr Dtype dtype_of<bfloat16_t>() { return Dtype::bf16; }
template <> constexpr Dtype dtype_of<float>() { return Dtype::f32; }
template <> constexpr Dtype dtype_of<double>() { return Dtype::f64; }

}  // namespace loom
