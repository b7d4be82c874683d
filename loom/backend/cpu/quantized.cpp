// Quantization kernels on the CPU (MLX formats, see loom/core/quant.h).
//  - quantize/dequantize: one row at a time over the pool. Affine follows MLX's CPU kernel (edge =
//    the extreme of larger magnitude, scale refined so the edge is exact, rint rounding); the fp
//    modes follow MLX's reference ops, including rounding to w's dtype where MLX computes in it.
//  - quantized_matmul, decode (W.T with <= 8 activation rows): each thread takes a range of output
//    columns and streams their packed rows once; 8 codes are unpacked in registers per step (one
//    shuffle + variable shift for any affine width; a LUT permute for E2M1; a bit move for E4M3),
//    multiplied with x, and each group's partial sum is scaled once. The affine bias term is
//    bias * sum(x over the group), precomputed per activation row.
//  - quantized_matmul, prefill (and W without transpose): panels of W are dequantized to f32 in a
//    bounded scratch buffer and fed to OpenBLAS sgemm from the calling thread.
//  Those are the exact tier. With QmmPrecision::fast (the default), W.T goes to the int8 tier instead
//  (qmm_int8.h) where it applies: affine 4/8-bit for any number of rows; affine 2/3/5/6-bit, mxfp4 and
//  nvfp4 for a single row.
#include "loom/ops/quantized.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "loom/backend/cpu/blas.h"
#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/qmm_int8.h"
#include "loom/backend/cpu/simd.h"
#include "loom/backend/product_group.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {
using namespace quant_codec;

// Rounds a float to dtype dt and back (MLX evaluates parts of the fp quantizers in w's dtype).
float rd(float v, Dtype dt) {
  if (dt == Dtype::bf16) return bf16_to_float(float_to_bf16(v));
  if (dt == Dtype::f16) return f16_to_float(float_to_f16(v));
  return v;
}

void put(void* base, Dtype dt, int64_t i, float v) {
  if (dt == Dtype::f32) static_cast<float*>(base)[i] = v;
  else if (dt == Dtype::bf16) static_cast<uint16_t*>(base)[i] = float_to_bf16(v);
  else static_cast<uint16_t*>(base)[i] = float_to_f16(v);
}

// Packed matrix view: `rows` rows of k codes, row_bytes apart; per-row group parameters.
struct QView {
  const uint8_t* w;
  int64_t row_bytes, k, groups;
  const uint8_t* scales;
  const uint8_t* biases;
  Dtype sdt;
  QuantSpec spec;
  float gmul;  // nvfp4 global scale factor (global / (448 * 6)), else 1

  QView(const Array& wq, const Array& s, const Array& b, const QuantSpec& q, float global_scale)
      : w(static_cast<const uint8_t*>(wq.raw_data())),
        row_bytes(wq.shape(-1) * 4),
        k(wq.shape(-1) * 32 / q.bits),
        groups(s.shape(-1)),
        scales(static_cast<const uint8_t*>(s.raw_data())),
        biases(b.valid() ? static_cast<const uint8_t*>(b.raw_data()) : nullptr),
        sdt(s.dtype()),
        spec(q),
        gmul(global_scale > 0 ? global_scale / (448.0f * 6.0f) : 1.0f) {}

  const uint8_t* row(int64_t r) const { return w + r * row_bytes; }
  // Scales (and biases) of row r as f32.
  void params(int64_t r, float* sc, float* bi) const {
    if (spec.mode == QuantMode::affine) {
      size_t isz = size_of(sdt);
      convert_span(scales + r * groups * isz, sdt, sc, Dtype::f32, groups);
      convert_span(biases + r * groups * isz, sdt, bi, Dtype::f32, groups);
      return;
    }
    const uint8_t* s = scales + r * groups;
    for (int64_t g = 0; g < groups; ++g)
      sc[g] = spec.mode == QuantMode::nvfp4 ? e4m3_to_float(s[g]) * gmul : e8m0_to_float(s[g]);
  }
};

// Code e of a row (scalar): bits e*bits .. e*bits+bits-1 of the LSB-first stream.
inline uint32_t code_at(const uint8_t* row, int64_t e, int bits) {
  int64_t bit = e * bits;
  uint32_t two = row[bit >> 3];
  if ((bit & 7) + bits > 8) two |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (two >> (bit & 7)) & ((1u << bits) - 1);
}

// Value of code c before scaling: the integer for affine, the E2M1/E4M3 value otherwise.
inline float code_value(uint32_t c, QuantMode m) {
  if (m == QuantMode::affine) return static_cast<float>(c);
  if (m == QuantMode::mxfp8) return e4m3_to_float(static_cast<uint8_t>(c));
  return kE2M1[c];
}

// Dequantizes row r to f32 out[k].
void dequant_row_f32(const QView& q, int64_t r, float* out, float* sc, float* bi) {
  q.params(r, sc, bi);
  const uint8_t* row = q.row(r);
  int64_t gs = q.spec.group_size;
  for (int64_t g = 0; g < q.groups; ++g) {
    float s = sc[g], b = q.spec.mode == QuantMode::affine ? bi[g] : 0.0f;
    for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
      float v = code_value(code_at(row, j, q.spec.bits), q.spec.mode) * s;
      out[j] = q.spec.mode == QuantMode::affine ? v + b : v;
    }
  }
}

