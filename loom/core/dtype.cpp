#include "loom/core/dtype.h"

#include <cmath>

#include "loom/common/error.h"

namespace loom {

size_t size_of(Dtype dt) {
  switch (dt) {
    case Dtype::bool_: case Dtype::u8: case Dtype::i8: case Dtype::f8_e4m3: case Dtype::f8_e5m2: return 1;
    case Dtype::i16: case Dtype::u16: case Dtype::f16: case Dtype::bf16: return 2;
    case Dtype::i32: case Dtype::u32: case Dtype::f32: return 4;
    case Dtype::i64: case Dtype::u64: case Dtype::f64: return 8;
  }
  return 0;
}

std::string_view name(Dtype dt) {
  switch (dt) {
    case Dtype::bool_: return "bool";
    case Dtype::u8: return "uint8";
    case Dtype::i8: return "int8";
    case Dtype::i16: return "int16";
    case Dtype::u16: return "uint16";
    case Dtype::i32: return "int32";
    case Dtype::u32: return "uint32";
    case Dtype::i64: return "int64";
    case Dtype::u64: return "uint64";
    case Dtype::f16: return "float16";
    case Dtype::bf16: return "bfloat16";
    case Dtype::f32: return "float32";
    case Dtype::f64: return "float64";
    case Dtype::f8_e4m3: return "float8_e4m3fn";
    case Dtype::f8_e5m2: return "float8_e5m2";
  }
  return "?";
}

Dtype dtype_from_name(std::string_view s) {
  if (s.substr(0, 6) == "torch.") s.remove_prefix(6);
  if (s == "float32" || s == "f32" || s == "float") return Dtype::f32;
  if (s == "float16" || s == "f16" || s == "half") return Dtype::f16;
  if (s == "bfloat16" || s == "bf16") return Dtype::bf16;
  if (s == "float64" || s == "f64" || s == "double") return Dtype::f64;
  if (s == "int8") return Dtype::i8;
  if (s == "uint8") return Dtype::u8;
  if (s == "int16") return Dtype::i16;
  if (s == "uint16") return Dtype::u16;
  if (s == "int32") return Dtype::i32;
  if (s == "uint32") return Dtype::u32;
  if (s == "int64") return Dtype::i64;
  if (s == "uint64") return Dtype::u64;
  if (s == "bool") return Dtype::bool_;
  if (s == "float8_e4m3fn") return Dtype::f8_e4m3;
  if (s == "float8_e5m2") return Dtype::f8_e5m2;
  throw ValueError(format_error("dtype", "unknown dtype name '" + std::string(s) +
                                             "' (expected float32, float16, bfloat16, int32, ...)"));
}

bool is_floating(Dtype dt) {
  return dt == Dtype::f16 || dt == Dtype::bf16 || dt == Dtype::f32 || dt == Dtype::f64 ||
         dt == Dtype::f8_e4m3 || dt == Dtype::f8_e5m2;
}
bool is_integral(Dtype dt) { return !is_floating(dt); }
bool is_compute_dtype(Dtype dt) {
  return dt != Dtype::f64 && dt != Dtype::f8_e4m3 && dt != Dtype::f8_e5m2 && dt != Dtype::u16 &&
         dt != Dtype::u64;
}

namespace {
int rank(Dtype dt) {
  switch (dt) {
    case Dtype::bool_: return 0;
    case Dtype::u8: return 1;
    case Dtype::i8: return 2;
    case Dtype::u16: return 3;
    case Dtype::i16: return 4;
    case Dtype::u32: return 5;
    case Dtype::i32: return 6;
    case Dtype::u64: return 7;
    case Dtype::i64: return 8;
    default: return 9;
  }
}
}  // namespace

Dtype promote_types(Dtype a, Dtype b) {
  if (a == b) return a;
  bool fa = is_floating(a), fb = is_floating(b);
  if (fa && fb) {
    // f16 with bf16 promotes to f32 (MLX); otherwise the wider wins.
    if ((a == Dtype::f16 && b == Dtype::bf16) || (a == Dtype::bf16 && b == Dtype::f16)) return Dtype::f32;
    return size_of(a) >= size_of(b) ? a : b;
  }
  if (fa) return a;
  if (fb) return b;
  if (a == Dtype::bool_) return b;
  if (b == Dtype::bool_) return a;
  bool sa = a == Dtype::i8 || a == Dtype::i16 || a == Dtype::i32 || a == Dtype::i64;
  bool sb = b == Dtype::i8 || b == Dtype::i16 || b == Dtype::i32 || b == Dtype::i64;
  if (sa == sb) return rank(a) > rank(b) ? a : b;
  // mixed signedness: the signed type wide enough to hold both
  Dtype s = sa ? a : b, u = sa ? b : a;
  if (size_of(s) > size_of(u)) return s;
  if (size_of(u) == 1) return Dtype::i16;
  if (size_of(u) == 2) return Dtype::i32;
  return Dtype::i64;
}

float f16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while (!(man & 0x400u));
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (a < 0x38800000u) {  // subnormal or zero in half
    float af;
    std::memcpy(&af, &a, 4);
    // scale so the half subnormal unit (2^-24) becomes 1, then round half to even
    float scaled = af * 16777216.0f;
    uint32_t r = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t exp = ((a >> 23) - 112) << 10;
  uint32_t man = (a >> 13) & 0x3ffu;
  uint32_t rest = a & 0x1fffu;
  uint32_t h = exp | man;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float f8e4m3_to_float(uint8_t v) {
  uint32_t sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 0x7;
  float r;
  if (exp == 0xf && man == 0x7) return NAN;
  if (exp == 0) r = std::ldexp(static_cast<float>(man), -9);
  else r = std::ldexp(1.0f + man / 8.0f, static_cast<int>(exp) - 7);
  return sign ? -r : r;
}

float f8e5m2_to_float(uint8_t v) { return f16_to_float(static_cast<uint16_t>(v) << 8); }

}  // namespace loom
