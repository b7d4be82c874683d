// Quantization formats (MLX's): the mode enum and QuantSpec shared by the ops layer, every backend
// and nn. Layouts: a quantized matrix [..., K] is stored row by row as uint32 words holding an
// LSB-first bit stream of K codes (`bits` each), plus per-group scales (and biases for affine).
//  - affine: codes 0..2^bits-1, w = scale * q + bias; bits 2,3,4,5,6,8; groups 32/64/128.
//  - mxfp4: E2M1 codes, E8M0 (uint8) scale per 32.  - nvfp4: E2M1, E4M3 (uint8) scale per 16.
//  - mxfp8: E4M3 codes, E8M0 scale per 32.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace loom {

enum class QuantMode { affine, mxfp4, nvfp4, mxfp8 };

struct QuantSpec {
  QuantMode mode = QuantMode::affine;
  int bits = 4;
  int group_size = 64;
  bool operator==(const QuantSpec&) const = default;
};

// mlx-lm's defaults by mode: affine 4/64, mxfp4 4/32, nvfp4 4/16, mxfp8 8/32.
inline QuantSpec default_quant_spec(QuantMode mode) {
  switch (mode) {
    case QuantMode::affine: return {mode, 4, 64};
    case QuantMode::mxfp4: return {mode, 4, 32};
    case QuantMode::nvfp4: return {mode, 4, 16};
    case QuantMode::mxfp8: return {mode, 8, 32};
  }
  return {};
}

inline std::string_view quant_mode_name(QuantMode m) {
  switch (m) {
    case QuantMode::affine: return "affine";
    case QuantMode::mxfp4: return "mxfp4";
    case QuantMode::nvfp4: return "nvfp4";
    case QuantMode::mxfp8: return "mxfp8";
  }
  return "?";
}

// True for a mode/bits/group_size triple MLX accepts.
inline bool quant_spec_valid(const QuantSpec& q) {
  if (q.mode == QuantMode::affine)
    return (q.group_size == 32 || q.group_size == 64 || q.group_size == 128) && q.bits >= 2 && q.bits <= 8 && q.bits != 7;
  return q == default_quant_spec(q.mode);
}

inline std::string quant_spec_str(const QuantSpec& q) {
  return std::string(quant_mode_name(q.mode)) + " bits=" + std::to_string(q.bits) + " group_size=" + std::to_string(q.group_size);
}

// Scalar codecs with MLX's bit-exact rules (shared by kernels and tests).
namespace quant_codec {
// The 16 E2M1 values indexed by code (bit 3 = sign).
inline constexpr float kE2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// E4M3 (bias 7, no inf) -> float. Bits eeee.mmm placed at float bit 20 give 2^(e-127)(1+m/8) (or the
// subnormal m*2^-129); times 2^120 rebiases. 0x7F decodes as 480 as in MLX (no NaN).
inline float e4m3_to_float(uint8_t v) {
  float mag = bits_float(static_cast<uint32_t>(v & 0x7F) << 20) * 0x1p120f;
  return (v & 0x80) ? -mag : mag;
}
// float -> E4M3: round to nearest even, saturate at 448 (0x7E); MLX's ToFP8 step by step.
inline uint8_t float_to_e4m3(float f) {
  uint32_t u = float_bits(f);
  uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint8_t r;
  if (u >= (543u << 21)) {
    r = 0x7E;
  } else if (u < (121u << 23)) {  // below 2^-6: subnormal, rounded by adding 2^14
    r = static_cast<uint8_t>(float_bits(bits_float(u) + bits_float(141u << 23)) - (141u << 23));
  } else {
    uint32_t mant_odd = (u >> 20) & 1u;
    r = static_cast<uint8_t>((u + ((uint32_t(7 - 127) << 23) + 0x7FFFFu) + mant_odd) >> 20);
  }
  return r | static_cast<uint8_t>(sign >> 24);
}
// E8M0 scale byte -> 2^(s-127); s == 0 gives 2^-127 (MLX reads it as bfloat16 0x0040).
inline float e8m0_to_float(uint8_t s) { return bits_float(s == 0 ? 0x00400000u : static_cast<uint32_t>(s) << 23); }
}  // namespace quant_codec

}  // namespace loom