#ifdef LOOM_AVX2
// Decoders: 8 consecutive codes starting at element e (a multiple of 8) as floats.
struct DecAffine4 {
  __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  __m256 operator()(const uint8_t* row, int64_t e) const {
    uint32_t v;
    std::memcpy(&v, row + e / 2, 4);
    __m256i c = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(v)), sh), _mm256_set1_epi32(15));
    return _mm256_cvtepi32_ps(c);
  }
};
struct DecAffine8 {
  __m256 operator()(const uint8_t* row, int64_t e) const {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + e))));
  }
};
// Any width <= 8: 8 codes occupy exactly `bits` bytes; lane i gathers bytes (b_i, b_i + 1) with a
// shuffle and shifts right by its bit offset. The last pack of a row is copied so no read passes
// the end of the row.
struct DecAffineAny {
  int bits;
  int64_t k;
  __m256i ctrl, sh, mask;
  explicit DecAffineAny(int b, int64_t kk) : bits(b), k(kk) {
    // Lanes 0-3 live in the low 128 bits and 4-7 in the high 128 bits; the shuffle indexes the same
    // 16 source bytes in both halves (the pack is broadcast).
    alignas(32) int8_t c[32];
    alignas(32) int32_t s[8];
    for (int i = 0; i < 8; ++i) {
      int bit = i * b, base = (i / 4) * 16 + (i % 4) * 4;
      c[base] = static_cast<int8_t>(bit >> 3);
      c[base + 1] = static_cast<int8_t>((bit >> 3) + 1);
      c[base + 2] = -128;
      c[base + 3] = -128;
      s[i] = bit & 7;
    }
    ctrl = _mm256_load_si256(reinterpret_cast<const __m256i*>(c));
    sh = _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
    mask = _mm256_set1_epi32((1 << b) - 1);
  }
  __m256 operator()(const uint8_t* row, int64_t e) const {
    const uint8_t* p = row + e * bits / 8;
    __m128i raw;
    if (e + 8 >= k) {
      uint8_t tmp[16] = {};
      std::memcpy(tmp, p, bits);
      raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(tmp));
    } else {
      raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    }
    __m256i v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), ctrl);
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, sh), mask));
  }
};
struct DecFp4 {
  __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  __m256 lut = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
  __m256 operator()(const uint8_t* row, int64_t e) const {
    uint32_t v;
    std::memcpy(&v, row + e / 2, 4);
    __m256i c = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(v)), sh);
    __m256 mag = _mm256_permutevar8x32_ps(lut, c);  // uses the low 3 bits
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(8)), 28);
    return _mm256_or_ps(mag, _mm256_castsi256_ps(sign));
  }
};
// E4M3, 32 codes per step: byte b becomes the f16 bits (b & 0x7F) << 7 | (b & 0x80) << 8, whose
// exponent field holds E4M3's 4 exponent bits under f16's bias (15, not 7) and whose top mantissa bits
// hold its 3: the f16 value is the E4M3 value times 2^-8 exactly, subnormals included (E4M3 subnormal
// m/8 * 2^-6, f16 subnormal m/8 * 2^-14), and kScale = 2^8 rides on the group scale. Interleaving the
// bytes with zeros puts b in the high byte of a 16-bit lane; an arithmetic shift right by 1 then puts the
// magnitude at bits 7-13 and copies the sign into bits 15 and 14, and masking with 0xBF80 clears bit 14
// (and the low bits). The interleave works within 128-bit lanes, so the four vectors of 8 floats hold
// codes kOff[j] .. kOff[j] + 7 of the 32.
struct DecFp8 {
  static constexpr int kWidth = 32;
  static constexpr int kOff[4] = {0, 16, 8, 24};
  static constexpr float kScale = 256.0f;
  void operator()(const uint8_t* row, int64_t e, __m256 (&w)[4]) const {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + e));
    const __m256i mask = _mm256_set1_epi16(static_cast<int16_t>(0xBF80));
    const __m256i lo = _mm256_and_si256(_mm256_srai_epi16(_mm256_unpacklo_epi8(_mm256_setzero_si256(), raw), 1), mask);
    const __m256i hi = _mm256_and_si256(_mm256_srai_epi16(_mm256_unpackhi_epi8(_mm256_setzero_si256(), raw), 1), mask);
    w[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(lo));
    w[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(lo, 1));
    w[2] = _mm256_cvtph_ps(_mm256_castsi256_si128(hi));
    w[3] = _mm256_cvtph_ps(_mm256_extracti128_si256(hi, 1));
  }
};

// out[i * ldo + n] for n in [n0, n1), i < M: x rows [M, k], xs = per-row group sums of x (affine).
template <int M, typename Dec>
void gemv_block(const QView& q, const Dec& dec, const float* x, const float* xs, float* out, int64_t ldo, int64_t n0,
                int64_t n1) {
  std::vector<float> sc(q.groups), bi(q.groups);
  const int64_t gs = q.spec.group_size, k = q.k;
  const bool affine = q.spec.mode == QuantMode::affine;
  for (int64_t n = n0; n < n1; ++n) {
    q.params(n, sc.data(), bi.data());
    const uint8_t* row = q.row(n);
    __m256 tot[M];
    float bsum[M];
    for (int i = 0; i < M; ++i) tot[i] = _mm256_setzero_ps(), bsum[i] = 0.0f;
    for (int64_t g = 0; g < q.groups; ++g) {
      // Two accumulators per row, for the even and odd 8-value steps of the group, so a group's dependent
      // FMA chain is half as long. (mxfp8's gate/up decode measured 9.2-10.5 GB/s with this against 9-10
      // before: no gain above this machine's noise, and no loss.)
      __m256 acc[M], acc2[M];
      for (int i = 0; i < M; ++i) acc[i] = acc2[i] = _mm256_setzero_ps();
      if constexpr (requires { Dec::kWidth; }) {  // Dec::kWidth codes per step, scaled by Dec::kScale (DecFp8)
        for (int64_t e = g * gs; e < (g + 1) * gs; e += Dec::kWidth) {
          __m256 w[4];
          dec(row, e, w);
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < 4; ++j) {
              __m256& a = j % 2 ? acc2[i] : acc[i];
              a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + e + Dec::kOff[j]), w[j], a);
            }
        }
      } else {
        int64_t e = g * gs;
        for (; e + 16 <= (g + 1) * gs; e += 16) {
          const __m256 w0 = dec(row, e), w1 = dec(row, e + 8);
          for (int i = 0; i < M; ++i) {
            acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + e), w0, acc[i]);
            acc2[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + e + 8), w1, acc2[i]);
          }
        }
        if (e < (g + 1) * gs) {  // a group of 8 mod 16 codes (no format has one; kept for generality)
          const __m256 w = dec(row, e);
          for (int i = 0; i < M; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + e), w, acc[i]);
        }
      }
      for (int i = 0; i < M; ++i) acc[i] = _mm256_add_ps(acc[i], acc2[i]);
      float scale = sc[g];
      if constexpr (requires { Dec::kScale; }) scale *= Dec::kScale;
      __m256 s = _mm256_set1_ps(scale);
      for (int i = 0; i < M; ++i) tot[i] = _mm256_fmadd_ps(acc[i], s, tot[i]);
      if (affine)
        for (int i = 0; i < M; ++i) bsum[i] += bi[g] * xs[i * q.groups + g];
    }
    for (int i = 0; i < M; ++i) out[i * ldo + n] = hsum(tot[i]) + bsum[i];
  }
}

// Rows of x in blocks of up to 4 (accumulators stay in registers).
template <typename Dec>
void gemv_rows(const QView& q, const Dec& dec, const float* x, const float* xs, int64_t m, float* out, int64_t ldo,
               int64_t n0, int64_t n1) {
  for (int64_t i0 = 0; i0 < m; i0 += 4) {
    const float* xi = x + i0 * q.k;
    const float* xsi = xs + i0 * q.groups;
    float* oi = out + i0 * ldo;
    switch (std::min<int64_t>(4, m - i0)) {
      case 1: gemv_block<1>(q, dec, xi, xsi, oi, ldo, n0, n1); break;
      case 2: gemv_block<2>(q, dec, xi, xsi, oi, ldo, n0, n1); break;
      case 3: gemv_block<3>(q, dec, xi, xsi, oi, ldo, n0, n1); break;
      default: gemv_block<4>(q, dec, xi, xsi, oi, ldo, n0, n1); break;
    }
  }
}

void gemv_simd(const QView& q, const float* x, const float* xs, int64_t m, float* out, int64_t ldo, int64_t n0,
               int64_t n1) {
  switch (q.spec.mode) {
    case QuantMode::affine:
      if (q.spec.bits == 4) return gemv_rows(q, DecAffine4{}, x, xs, m, out, ldo, n0, n1);
      if (q.spec.bits == 8) return gemv_rows(q, DecAffine8{}, x, xs, m, out, ldo, n0, n1);
      return gemv_rows(q, DecAffineAny(q.spec.bits, q.k), x, xs, m, out, ldo, n0, n1);
    case QuantMode::mxfp4:
    case QuantMode::nvfp4: return gemv_rows(q, DecFp4{}, x, xs, m, out, ldo, n0, n1);
    case QuantMode::mxfp8: return gemv_rows(q, DecFp8{}, x, xs, m, out, ldo, n0, n1);
  }
}

// Exact decode kernels for affine 4- and 8-bit (f32 activations). A 32-byte load holds 8 uint32
// words; masking every word with the field of code s (s = 0 .. 32/bits-1) and converting to float
// gives, in lane l, code (l*(32/bits) + s) times 2^(bits*s) — exactly, since a code has at most 8
// significant bits. x is permuted once per call into the matching order and pre-multiplied by
// 2^(-bits*s) (a power of two: each product x*q is the same float; 1 for the top field, which is
// shifted down instead of masked as its value would not fit a signed lane), so one block costs one load
// and, per code position, an and + convert shared by every activation row and one FMA per row.
// Per group: tot += scale * sum(x'*q'); the bias adds sum_g bias_g * sum(x over g) at the end.

constexpr int64_t kPrefetchBytes = 1024;

// x [m, k] -> xp [m, k] in block order for `bits`, xs [m, groups] group sums of x.
void prep_x_blocked(const float* x, int64_t m, int64_t k, int bits, int64_t gs, float* xp, float* xs) {
  const int per = 32 / bits, blk = 8 * per;
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * k;
    float* oi = xp + i * k;
    for (int64_t b = 0; b < k; b += blk)
      for (int s = 0; s < per; ++s) {
        float f = s == per - 1 ? 1.0f : std::ldexp(1.0f, -bits * s);  // the top field is shifted down
        for (int l = 0; l < 8; ++l) oi[b + s * 8 + l] = xi[b + l * per + s] * f;
      }
    for (int64_t g = 0; g < k / gs; ++g) {
      __m256 a = _mm256_setzero_ps();
      int64_t j = g * gs;
      for (; j + 8 <= (g + 1) * gs; j += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(xi + j));
      float s = hsum(a);
      for (; j < (g + 1) * gs; ++j) s += xi[j];
      xs[i * (k / gs) + g] = s;
    }
  }
}

// Group parameters of rows [n, n + r) as f32: sc/bi [r, groups].
inline void row_params(const QView& q, int64_t n, int r, float* sc, float* bi) {
  size_t isz = size_of(q.sdt);
  convert_span(q.scales + n * q.groups * isz, q.sdt, sc, Dtype::f32, r * q.groups);
  convert_span(q.biases + n * q.groups * isz, q.sdt, bi, Dtype::f32, r * q.groups);
}

// R packed rows x M activation rows. HALF: 4-bit with group size 32 (a block spans two groups).
template <int BITS, int R, int M, bool HALF>
void qmv_tile(const QView& q, const float* xp, const float* xs, int64_t ldx, const float* sc, const float* bi,
              const uint8_t* w0, float* out, int64_t ldo) {
  constexpr int PER = 32 / BITS, BLK = 8 * PER;
  const int64_t k = q.k, gs = q.spec.group_size, groups = q.groups, rb = q.row_bytes;
  const int64_t chunk = HALF ? BLK : gs;  // elements between scale applications
  __m256 tot[R][M];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int i = 0; i < M; ++i) tot[r][i] = _mm256_setzero_ps();
  for (int64_t c0 = 0; c0 < k; c0 += chunk) {
    __m256 acc[R][M];
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 8
      for (int i = 0; i < M; ++i) acc[r][i] = _mm256_setzero_ps();
    for (int64_t e = c0; e < c0 + chunk; e += BLK) {
      __m256i wv[R];
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + r * rb + e * BITS / 8));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)  // software prefetch: R interleaved streams outrun the hardware one
        _mm_prefetch(reinterpret_cast<const char*>(w0 + r * rb + e * BITS / 8 + kPrefetchBytes), _MM_HINT_T0);
      #pragma GCC unroll 8
      for (int s = 0; s < PER; ++s) {
        __m256 xv[M];
        #pragma GCC unroll 8
        for (int i = 0; i < M; ++i) xv[i] = _mm256_loadu_ps(xp + i * ldx + e + s * 8);
        #pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          __m256i c = s == PER - 1 ? _mm256_srli_epi32(wv[r], 32 - BITS)
                                   : _mm256_and_si256(wv[r], _mm256_set1_epi32(((1 << BITS) - 1) << (BITS * s)));
          __m256 f = _mm256_cvtepi32_ps(c);
          #pragma GCC unroll 8
          for (int i = 0; i < M; ++i) acc[r][i] = _mm256_fmadd_ps(xv[i], f, acc[r][i]);
        }
      }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m256 sv;
      if constexpr (HALF) {
        int64_t g = c0 / gs;
        sv = _mm256_set_m128(_mm_set1_ps(sc[r * groups + g + 1]), _mm_set1_ps(sc[r * groups + g]));
      } else {
        sv = _mm256_broadcast_ss(sc + r * groups + c0 / gs);
      }
      #pragma GCC unroll 8
      for (int i = 0; i < M; ++i) tot[r][i] = _mm256_fmadd_ps(acc[r][i], sv, tot[r][i]);
    }
  }
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      // bias term: sum_g bias_g * xs_g
      __m256 bsum = _mm256_setzero_ps();
      const float* b = bi + r * groups;
      const float* s = xs + i * groups;
      int64_t g = 0;
      for (; g + 8 <= groups; g += 8) bsum = _mm256_fmadd_ps(_mm256_loadu_ps(b + g), _mm256_loadu_ps(s + g), bsum);
      float t = hsum(tot[r][i]) + hsum(bsum);
      for (; g < groups; ++g) t += b[g] * s[g];
      out[i * ldo + r] = t;
    }
}

template <int BITS, bool HALF>
void qmv_range(const QView& q, const float* xp, const float* xs, int64_t m, float* out, int64_t ldo, int64_t n0,
               int64_t n1) {
  constexpr int RT = 4;
  std::vector<float> sc(RT * q.groups), bi(RT * q.groups);
  const int64_t k = q.k, groups = q.groups;
  auto run = [&](auto rtag, int64_t n) {
    constexpr int R = decltype(rtag)::value;
    row_params(q, n, R, sc.data(), bi.data());
    const uint8_t* w0 = q.row(n);
    for (int64_t i0 = 0; i0 < m;) {
      const float* xpi = xp + i0 * k;
      const float* xsi = xs + i0 * groups;
      float* oi = out + i0 * ldo + n;
      int64_t left = m - i0;
      if constexpr (R >= 2) {
        if (left >= 2) {
          qmv_tile<BITS, R, 2, HALF>(q, xpi, xsi, k, sc.data(), bi.data(), w0, oi, ldo);
          i0 += 2;
        } else {
          qmv_tile<BITS, R, 1, HALF>(q, xpi, xsi, k, sc.data(), bi.data(), w0, oi, ldo);
          i0 += 1;
        }
      } else {
        if (left >= 4) {
          qmv_tile<BITS, 1, 4, HALF>(q, xpi, xsi, k, sc.data(), bi.data(), w0, oi, ldo);
          i0 += 4;
        } else if (left == 3) {
          qmv_tile<BITS, 1, 3, HALF>(q, xpi, xsi, k, sc.data(), bi.data(), w0, oi, ldo);
          i0 += 3;
        } else if (left == 2) {
          qmv_tile<BITS, 1, 2, HALF>(q, xpi, xsi, k, sc.data(), bi.data(), w0, oi, ldo);
          i0 += 2;
        } else {
          qmv_tile<BITS, 1, 1, HALF>(q, xpi, xsi, k, sc.data(), bi.data(), w0, oi, ldo);
          i0 += 1;
        }
      }
    }
  };
  int64_t n = n0;
  if (m <= 2) {
    // Several packed rows per pass: independent accumulator chains and each x load reused.
    if (m == 1)
      for (; n + 4 <= n1; n += 4) run(std::integral_constant<int, 4>{}, n);
    for (; n + 2 <= n1; n += 2) run(std::integral_constant<int, 2>{}, n);
  }
  for (; n < n1; ++n) run(std::integral_constant<int, 1>{}, n);
}

// Affine row r dequantized to f32 with the SIMD decoders (code * scale, then + bias, as the twin).
template <typename Dec>
void dequant_row_affine(const QView& q, const Dec& dec, int64_t r, float* out, float* sc, float* bi) {
  row_params(q, r, 1, sc, bi);
  const uint8_t* row = q.row(r);
  const int64_t gs = q.spec.group_size;
  for (int64_t g = 0; g < q.groups; ++g) {
    __m256 s = _mm256_set1_ps(sc[g]), b = _mm256_set1_ps(bi[g]);
    for (int64_t e = g * gs; e < (g + 1) * gs; e += 8)
      _mm256_storeu_ps(out + e, _mm256_add_ps(_mm256_mul_ps(dec(row, e), s), b));
  }
}

void dequant_rows_fast(const QView& q, int64_t r0, int64_t r1, float* out, float* sc, float* bi) {
  if (q.spec.bits == 4)
    for (int64_t r = r0; r < r1; ++r) dequant_row_affine(q, DecAffine4{}, r, out + (r - r0) * q.k, sc, bi);
  else if (q.spec.bits == 8)
    for (int64_t r = r0; r < r1; ++r) dequant_row_affine(q, DecAffine8{}, r, out + (r - r0) * q.k, sc, bi);
  else
    for (int64_t r = r0; r < r1; ++r)
      dequant_row_affine(q, DecAffineAny(q.spec.bits, q.k), r, out + (r - r0) * q.k, sc, bi);
}

// Whether the blocked kernels apply: affine 4/8-bit, whole blocks per group (or 4-bit g32).
bool qmv_blocked_ok(const QView& q) {
  if (q.spec.mode != QuantMode::affine || (q.spec.bits != 4 && q.spec.bits != 8) || !q.biases) return false;
  int64_t blk = 8 * (32 / q.spec.bits), gs = q.spec.group_size;
  if (q.k % blk != 0 || q.k % gs != 0) return false;
  return gs % blk == 0 || (q.spec.bits == 4 && gs == 32);
}

void qmv_blocked(const QView& q, const float* xp, const float* xs, int64_t m, float* out, int64_t ldo, int64_t n0,
                 int64_t n1) {
  if (q.spec.bits == 8) return qmv_range<8, false>(q, xp, xs, m, out, ldo, n0, n1);
  if (q.spec.group_size == 32) return qmv_range<4, true>(q, xp, xs, m, out, ldo, n0, n1);
  return qmv_range<4, false>(q, xp, xs, m, out, ldo, n0, n1);
}
#endif

// Portable decode path: dequantize a row, then dot products.
[[maybe_unused]] void gemv_scalar(const QView& q, const float* x, int64_t m, float* out, int64_t ldo, int64_t n0, int64_t n1) {
  std::vector<float> row(q.k), sc(q.groups), bi(q.groups);
  for (int64_t n = n0; n < n1; ++n) {
    dequant_row_f32(q, n, row.data(), sc.data(), bi.data());
    for (int64_t i = 0; i < m; ++i) {
      float s = 0;
      for (int64_t j = 0; j < q.k; ++j) s += x[i * q.k + j] * row[j];
      out[i * ldo + n] = s;
    }
  }
}

// Writes code c at element e of a word-aligned row (LSB-first stream).
inline void put_code(uint32_t* row, int64_t e, int bits, uint32_t c) {
  int64_t bit = e * bits;
  int64_t w = bit >> 5;
  int sh = static_cast<int>(bit & 31);
  row[w] |= c << sh;
  if (sh + bits > 32) row[w + 1] |= c >> (32 - sh);
}

// MLX's CPU affine quantizer for one group; returns {scale, bias} and writes codes.
void quantize_affine_group(const float* w, int gs, int bits, uint32_t* row, int64_t e0, float& scale_out,
                           float& bias_out) {
  float n_bins = static_cast<float>((1 << bits) - 1), eps = 1e-7f;
  float w_min = INFINITY, w_max = -INFINITY;
  for (int j = 0; j < gs; ++j) w_max = std::max(w_max, w[j]), w_min = std::min(w_min, w[j]);
  bool mask = std::abs(w_min) > std::abs(w_max);
  float scale = std::max((w_max - w_min) / n_bins, eps);
  scale = mask ? scale : -scale;
  float edge = mask ? w_min : w_max;
  float q0 = std::rint(edge / scale);
  float bias = 0;
  if (q0 != 0) {
    scale = edge / q0;
    bias = edge;
  }
  for (int j = 0; j < gs; ++j) {
    float q = std::rint((w[j] - bias) / scale);
    q = std::min(std::max(q, 0.0f), n_bins);
    put_code(row, e0 + j, bits, static_cast<uint32_t>(q));
  }
  scale_out = scale;
  bias_out = bias;
}

// First index of the E2M1 value nearest v (ties to the lower index, as MLX's argmin); distances are
// computed in dtype dt.
inline uint32_t nearest_e2m1(float v, Dtype dt) {
  uint32_t best = 0;
  float bd = std::abs(rd(v - kE2M1[0], dt));
  for (uint32_t j = 1; j < 16; ++j) {
    float d = std::abs(rd(v - kE2M1[j], dt));
    if (d < bd) bd = d, best = j;
  }
  return best;
}

// MLX's fp quantizer (mxfp4 / mxfp8 / nvfp4) for one group; returns the scale byte.
uint8_t quantize_fp_group(const float* w, const QuantSpec& spec, Dtype dt, float global_scale, uint32_t* row,
                          int64_t e0) {
  int gs = spec.group_size;
  float amax = 0;
  for (int j = 0; j < gs; ++j) amax = std::max(amax, std::abs(w[j]));
  float maxval = spec.bits == 4 ? 6.0f : 448.0f;
  float s = rd(amax / maxval, dt);
  uint8_t sbyte;
  std::vector<float> v(gs);
  Dtype vdt = dt;  // dtype the codes are chosen in
  if (spec.mode == QuantMode::nvfp4) {
    float enc = global_scale > 0 ? 448.0f * 6.0f / global_scale : 1.0f;
    sbyte = float_to_e4m3(s * enc);  // the product is f32 (MLX promotes with the f32 encode scale)
    float d = rd(e4m3_to_float(sbyte), dt);
    for (int j = 0; j < gs; ++j) v[j] = rd(w[j] / d, dt) * enc;
    vdt = Dtype::f32;
  } else {
    int e = s == 0 ? 0 : static_cast<int>(std::rint(rd(std::log2(s), dt)));
    sbyte = static_cast<uint8_t>(e + 127);
    float p2 = rd(std::ldexp(1.0f, e), dt);
    for (int j = 0; j < gs; ++j) v[j] = rd(w[j] / p2, dt);
  }
  for (int j = 0; j < gs; ++j) {
    uint32_t c = spec.bits == 4 ? nearest_e2m1(v[j], vdt) : float_to_e4m3(v[j]);
    put_code(row, e0 + j, spec.bits, c);
  }
  return sbyte;
}

}  // namespace

void quantize(const Array& w, const QuantSpec& spec, float global_scale, Array& wq, Array& scales, Array& biases) {
  int64_t k = w.shape(-1), rows = w.size() / std::max<int64_t>(1, k), gs = spec.group_size, groups = k / gs;
  int64_t words = wq.shape(-1);
  Dtype dt = w.dtype();
  const uint8_t* wp = static_cast<const uint8_t*>(w.raw_data());
  uint32_t* qp = wq.data<uint32_t>();
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k)), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(k);
    for (int64_t r = r0; r < r1; ++r) {
      convert_span(wp + r * k * size_of(dt), dt, row.data(), Dtype::f32, k);
      uint32_t* out = qp + r * words;
      std::fill(out, out + words, 0u);
      for (int64_t g = 0; g < groups; ++g) {
        if (spec.mode == QuantMode::affine) {
          float s, b;
          quantize_affine_group(row.data() + g * gs, static_cast<int>(gs), spec.bits, out, g * gs, s, b);
          put(scales.raw_data(), scales.dtype(), r * groups + g, s);
          put(biases.raw_data(), biases.dtype(), r * groups + g, b);
        } else {
          scales.data<uint8_t>()[r * groups + g] = quantize_fp_group(row.data() + g * gs, spec, dt, global_scale, out, g * gs);
        }
      }
    }
  });
}

void dequantize(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec, float global_scale,
                Array& out) {
  QView q(wq, scales, biases, spec, global_scale);
  int64_t rows = wq.size() / std::max<int64_t>(1, wq.shape(-1));
  Dtype odt = out.dtype();
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, q.k)), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(q.k), sc(q.groups), bi(q.groups);
    for (int64_t r = r0; r < r1; ++r) {
      if (odt == Dtype::f32 || spec.mode != QuantMode::affine) {
        dequant_row_f32(q, r, odt == Dtype::f32 ? out.data<float>() + r * q.k : row.data(), sc.data(), bi.data());
        if (odt != Dtype::f32) convert_span(row.data(), Dtype::f32, static_cast<uint8_t*>(out.raw_data()) + r * q.k * out.itemsize(), odt, q.k);
        continue;
      }
      // Affine in a half dtype: MLX rounds q*s and then (q*s)+b to the dtype.
      q.params(r, sc.data(), bi.data());
      const uint8_t* src = q.row(r);
      for (int64_t j = 0; j < q.k; ++j) {
        int64_t g = j / spec.group_size;
        float v = rd(static_cast<float>(code_at(src, j, spec.bits)) * sc[g], odt);
        put(out.raw_data(), odt, r * q.k + j, v + bi[g]);
      }
    }
  });
}

namespace {

// quantized_matmul with f32 x, scales, biases and out.
void quantized_matmul_f32(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                          const QuantSpec& spec, float global_scale, Array& out) {
  QView q(wq, scales, biases, spec, global_scale);
  int64_t m = x.size() / std::max<int64_t>(1, x.shape(-1)), kx = x.shape(-1);
  int64_t wrows = wq.shape(0);
  int64_t n = transpose ? wrows : q.k;
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  if (m == 0 || n == 0) return;
  if (transpose && m <= 8) {
    int64_t grain = std::max<int64_t>(4, 32768 / std::max<int64_t>(1, kx));
#ifdef LOOM_AVX2
    if (qmv_blocked_ok(q) && kx == q.k) {
      std::vector<float> xb(m * kx), xs(m * q.groups);
      prep_x_blocked(xp, m, kx, spec.bits, spec.group_size, xb.data(), xs.data());
      parallel_for(n, grain, [&](int64_t b, int64_t e) { qmv_blocked(q, xb.data(), xs.data(), m, op, n, b, e); });
      return;
    }
    std::vector<float> xs(m * q.groups, 0.0f);  // group sums of x for the affine bias term
    if (spec.mode == QuantMode::affine)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t g = 0; g < q.groups; ++g) {
          float s = 0;
          for (int64_t j = 0; j < spec.group_size; ++j) s += xp[i * kx + g * spec.group_size + j];
          xs[i * q.groups + g] = s;
        }
    parallel_for(n, grain, [&](int64_t b, int64_t e) { gemv_simd(q, xp, xs.data(), m, op, n, b, e); });
#else
    parallel_for(n, grain, [&](int64_t b, int64_t e) { gemv_scalar(q, xp, m, op, n, b, e); });
#endif
    return;
  }
  // Panels of W dequantized to f32 (rows of the packed matrix, ~16 MB at a time), then sgemm.
  blas_threads_once();
  int64_t panel = std::min(wrows, std::max<int64_t>(64, (int64_t{4} << 20) / std::max<int64_t>(1, q.k)));
  std::vector<float> wp(panel * q.k);
  for (int64_t r0 = 0; r0 < wrows; r0 += panel) {
    int64_t nb = std::min(panel, wrows - r0);
    parallel_for(nb, 8, [&](int64_t b, int64_t e) {
      std::vector<float> sc(q.groups), bi(q.groups);
#ifdef LOOM_AVX2
      if (spec.mode == QuantMode::affine && q.spec.group_size % 8 == 0 && q.biases) {
        dequant_rows_fast(q, r0 + b, r0 + e, wp.data() + b * q.k, sc.data(), bi.data());
        return;
      }
#endif
      for (int64_t r = b; r < e; ++r) dequant_row_f32(q, r0 + r, wp.data() + r * q.k, sc.data(), bi.data());
    });
    if (transpose) {
      // out[:, r0:r0+nb] = x [m, k] @ panel[nb, k].T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nb, kx, 1.0f, xp, kx, wp.data(), q.k, 0.0f, op + r0, n);
    } else {
      // out += x[:, r0:r0+nb] @ panel[nb, n]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, nb, 1.0f, xp + r0, kx, wp.data(), q.k,
                  r0 == 0 ? 0.0f : 1.0f, op, n);
    }
  }
}

// A float32 copy of a (itself when it already is one, or invalid).
Array as_f32(const Array& a) {
  if (!a.valid() || a.dtype() == Dtype::f32) return a;
  Array c = Array::empty(a.shape(), Dtype::f32, Device::cpu());
  copy(a, c);
  return c;
}

}  // namespace

// The CPU kernels compute in f32: half-type activations, scales and outputs are converted here. Where
// takes_int8 says so, the int8 tier (qmm_int8.h) runs instead; it reads the scales and biases in their
// stored dtype.
void quantized_matmul(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                      const QuantSpec& spec, float global_scale, Array& out) {
  bool affine = spec.mode == QuantMode::affine;
  const int64_t k = x.shape(-1), m = x.size() / std::max<int64_t>(1, k);
  if (takes_int8(scales, biases, spec, transpose, m)) {
    Array xf = as_f32(x);
    Array of = out.dtype() == Dtype::f32 ? out : Array::empty(out.shape(), Dtype::f32, Device::cpu());
    qmm_int8(xf.data<float>(), m, k, wq.data<uint32_t>(), scales.raw_data(),
             biases.valid() ? biases.raw_data() : nullptr, scales.dtype(), wq.shape(0), spec, global_scale,
             of.data<float>());
    if (out.dtype() != Dtype::f32) copy(of, out);
    return;
  }
  Array xf = as_f32(x), sf = affine ? as_f32(scales) : scales, bf = affine ? as_f32(biases) : biases;
  if (out.dtype() == Dtype::f32) return quantized_matmul_f32(xf, wq, sf, bf, transpose, spec, global_scale, out);
  Array of = Array::empty(out.shape(), Dtype::f32, Device::cpu());
  quantized_matmul_f32(xf, wq, sf, bf, transpose, spec, global_scale, of);
  copy(of, out);
}

// Operands of one spec that all take the int8 tier run as one qmm_int8_group call (x quantized once, one
// parallel pass; with an f32 output the SwiGLU is its epilogue); anything else runs one by one. Either way
// each result equals its quantized_matmul call (the SwiGLU reads the products rounded to the output dtype).
void quantized_matmul_group(const Array& x, const std::vector<QuantizedOperand>& ws, bool swiglu,
                            std::vector<Array>& outs) {
  const int64_t k = x.shape(-1), m = x.size() / std::max<int64_t>(1, k);
  bool int8 = true;
  for (const QuantizedOperand& w : ws)
    int8 = int8 && takes_int8(w.scales, w.biases, w.spec, true, m) && w.spec == ws[0].spec;
  if (int8) {
    Array xf = as_f32(x);
    const bool fused = swiglu && outs[0].dtype() == Dtype::f32;
    std::vector<Array> res(ws.size());
    std::vector<QmmInt8Operand> ops;
    for (size_t i = 0; i < ws.size(); ++i) {
      const QuantizedOperand& w = ws[i];
      const int64_t n = w.wq.shape(0);
      res[i] = !swiglu && outs[i].dtype() == Dtype::f32 ? outs[i] : Array::empty({m, n}, Dtype::f32, Device::cpu());
      ops.push_back({w.wq.data<uint32_t>(), w.scales.raw_data(), w.biases.valid() ? w.biases.raw_data() : nullptr,
                     w.scales.dtype(), n, res[i].data<float>(), w.global_scale});
    }
    qmm_int8_group(xf.data<float>(), m, k, ws[0].spec, ops.data(), ops.size(), fused ? outs[0].data<float>() : nullptr);
    if (fused) return;
    if (!swiglu) {
      for (size_t i = 0; i < ws.size(); ++i)
        if (outs[i].dtype() != Dtype::f32) copy(res[i].reshape(outs[i].shape()), outs[i]);
      return;
    }
    Array gate = Array::empty(outs[0].shape(), outs[0].dtype(), Device::cpu());
    Array up = Array::empty(outs[0].shape(), outs[0].dtype(), Device::cpu());
    copy(res[0].reshape(outs[0].shape()), gate);
    copy(res[1].reshape(outs[0].shape()), up);
    return loom::cpu::swiglu(gate, up, outs[0]);
  }
  run_product_group(
      ws.size(), swiglu, outs,
      [&](size_t i, Array& out) {
        const QuantizedOperand& w = ws[i];
        quantized_matmul(x, w.wq, w.scales, w.biases, /*transpose=*/true, w.spec, w.global_scale, out);
      },
      [](const Array& g, const Array& u, Array& out) { loom::cpu::swiglu(g, u, out); });
}

}  // namespace loom::cpu
