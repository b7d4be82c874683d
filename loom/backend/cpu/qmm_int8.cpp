// The int8 fast tier (see qmm_int8.h for the arithmetic it guarantees).
//  - Activations: every row is quantized once per call (once per group of products sharing x), in the
//    order the kernels read it, in panels of 4 rows (XQuant; a single row is its own panel). Nibble
//    layout (4-bit, mxfp4, nvfp4): per 64 values, the 32 even-indexed q then the 32 odd-indexed ones (a
//    packed byte holds codes 2j and 2j+1 in its low and high nibble, so one 32-byte load masked and
//    shifted lines up with them) and 8 floats [d0 x4, d1 x4]; a last block of 32 is [16 even | 16 odd]
//    with [d x8]. 8-bit: q as int16 (int16 activations: quant_block16) in natural order and one d per
//    block. 2-bit (single rows): per 128 values, four 32-byte vectors in the order a 2-bit byte
//    stream's shifts produce (crumbs layout). 3/5/6-bit (single rows): int8, per 64 values the 8-value
//    runs of its two blocks alternating, and 8 floats of d as for nibbles. Per group, the bias term's
//    sum_b d_b * sum q.
//  - Products: 4-bit: vpmaddubsw (unsigned code x signed q, pair sums <= 2 * 15 * 127) on the low and
//    high nibbles, the two summed as int16 (<= 7620) and widened pairwise with vpmaddwd, so int32 lane u
//    holds values 8u .. 8u + 7 of the 64 (lanes 0-3 block 0, 4-7 block 1); mxfp4/nvfp4 the same after a
//    byte-table lookup of each code. 8-bit: codes widened to int16 and vpmaddwd with q (no saturation
//    possible). 2-bit: four shifts of one 32-byte load, four vpmaddubsw summed as int16, one vpmaddwd per
//    128 values. 3/5/6-bit: codes spread to bytes in registers, two blocks per vpmaddwd. Each int32
//    vector is converted once and accumulated with d * scale per lane.
//  - One activation row (decode): a GEMV streams each chunk's packed rows once, prefetched, one row at a
//    time with two accumulators, reading scales and biases in their stored dtype.
//  - Tiles (more rows, 4- and 8-bit): RW packed rows x MX activation rows (2 x 4 at 4 bits, 3 x 4 at 8;
//    1 x 2 for two rows); each loaded weight block serves MX rows, each loaded x block RW rows. A chunk is
//    walked in ~128 KB blocks (L2) whose scales are converted to f32 once, and for each panel of
//    activation rows (L1) the tiles stream the block.
//  - Threads take chunks of the output columns (packed rows, contiguous in memory) of every product of a
//    call (or of a batch: gather_qmm's experts) from a shared counter; a grouped gate/up pair shares its
//    chunks and applies the SwiGLU to them.
#include "loom/backend/cpu/qmm_int8.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "loom/backend/cpu/simd.h"
#include "loom/core/array.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {

#ifndef LOOM_AVX2
bool qmm_int8_applies(const QuantSpec&, bool, bool, int64_t) { return false; }
void qmm_int8_group(const float*, int64_t, int64_t, const QuantSpec&, const QmmInt8Operand*, size_t, float*) {}
void qmm_int8_batch(int64_t, const QuantSpec&, const QmmInt8Product*, size_t) {}
void qmm_int8(const float*, int64_t, int64_t, const uint32_t*, const void*, const void*, Dtype, int64_t,
              const QuantSpec&, float, float*) {}
#else

namespace {

constexpr int64_t kPrefetch = 2048;  // bytes ahead of the packed-row stream (decode)

constexpr int kPanel = 4;  // activation rows interleaved per block (the largest MX)

// How a row's q are laid out: nibbles (4-bit codes: per 64 values [32 even | 32 odd] int8, 8 d floats),
// i16 (8-bit: int16 in natural order, a d per block), crumbs (2-bit, single rows: per 128 values four
// vectors of 32 int8, vector s holding value 4j + s at byte j, and 8 floats [d0 d0 d1 d1 d2 d2 d3 d3]; a
// last step of 32-96 values is zero-padded to 128, its missing blocks' d 0), i8 (3, 5, 6 bits, single rows:
// int8, per 64 values the two blocks' 8-value runs alternating, 8 d floats as nibbles; see quantize_rows).
enum class XLayout { nibbles, i16, crumbs, i8 };

// Quantized activations of m rows, in panels of kPanel rows: within a panel, each step of the kernels
// (64 values for 4-bit, 32 for 8-bit) holds the rows' values one after the other, so a tile reads one
// contiguous stream at fixed offsets. Per row: k values (int8, or int16 for 8-bit) and dstride floats of d.
struct XQuant {
  XLayout layout;
  int64_t panel;  // rows interleaved per panel: kPanel, or 1 for a single row (decode)
  int64_t k, groups, dstride;
  std::vector<int8_t> q8;
  std::vector<int16_t> q16;
  std::vector<float> d, xs;  // d as described above; xs [m, groups]: sum over the group of d * q (its blocks'
                             // d_b * sum q, or with groups of 16 each half block's)

  // Panel of row i (i a multiple of panel).
  const int8_t* q4panel(int64_t i) const { return q8.data() + i * k; }
  const int16_t* q8panel(int64_t i) const { return q16.data() + i * k; }
  const float* dpanel(int64_t i) const { return d.data() + i * dstride; }
  const float* xsrow(int64_t i) const { return xs.data() + i * groups; }
};

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Sum of 32 int8.
inline int qsum32(__m256i q) {
  __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
  return _mm_cvtsi128_si32(t);
}

// The int32 codes of 32 values, 8 per vector in order: d = max|x| / qmax, q = nearest-even of x * (1 / d).
inline void block_codes(const float* x, float qmax, float& d, __m256i (&q)[4]) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
  __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                           _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  d = hmax(a) / qmax;
  const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  // cvtps rounds with MXCSR's mode: nearest-even unless a caller changed it (loom never does).
  for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
}

// Quantizes 32 values; returns the 32 int8 in natural order as one vector and d.
inline __m256i quant_block(const float* x, float& d) {
  __m256i i[4];
  block_codes(x, 127.0f, d, i);
  __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  // packs works per 128-bit lane: dwords come out as i0lo i1lo i2lo i3lo i0hi i1hi i2hi i3hi.
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Quantizes 32 values for 8-bit weights, whose products widen both sides to int16 anyway: d = max|x| /
// 32767, so 16-bit activations cost no extra multiplies. Returns values 0-15 and 16-31 as int16 in natural
// order, and the sum of q.
inline int quant_block16(const float* x, float& d, __m256i& lo, __m256i& hi) {
  __m256i i[4];
  block_codes(x, 32767.0f, d, i);
  // packs works per 128-bit lane: qwords come out as i0lo i1lo i0hi i1hi.
  lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(i[0], i[1]), 0xD8);
  hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(i[2], i[3]), 0xD8);
  const __m256i s =
      _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_set1_epi16(1)), _mm256_madd_epi16(hi, _mm256_set1_epi16(1)));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
  return _mm_cvtsi128_si32(t);
}

// Splits 32 int8 (natural order) into [16 even-indexed | 16 odd-indexed].
inline __m256i even_odd(__m256i q) {
  const __m256i sh = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14,
                                      1, 3, 5, 7, 9, 11, 13, 15);
  return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(q, sh), 0xD8);  // qwords 0 2 1 3
}

// Sums of the low and high 16 of 32 int8.
inline void qsum_halves(__m256i q, int& lo, int& hi) {
  __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
  __m128i t = _mm_hadd_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  t = _mm_hadd_epi32(t, t);  // [lo, hi, lo, hi]
  lo = _mm_cvtsi128_si32(t);
  hi = _mm_extract_epi32(t, 1);
}

// Quantizes rows [r0, r1) of x into X; xs[g] = sum over the blocks b of group g of d_b * sum_j q_j (with
// groups of 16, d_b times the sum over the group's half of block b).
void quantize_rows(const float* x, int64_t r0, int64_t r1, XQuant& X) {
  const int64_t k = X.k, unit = k / X.groups == 16 ? 16 : 32, per_group = k / X.groups / unit;
  std::vector<float> bsum(k / unit);  // d_b * sum_j q_j per block (or half block)
  auto note = [&](int64_t c, float d, __m256i q) {
    if (unit == 32) {
      bsum[c / 32] = d * static_cast<float>(qsum32(q));
    } else {
      int lo, hi;
      qsum_halves(q, lo, hi);
      bsum[c / 16] = d * static_cast<float>(lo);
      bsum[c / 16 + 1] = d * static_cast<float>(hi);
    }
  };
  for (int64_t i = r0; i < r1; ++i) {
    const float* xi = x + i * k;
    const int64_t P = X.panel, p = i / P * P, slot = i % P;
    if (X.layout == XLayout::nibbles) {
      // Values c .. c + 63 of the row at c * P + slot * 64 of its panel (a last 32: slot * 32); their
      // 8 floats of d at c / 8 * P + slot * 8.
      int8_t* qp = X.q8.data() + p * k;
      float* dp = X.d.data() + p * X.dstride;
      int64_t c = 0;
      for (; c + 64 <= k; c += 64) {
        float d0, d1;
        __m256i q0 = quant_block(xi + c, d0), q1 = quant_block(xi + c + 32, d1);
        note(c, d0, q0);
        note(c + 32, d1, q1);
        __m256i a = even_odd(q0), b = even_odd(q1);
        int8_t* qi = qp + c * P + slot * 64;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qi), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qi + 32), _mm256_permute2x128_si256(a, b, 0x31));
        _mm256_storeu_ps(dp + c / 8 * P + slot * 8, _mm256_setr_ps(d0, d0, d0, d0, d1, d1, d1, d1));
      }
      if (c < k) {  // a last block of 32
        float d0;
        __m256i q0 = quant_block(xi + c, d0);
        note(c, d0, q0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qp + c * P + slot * 32), even_odd(q0));
        _mm256_storeu_ps(dp + c / 8 * P + slot * 8, _mm256_set1_ps(d0));
      }
    } else if (X.layout == XLayout::crumbs) {
      // Single rows (panel 1): row i at i * its padded length.
      int8_t* qp = X.q8.data() + i * ((k + 127) / 128 * 128);
      float* dp = X.d.data() + i * X.dstride;
      alignas(32) int8_t q[128];
      for (int64_t c = 0; c < k; c += 128) {
        const int64_t nb = std::min<int64_t>(4, (k - c) / 32);
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        std::memset(q, 0, sizeof q);
        for (int64_t b = 0; b < nb; ++b) {
          const __m256i v = quant_block(xi + c + 32 * b, d[b]);
          note(c + 32 * b, d[b], v);
          _mm256_store_si256(reinterpret_cast<__m256i*>(q + 32 * b), v);
        }
        for (int sh = 0; sh < 4; ++sh)
          for (int j = 0; j < 32; ++j) qp[c + 32 * sh + j] = q[4 * j + sh];
        _mm256_storeu_ps(dp + c / 16, _mm256_setr_ps(d[0], d[0], d[1], d[1], d[2], d[2], d[3], d[3]));
      }
    } else if (X.layout == XLayout::i16) {
      // Block c .. c + 31 at c * P + slot * 32 of the panel; its d at c / 32 * P + slot.
      int16_t* qp = X.q16.data() + p * k;
      float* dp = X.d.data() + p * X.dstride;
      for (int64_t c = 0; c < k; c += 32) {
        int16_t* qi = qp + c * P + slot * 32;
        float& db = dp[c / 32 * P + slot];
        __m256i lo, hi;
        const int sum = quant_block16(xi + c, db, lo, hi);
        bsum[c / 32] = db * static_cast<float>(sum);  // (unit 32: 8-bit groups are >= 32)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qi), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qi + 16), hi);
      }
    } else {
      // Single rows (panel 1). Per 64 values, the 8-value runs of blocks b0 and b1 alternate: [b0 0-7, b1 0-7,
      // b0 8-15, b1 8-15 | b0 16-23, b1 16-23, b0 24-31, b1 24-31], with d [d0 d0 d1 d1 d0 d0 d1 d1]; a last
      // block of 32 as [0-7, 16-23 | 8-15, 24-31] with d x8 (the orders vpackuswb gives gemv_bits' codes).
      int8_t* qp = X.q8.data() + i * k;
      float* dp = X.d.data() + i * X.dstride;
      int64_t c = 0;
      for (; c + 64 <= k; c += 64) {
        float d0, d1;
        const __m256i q0 = quant_block(xi + c, d0), q1 = quant_block(xi + c + 32, d1);
        note(c, d0, q0);
        note(c + 32, d1, q1);
        const __m256i a = _mm256_unpacklo_epi64(q0, q1), b = _mm256_unpackhi_epi64(q0, q1);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qp + c), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qp + c + 32), _mm256_permute2x128_si256(a, b, 0x31));
        _mm256_storeu_ps(dp + c / 8, _mm256_setr_ps(d0, d0, d1, d1, d0, d0, d1, d1));
      }
      if (c < k) {
        float d0;
        const __m256i q0 = quant_block(xi + c, d0);
        note(c, d0, q0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qp + c), _mm256_permute4x64_epi64(q0, 0xD8));
        _mm256_storeu_ps(dp + c / 8, _mm256_set1_ps(d0));
      }
    }
    float* s = X.xs.data() + i * X.groups;
    for (int64_t g = 0; g < X.groups; ++g) {
      float t = 0.0f;
      for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) t += bsum[b];
      s[g] = t;
    }
  }
}

// Per-lane scale of the 64 values from `c` (4-bit): [s_g x4, s_g' x4] for group size 32, s_g broadcast
// otherwise. For group size 32, `c` must leave a full 64 values.
template <bool G32>
inline __m256 scale_vec4(const float* sc, int64_t c, int gshift) {
  if constexpr (G32) {
    __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(sc + (c >> 5))));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  } else {
    return _mm256_broadcast_ss(sc + (c >> gshift));
  }
}

// hsum(acc) plus the bias term sum_g bias_g * xs_g.
inline float finish(__m256 acc, const float* bi, const float* xs, int64_t groups) {
  __m256 b = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) b = _mm256_fmadd_ps(_mm256_loadu_ps(bi + g), _mm256_loadu_ps(xs + g), b);
  float t = hsum(b);
  for (; g < groups; ++g) t += bi[g] * xs[g];
  return hsum(acc) + t;
}

// 4-bit tile: RW packed rows (w[r], f32 scales sc[r] / biases bi[r]) x MX activation rows from i0.
template <int RW, int MX, bool G32, bool PF>
void tile4(const uint8_t* const* w, const float* const* sc, const float* const* bi, const XQuant& X, int64_t i0,
           float* out, int64_t ldo, int gshift) {
  const int64_t k = X.k, k64 = k & ~int64_t{63}, P = X.panel;
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const int8_t* xq = X.q4panel(i0);
  const float* xd = X.dpanel(i0);
  __m256 acc[RW][MX];
#pragma GCC unroll 8
  for (int r = 0; r < RW; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i) acc[r][i] = _mm256_setzero_ps();
  for (int64_t c = 0; c < k64; c += 64) {
    // One packed row at a time keeps 2 code vectors live next to the RW * MX accumulators.
#pragma GCC unroll 4
    for (int r = 0; r < RW; ++r) {
      if constexpr (PF) _mm_prefetch(reinterpret_cast<const char*>(w[r] + c / 2 + kPrefetch), _MM_HINT_T0);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + c / 2));
      const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      const __m256 sv = scale_vec4<G32>(sc[r], c, gshift);
#pragma GCC unroll 8
      for (int i = 0; i < MX; ++i) {
        const int8_t* xi = xq + c * P + i * 64;
        const __m256i p =
            _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi))),
                             _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi + 32))));
        const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        acc[r][i] = _mm256_fmadd_ps(f, _mm256_mul_ps(_mm256_loadu_ps(xd + c / 8 * P + i * 8), sv), acc[r][i]);
      }
    }
  }
  if (k64 < k) {  // a last block of 32 (group size 32): [16 low | 16 high nibbles] against [even | odd]
#pragma GCC unroll 8
    for (int r = 0; r < RW; ++r) {
      __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + k64 / 2));
      __m256i c = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4);
      __m256 s = _mm256_broadcast_ss(sc[r] + (k64 >> 5));
#pragma GCC unroll 8
      for (int i = 0; i < MX; ++i) {
        __m256i p =
            _mm256_maddubs_epi16(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k64 * P + i * 32)));
        __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        acc[r][i] = _mm256_fmadd_ps(f, _mm256_mul_ps(_mm256_loadu_ps(xd + k64 / 8 * P + i * 8), s), acc[r][i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RW; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i) out[i * ldo + r] = finish(acc[r][i], bi[r], X.xsrow(i0 + i), X.groups);
}

// 8-bit tile: as tile4, one block of 32 per step.
template <int RW, int MX, bool G32, bool PF>
void tile8(const uint8_t* const* w, const float* const* sc, const float* const* bi, const XQuant& X, int64_t i0,
           float* out, int64_t ldo, int gshift) {
  const int64_t k = X.k, P = X.panel;
  const int16_t* xq = X.q8panel(i0);
  const float* xd = X.dpanel(i0);
  __m256 acc[RW][MX];
#pragma GCC unroll 8
  for (int r = 0; r < RW; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i) acc[r][i] = _mm256_setzero_ps();
  for (int64_t c = 0; c < k; c += 32) {
    __m256i wl[RW], wh[RW];
    __m256 sv[RW];
#pragma GCC unroll 8
    for (int r = 0; r < RW; ++r) {
      if constexpr (PF) _mm_prefetch(reinterpret_cast<const char*>(w[r] + c + kPrefetch), _MM_HINT_T0);
      wl[r] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + c)));
      wh[r] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + c + 16)));
      sv[r] = _mm256_broadcast_ss(sc[r] + (c >> gshift));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i) {
      const int16_t* xi = xq + c * P + i * 32;
      const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi));
      const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi + 16));
      const __m256 dv = _mm256_broadcast_ss(xd + c / 32 * P + i);
#pragma GCC unroll 8
      for (int r = 0; r < RW; ++r) {
        __m256i p = _mm256_add_epi32(_mm256_madd_epi16(wl[r], xl), _mm256_madd_epi16(wh[r], xh));
        acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dv, sv[r]), acc[r][i]);
      }
    }
  }
  (void)G32;
#pragma GCC unroll 8
  for (int r = 0; r < RW; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < MX; ++i) out[i * ldo + r] = finish(acc[r][i], bi[r], X.xsrow(i0 + i), X.groups);
}

// ---- Decode: one activation row (panel 1) against packed rows whose scales and biases are read as
// stored, one row at a time: a single sequential stream of packed rows, prefetched, and no conversion pass
// over the scales (converting them to f32 first cost as much as a tenth of a decode step).

// Scale or bias g of a row, as f32 in 8 lanes.
template <Dtype DT>
inline __m256 bcast(const void* p, int64_t g) {
  if constexpr (DT == Dtype::f32) {
    return _mm256_broadcast_ss(static_cast<const float*>(p) + g);
  } else {
    const __m128i h = _mm_set1_epi16(static_cast<short>(static_cast<const uint16_t*>(p)[g]));
    if constexpr (DT == Dtype::bf16)  // each 32-bit lane holds h twice; shifted, h << 16 is the f32
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_broadcastsi128_si256(h), 16));
    else
      return _mm256_cvtph_ps(h);
  }
}

// Scales g and g + 1 as f32 in the two low lanes.
template <Dtype DT>
inline __m128 load2(const void* p, int64_t g) {
  if constexpr (DT == Dtype::f32) {
    return _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(static_cast<const float*>(p) + g)));
  } else {
    uint32_t u;
    std::memcpy(&u, static_cast<const uint16_t*>(p) + g, 4);
    const __m128i h = _mm_cvtsi32_si128(static_cast<int>(u));
    if constexpr (DT == Dtype::bf16)
      return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
    else
      return _mm_cvtph_ps(h);
  }
}

// Eight values from g as f32.
template <Dtype DT>
inline __m256 load8(const void* p, int64_t g) {
  if constexpr (DT == Dtype::f32)
    return _mm256_loadu_ps(static_cast<const float*>(p) + g);
  else if constexpr (DT == Dtype::bf16)
    return load8_bf16(static_cast<const uint16_t*>(p) + g);
  else
    return load8_f16(static_cast<const uint16_t*>(p) + g);
}

template <Dtype DT>
inline float scalar(const void* p, int64_t g) {
  if constexpr (DT == Dtype::f32)
    return static_cast<const float*>(p)[g];
  else if constexpr (DT == Dtype::bf16)
    return bf16_to_float(static_cast<const uint16_t*>(p)[g]);
  else
    return f16_to_float(static_cast<const uint16_t*>(p)[g]);
}

// sum_g v_g * xs_g over a row's groups, v stored as DT.
template <Dtype DT>
inline float dot_groups(const void* v, const float* xs, int64_t groups) {
  __m256 a = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) a = _mm256_fmadd_ps(load8<DT>(v, g), _mm256_loadu_ps(xs + g), a);
  float t = hsum(a);
  for (; g < groups; ++g) t += scalar<DT>(v, g) * xs[g];
  return t;
}

// Per-lane scales of a step of 64 nibble-layout values from c (int32 lane u holds values 8u .. 8u + 7):
// group size 16 [s0 s0 s1 s1 s2 s2 s3 s3] (f32 scales), 32 [s0 x4, s1 x4], larger s broadcast.
template <Dtype DT, int GS>
inline __m256 lane_scales64(const void* sc, int64_t c) {
  if constexpr (GS == 16) {
    static_assert(DT == Dtype::f32);
    const __m128 four = _mm_loadu_ps(static_cast<const float*>(sc) + c / 16);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(four), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  } else if constexpr (GS == 32) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load2<DT>(sc, c / 32)),
                                    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  } else {
    return bcast<DT>(sc, c / GS);
  }
}

// The same for a last block of 32 values from c (lanes 0-3 its even values 8u .. 8u + 6, lanes 4-7 the odd
// ones): group size 16 [s0 s0 s1 s1 s0 s0 s1 s1], else one scale.
template <Dtype DT, int GS>
inline __m256 lane_scales32(const void* sc, int64_t c) {
  if constexpr (GS == 16) {
    const __m128 two = load2<DT>(sc, c / 16);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1));
  } else {
    return bcast<DT>(sc, c / GS);
  }
}

// sum_g s_g * sum_{j in g} d_b(j) * (u_j * q_j) for one packed row of 4-bit codes (nibble layout), u the
// code itself or, with LUT, lut[code] (byte values <= 24, so the pair sums stay below 2^15).
template <Dtype DT, int GS, bool LUT>
inline float dot4_row(const XQuant& X, const uint8_t* wr, const void* sc, __m256i lut) {
  const int64_t k = X.k, k64 = k & ~int64_t{63};
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const int8_t* xq = X.q8.data();
  const float* xd = X.d.data();
  auto map = [&](__m256i codes) {
    if constexpr (LUT)
      return _mm256_shuffle_epi8(lut, codes);
    else
      return codes;
  };
  // 64 values from c: codes (low nibbles: even values, high: odd) against [32 even q | 32 odd q].
  auto step = [&](int64_t c, __m256 acc) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + c / 2));
    const __m256i lo = map(_mm256_and_si256(v, m4)), hi = map(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    const __m256i p =
        _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c))),
                         _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c + 32))));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                           _mm256_mul_ps(_mm256_loadu_ps(xd + c / 8), lane_scales64<DT, GS>(sc, c)), acc);
  };
  // Two accumulators (even and odd steps) halve the dependent FMA chain; one prefetch per cache line.
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 128 <= k64; c += 128) {
    _mm_prefetch(reinterpret_cast<const char*>(wr + c / 2 + kPrefetch), _MM_HINT_T0);
    a0 = step(c, a0);
    a1 = step(c + 64, a1);
  }
  if (c < k64) a0 = step(c, a0);
  if (k64 < k) {  // a last block of 32: [16 low | 16 high nibbles] against [even | odd]
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k64 / 2));
    const __m256i cd = map(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4));
    const __m256i p = _mm256_maddubs_epi16(cd, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k64)));
    a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                         _mm256_mul_ps(_mm256_loadu_ps(xd + k64 / 8), lane_scales32<DT, GS>(sc, k64)), a1);
  }
  return hsum(_mm256_add_ps(a0, a1));
}

// One operand's packed rows [n0, n1) against the single activation row: out[r] = the row's dot product.
using GemvFn = void (*)(const XQuant&, const QmmInt8Operand&, float gmul, int64_t n0, int64_t n1);

// Affine 4-bit.
template <Dtype DT, int GS>
void gemv4(const XQuant& X, const QmmInt8Operand& op, float, int64_t n0, int64_t n1) {
  const int64_t groups = X.groups, row_bytes = X.k / 2, ssz = static_cast<int64_t>(size_of(DT));
  const auto* w = reinterpret_cast<const uint8_t*>(op.wq);
  for (int64_t r = n0; r < n1; ++r)
    op.out[r] = dot4_row<DT, GS, false>(X, w + r * row_bytes, static_cast<const uint8_t*>(op.scales) + r * groups * ssz,
                                        __m256i{}) +
                dot_groups<DT>(static_cast<const uint8_t*>(op.biases) + r * groups * ssz, X.xs.data(), groups);
}

// mxfp4 (E8M0 scale per 32) and nvfp4 (E4M3 scale per 16, times gmul). An E2M1 value v is (u - 12) / 2
// with u = 2v + 12 in [0, 24], so a row is the affine form with codes u, scales s / 2 and biases -6 s =
// -12 (s / 2) (the bias term then uses the quantized x, as for affine, and is -12 times the scales' dot
// with the group sums). Each row's scales are decoded into f32 first (their bytes are 1/16 or 1/8 of the
// row's): E8M0 8 at a time, E4M3 16 at a time through f16 bits as the exact tier decodes mxfp8 codes.
template <QuantMode MODE>
void gemv_fp4(const XQuant& X, const QmmInt8Operand& op, float gmul, int64_t n0, int64_t n1) {
  constexpr int GS = MODE == QuantMode::mxfp4 ? 32 : 16;
  const int64_t groups = X.groups, row_bytes = X.k / 2;
  const auto* w = reinterpret_cast<const uint8_t*>(op.wq);
  const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13, 14, 15, 16,
                                       18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
  thread_local std::vector<float> buf;
  buf.resize(groups);
  float* s = buf.data();
  for (int64_t r = n0; r < n1; ++r) {
    const uint8_t* e = static_cast<const uint8_t*>(op.scales) + r * groups;
    int64_t g = 0;
    if constexpr (MODE == QuantMode::mxfp4) {
      for (; g + 8 <= groups; g += 8) {  // 2^(e - 127) / 2: e << 23, and 2^-127 (0x00400000) for e == 0
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(e + g)));
        const __m256i bits = _mm256_slli_epi32(v, 23);
        const __m256 f = _mm256_castsi256_ps(
            _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x00400000), _mm256_cmpeq_epi32(v, _mm256_setzero_si256())));
        _mm256_storeu_ps(s + g, _mm256_mul_ps(f, _mm256_set1_ps(0.5f)));
      }
    } else {  // f16 bits (b & 0x7F) << 7 | (b & 0x80) << 8 read E4M3 * 2^-8 (see quantized.cpp's DecFp8)
      const __m256 mul = _mm256_set1_ps(0.5f * 256.0f * gmul);
      for (; g + 16 <= groups; g += 16) {
        const __m256i t =
            _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(e + g))), 8);
        const __m256i h = _mm256_and_si256(_mm256_srai_epi16(t, 1), _mm256_set1_epi16(static_cast<int16_t>(0xBF80)));
        _mm256_storeu_ps(s + g, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), mul));
        _mm256_storeu_ps(s + g + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), mul));
      }
    }
    for (; g < groups; ++g)
      s[g] = 0.5f *
             (MODE == QuantMode::mxfp4 ? quant_codec::e8m0_to_float(e[g]) : quant_codec::e4m3_to_float(e[g]) * gmul);
    op.out[r] = dot4_row<Dtype::f32, GS, true>(X, w + r * row_bytes, s, lut) -
                12.0f * dot_groups<Dtype::f32>(s, X.xs.data(), groups);
  }
}

// Affine 8-bit: as gemv4, one block of 32 per step (codes widened to int16).
template <Dtype DT, int GS>
void gemv8(const XQuant& X, const QmmInt8Operand& op, float, int64_t n0, int64_t n1) {
  const int64_t k = X.k, groups = X.groups, ssz = static_cast<int64_t>(size_of(DT));
  const int16_t* xq = X.q16.data();
  const float* xd = X.d.data();
  for (int64_t r = n0; r < n1; ++r) {
    const uint8_t* wr = reinterpret_cast<const uint8_t*>(op.wq) + r * k;
    const void* sc = static_cast<const uint8_t*>(op.scales) + r * groups * ssz;
    auto step = [&](int64_t c, __m256 acc) {
      const __m256i wl = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + c)));
      const __m256i wh = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + c + 16)));
      const __m256i p =
          _mm256_add_epi32(_mm256_madd_epi16(wl, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c))),
                           _mm256_madd_epi16(wh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c + 16))));
      return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                             _mm256_mul_ps(_mm256_broadcast_ss(xd + c / 32), bcast<DT>(sc, c / GS)), acc);
    };
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 64 <= k; c += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + c + kPrefetch), _MM_HINT_T0);
      a0 = step(c, a0);
      a1 = step(c + 32, a1);
    }
    if (c < k) a0 = step(c, a0);
    op.out[r] = hsum(_mm256_add_ps(a0, a1)) +
                dot_groups<DT>(static_cast<const uint8_t*>(op.biases) + r * groups * ssz, X.xs.data(), groups);
  }
}

// Four consecutive scales from g as f32 (the low 128 bits).
template <Dtype DT>
inline __m128 load4(const void* p, int64_t g) {
  if constexpr (DT == Dtype::f32) {
    return _mm_loadu_ps(static_cast<const float*>(p) + g);
  } else {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + g));
    if constexpr (DT == Dtype::bf16)
      return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
    else
      return _mm_cvtph_ps(h);
  }
}

// Per-lane scales of a step of 128 crumbs-layout values from c (int32 lane u holds values 16u .. 16u + 15):
// group size 32 [s0 s0 s1 s1 s2 s2 s3 s3], 64 [s0 x4, s1 x4], 128 s broadcast.
template <Dtype DT, int GS>
inline __m256 lane_scales128(const void* sc, int64_t c) {
  if constexpr (GS == 32)
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load4<DT>(sc, c / 32)),
                                    _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  else if constexpr (GS == 64)
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load2<DT>(sc, c / 64)),
                                    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  else
    return bcast<DT>(sc, c / GS);
}

// Affine 2 bits: 32 bytes of the LSB-first stream hold 128 codes, byte j codes 4j .. 4j + 3 in bits 0-1,
// 2-3, 4-5, 6-7, so a shift by 2s and a mask give vector s with code 4j + s at byte j, against the crumbs
// layout. The four vpmaddubsw (pair sums <= 2 * 3 * 127) are summed as int16 (<= 3048) and widened once:
// int32 lane u holds values 16u .. 16u + 15, of block u / 2. Per 128 values: a load, 7 shifts and masks,
// 4 multiplies, 3 adds, one conversion and one FMA (the 3/5/6-bit path below takes ~15 operations per 32).
template <Dtype DT, int GS>
void gemv2(const XQuant& X, const QmmInt8Operand& op, float, int64_t n0, int64_t n1) {
  const int64_t k = X.k, k128 = k & ~int64_t{127}, groups = X.groups, row_bytes = k / 4;
  const int64_t ssz = static_cast<int64_t>(size_of(DT));
  const int8_t* xq = X.q8.data();
  const float* xd = X.d.data();
  const __m256i m2 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  auto step = [&](const uint8_t* codes, int64_t c, __m256 sv, __m256 acc) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    auto part = [&](__m256i cd, int sh) {
      return _mm256_maddubs_epi16(cd, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c + 32 * sh)));
    };
    const __m256i p = _mm256_add_epi16(
        _mm256_add_epi16(part(_mm256_and_si256(v, m2), 0), part(_mm256_and_si256(_mm256_srli_epi16(v, 2), m2), 1)),
        _mm256_add_epi16(part(_mm256_and_si256(_mm256_srli_epi16(v, 4), m2), 2),
                         part(_mm256_and_si256(_mm256_srli_epi16(v, 6), m2), 3)));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                           _mm256_mul_ps(_mm256_loadu_ps(xd + c / 16), sv), acc);
  };
  for (int64_t r = n0; r < n1; ++r) {
    const uint8_t* wr = reinterpret_cast<const uint8_t*>(op.wq) + r * row_bytes;
    const void* sc = static_cast<const uint8_t*>(op.scales) + r * groups * ssz;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 256 <= k128; c += 256) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + c / 4 + kPrefetch), _MM_HINT_T0);
      a0 = step(wr + c / 4, c, lane_scales128<DT, GS>(sc, c), a0);
      a1 = step(wr + c / 4 + 32, c + 128, lane_scales128<DT, GS>(sc, c + 128), a1);
    }
    if (c < k128) a0 = step(wr + c / 4, c, lane_scales128<DT, GS>(sc, c), a0);
    if (k128 < k) {  // 32-96 values: their bytes copied out (nothing past the row is read), zero codes after
      alignas(32) uint8_t last[32] = {};
      std::memcpy(last, wr + k128 / 4, (k - k128) / 4);
      alignas(32) float s[8] = {};
      for (int u = 0; u < 8 && k128 + 16 * u < k; ++u) s[u] = scalar<DT>(sc, (k128 + 16 * u) / GS);
      a1 = step(last, k128, _mm256_load_ps(s), a1);
    }
    op.out[r] = hsum(_mm256_add_ps(a0, a1)) +
                dot_groups<DT>(static_cast<const uint8_t*>(op.biases) + r * groups * ssz, X.xs.data(), groups);
  }
}

// Affine 3, 5 and 6 bits: the 32 codes of a block (4B bytes of the LSB-first stream) are spread to one
// byte each in registers, then multiplied as int8 against the i8 layout (codes < 64, so the pair sums stay
// below 2^15). Codes 16h .. 16h + 15 come from the 16 bytes at 2B * h, loaded into both 128-bit lanes:
// for code t of its lane's 8 (bit offset (8L + t) B from there, L the lane), a shuffle puts bytes
// (8L + t) B / 8 and the next into a 16-bit lane, a multiply by 2^(8 - s) (s = tB mod 8) and a shift
// right by 8 leave bits s .. s + 7 of the pair, masked to B bits (after two halves pack to 32 bytes).
template <int B>
struct Unpack {
  __m256i shuf, mul;
  Unpack() {
    alignas(32) int8_t sh[32];
    alignas(32) int16_t mu[16];
    for (int L = 0; L < 2; ++L)
      for (int t = 0; t < 8; ++t) {
        const int bit = (8 * L + t) * B, byte = bit / 8;
        sh[16 * L + 2 * t] = static_cast<int8_t>(byte);
        sh[16 * L + 2 * t + 1] = static_cast<int8_t>(byte + 1);
        mu[8 * L + t] = static_cast<int16_t>(1 << (8 - bit % 8));
      }
    shuf = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh));
    mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(mu));
  }
  // Codes of 16 values from the 16 bytes at p, as 16-bit lanes (lane L of the vector: codes 8L .. 8L + 7).
  __m256i half(const uint8_t* p) const {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(v, shuf), mul), 8);
  }
  // Two halves packed to bytes and masked: [a 0-7, b 0-7 | a 8-15, b 8-15] of the halves' codes.
  __m256i pack(__m256i a, __m256i b) const {
    return _mm256_and_si256(_mm256_packus_epi16(a, b), _mm256_set1_epi8((1 << B) - 1));
  }
};

// Two blocks per step (64 values from c, blocks at p0 and p0 + 4B bytes): codes 0-15 of both packed into
// one vector and 16-31 into another, in the i8 layout's order, so the two vpmaddubsw sum as int16 (codes <
// 64: <= 4 * 63 * 127) and one widening, conversion and FMA serve both blocks (int32 lanes 0-1 and 4-5
// block 0, 2-3 and 6-7 block 1). A last block of 32 takes both halves of itself: [0-7, 16-23 | 8-15, 24-31].
template <int B, Dtype DT, int GS>
void gemv_bits(const XQuant& X, const QmmInt8Operand& op, float, int64_t n0, int64_t n1) {
  static const Unpack<B> U;
  const int64_t k = X.k, k64 = k & ~int64_t{63}, groups = X.groups, row_bytes = k * B / 8;
  const int64_t ssz = static_cast<int64_t>(size_of(DT));
  const int8_t* xq = X.q8.data();
  const float* xd = X.d.data();
  const __m256i ones = _mm256_set1_epi16(1);
  auto dot = [&](int64_t c, __m256i lo, __m256i hi, __m256 sv, __m256 acc) {
    const __m256i p =
        _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c))),
                         _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c + 32))));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                           _mm256_mul_ps(_mm256_loadu_ps(xd + c / 8), sv), acc);
  };
  // Scales of a two-block step: [s0 s0 s1 s1 s0 s0 s1 s1] for group size 32, else one.
  auto scales2 = [&](const void* sc, int64_t c) {
    if constexpr (GS == 32)
      return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load2<DT>(sc, c / 32)),
                                      _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1));
    else
      return bcast<DT>(sc, c / GS);
  };
  auto step2 = [&](const uint8_t* p, int64_t c, const void* sc, __m256 acc) {
    return dot(c, U.pack(U.half(p), U.half(p + 4 * B)), U.pack(U.half(p + 2 * B), U.half(p + 6 * B)), scales2(sc, c),
               acc);
  };
  for (int64_t r = n0; r < n1; ++r) {
    const uint8_t* wr = reinterpret_cast<const uint8_t*>(op.wq) + r * row_bytes;
    const void* sc = static_cast<const uint8_t*>(op.scales) + r * groups * ssz;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t c = 0;
    // Every step but the row's last reads within the row (half() reads 16 - 2B bytes past its codes); the
    // last 64 or 32 values are copied out first, so nothing past the row's end (possibly the buffer's) is read.
    const int64_t tail = k - k64 == 0 ? k - 64 : k64;  // where the copied-out part starts
    for (; c + 128 <= tail; c += 128) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + c / 8 * B + kPrefetch), _MM_HINT_T0);
      a0 = step2(wr + c / 8 * B, c, sc, a0);
      a1 = step2(wr + (c + 64) / 8 * B, c + 64, sc, a1);
    }
    if (c < tail) a0 = step2(wr + c / 8 * B, c, sc, a0), c += 64;
    alignas(32) uint8_t last[64] = {};
    std::memcpy(last, wr + c / 8 * B, (k - c) / 8 * B);
    if (k - c == 64) {
      a1 = step2(last, c, sc, a1);
    } else {
      const __m256i cd = U.pack(U.half(last), U.half(last + 2 * B));
      const __m256i p = _mm256_maddubs_epi16(cd, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c)));
      a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                           _mm256_mul_ps(_mm256_loadu_ps(xd + c / 8), bcast<DT>(sc, c / GS)), a1);
    }
    op.out[r] = hsum(_mm256_add_ps(a0, a1)) +
                dot_groups<DT>(static_cast<const uint8_t*>(op.biases) + r * groups * ssz, X.xs.data(), groups);
  }
}

template <Dtype DT, int GS>
GemvFn affine_gemv(int bits) {
  switch (bits) {
    case 4:
      return &gemv4<DT, GS>;
    case 8:
      return &gemv8<DT, GS>;
    case 2:
      return &gemv2<DT, GS>;
    case 3:
      return &gemv_bits<3, DT, GS>;
    case 5:
      return &gemv_bits<5, DT, GS>;
    case 6:
      return &gemv_bits<6, DT, GS>;
    default:
      return nullptr;
  }
}

template <Dtype DT>
GemvFn affine_gemv(int bits, int64_t gs) {
  return gs == 32 ? affine_gemv<DT, 32>(bits) : gs == 64 ? affine_gemv<DT, 64>(bits) : affine_gemv<DT, 128>(bits);
}

GemvFn gemv_fn(const QuantSpec& spec, Dtype sdt) {
  if (spec.mode == QuantMode::mxfp4) return &gemv_fp4<QuantMode::mxfp4>;
  if (spec.mode == QuantMode::nvfp4) return &gemv_fp4<QuantMode::nvfp4>;
  return sdt == Dtype::bf16  ? affine_gemv<Dtype::bf16>(spec.bits, spec.group_size)
         : sdt == Dtype::f16 ? affine_gemv<Dtype::f16>(spec.bits, spec.group_size)
                             : affine_gemv<Dtype::f32>(spec.bits, spec.group_size);
}

using TileFn = void (*)(const uint8_t* const*, const float* const*, const float* const*, const XQuant&, int64_t, float*,
                        int64_t, int);

constexpr int kMaxRW = 4, kMaxMX = 4;

template <int BITS, bool G32, bool PF, int RW, int MX>
constexpr TileFn tile_fn() {
  if constexpr (BITS == 4)
    return &tile4<RW, MX, G32, PF>;
  else
    return &tile8<RW, MX, G32, PF>;
}

// Table [RW - 1][MX - 1] of the instantiated tiles for one (bits, group kind, prefetch).
template <int BITS, bool G32, bool PF>
struct Tiles {
  TileFn t[kMaxRW][kMaxMX];
  template <int RW, int... MXs>
  void row(std::integer_sequence<int, MXs...>) {
    ((t[RW - 1][MXs] = tile_fn<BITS, G32, PF, RW, MXs + 1>()), ...);
  }
  Tiles() {
    row<1>(std::make_integer_sequence<int, kMaxMX>{});
    row<2>(std::make_integer_sequence<int, kMaxMX>{});
    row<3>(std::make_integer_sequence<int, kMaxMX>{});
    row<4>(std::make_integer_sequence<int, kMaxMX>{});
  }
};

template <int BITS, bool G32, bool PF>
const Tiles<BITS, G32, PF>& tiles() {
  static const Tiles<BITS, G32, PF> t;
  return t;
}

// n scales or biases in dtype dt (f32, bf16, f16) to f32, 8 at a time (convert_span is per element,
// which costs as much as streaming the packed rows in decode).
void to_f32(const uint8_t* src, Dtype dt, float* out, int64_t n) {
  if (dt == Dtype::f32) {
    std::memcpy(out, src, n * sizeof(float));
    return;
  }
  const auto* h = reinterpret_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (dt == Dtype::bf16)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8_bf16(h + i));
  else
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8_f16(h + i));
  for (; i < n; ++i) out[i] = dt == Dtype::bf16 ? bf16_to_float(h[i]) : f16_to_float(h[i]);
}

// Packed rows [n0, n1) against all m activation rows. The rows are taken in blocks of about 128 KB
// (L2) whose scales and biases are converted to f32 once; within a block, for each group of MX
// activation rows (in L1), the tiles walk the block's packed rows RW at a time.
template <int BITS, bool G32, bool PF>
void run_range(const XQuant& X, int64_t m, const uint8_t* w, int64_t row_bytes, const uint8_t* scales,
               const uint8_t* biases, Dtype sdt, float* out, int64_t ldo, int64_t n0, int64_t n1, int gshift, int rw,
               int mx) {
  const auto& T = tiles<BITS, G32, PF>();
  const int64_t groups = X.groups;
  const size_t isz = size_of(sdt);
  const int64_t nb = std::max<int64_t>(rw, ((int64_t{128} << 10) / row_bytes) / rw * rw);
  std::vector<float> sb(2 * std::min(nb, n1 - n0) * groups);
  for (int64_t b0 = n0; b0 < n1; b0 += nb) {
    const int64_t b1 = std::min(n1, b0 + nb), rows = b1 - b0;
    float* sf = sb.data();
    float* bf = sb.data() + rows * groups;
    to_f32(scales + b0 * groups * isz, sdt, sf, rows * groups);
    to_f32(biases + b0 * groups * isz, sdt, bf, rows * groups);
    for (int64_t i = 0; i < m;) {
      const int M = static_cast<int>(std::min<int64_t>(mx, m - i));
      for (int64_t r0 = b0; r0 < b1;) {
        const int R = static_cast<int>(std::min<int64_t>(rw, b1 - r0));
        const uint8_t* wr[kMaxRW];
        const float* sc[kMaxRW];
        const float* bi[kMaxRW];
        for (int r = 0; r < R; ++r) {
          wr[r] = w + (r0 + r) * row_bytes;
          sc[r] = sf + (r0 - b0 + r) * groups;
          bi[r] = bf + (r0 - b0 + r) * groups;
        }
        T.t[R - 1][M - 1](wr, sc, bi, X, i, out + i * ldo + r0, ldo, gshift);
        r0 += R;
      }
      i += M;
    }
  }
}

}  // namespace

bool qmm_int8_applies(const QuantSpec& spec, bool transpose, bool has_biases, int64_t rows) {
  if (!transpose) return false;
  switch (spec.mode) {
    case QuantMode::affine:
      if (!has_biases || (spec.group_size != 32 && spec.group_size != 64 && spec.group_size != 128)) return false;
      if (spec.bits == 4 || spec.bits == 8) return true;
      return rows == 1 && (spec.bits == 2 || spec.bits == 3 || spec.bits == 5 || spec.bits == 6);
    case QuantMode::mxfp4:
      return rows == 1 && spec.group_size == 32;
    case QuantMode::nvfp4:
      return rows == 1 && spec.group_size == 16;
    default:
      return false;
  }
}

namespace {

// X for m rows of k values, allocated (quantize_rows fills it).
XQuant make_x(int64_t m, int64_t k, const QuantSpec& spec) {
  XQuant X;
  X.layout = spec.bits == 4   ? XLayout::nibbles  // fp4 too
             : spec.bits == 8 ? XLayout::i16
             : spec.bits == 2 ? XLayout::crumbs  // single rows only (qmm_int8_applies)
                              : XLayout::i8;
  X.k = k;
  X.groups = k / spec.group_size;
  X.panel = m == 1 ? 1 : kPanel;
  const int64_t mp = (m + X.panel - 1) / X.panel * X.panel;  // slots past m are never read
  if (X.layout == XLayout::nibbles) {
    X.dstride = (k + 63) / 64 * 8;  // 8 floats per 64 values (a last 32 also takes 8)
    X.q8.resize(mp * k);
  } else if (X.layout == XLayout::i16) {
    X.dstride = k / 32;
    X.q16.resize(mp * k);
  } else if (X.layout == XLayout::crumbs) {
    X.dstride = (k + 127) / 128 * 8;  // 8 floats per 128 values (a last 32-96 also takes 8)
    X.q8.resize(mp * ((k + 127) / 128 * 128));
  } else {
    X.dstride = (k + 63) / 64 * 8;  // as nibbles
    X.q8.resize(mp * k);
  }
  X.d.resize(mp * X.dstride);
  X.xs.resize(m * X.groups);
  return X;
}

// Products x_i @ W_i.T sharing k and spec (jobs with the same x pointer share one quantized x), as one
// parallel pass over every product's row chunks after one over the activation rows. With swiglu_out, the
// jobs are gate and up of one x and n (see qmm_int8_group).
void run_products(int64_t k, const QuantSpec& spec, const QmmInt8Product* jobs, size_t count, float* swiglu_out) {
  const int bits = spec.bits;
  const int64_t gs = spec.group_size, row_bytes = k * bits / 8;
  const int gshift = gs == 32 ? 5 : gs == 64 ? 6 : 7;
  const int threads = num_threads();
  // Quantized activations: one per distinct x.
  std::vector<XQuant> xq;
  std::vector<size_t> xof(count);
  for (size_t j = 0; j < count; ++j) {
    if (j > 0 && jobs[j].x == jobs[j - 1].x && jobs[j].m == jobs[j - 1].m) {
      xof[j] = xof[j - 1];
      continue;
    }
    xof[j] = xq.size();
    xq.push_back(make_x(jobs[j].m, k, spec));
  }
  struct RowTask {
    size_t job;
    int64_t b, e;
  };
  std::vector<RowTask> qtasks;
  const int64_t qgrain = std::max<int64_t>(1, 8192 / k);
  for (size_t j = 0; j < count; ++j)
    if (j == 0 || xof[j] != xof[j - 1])
      for (int64_t b = 0; b < jobs[j].m; b += qgrain) qtasks.push_back({j, b, std::min(jobs[j].m, b + qgrain)});
  parallel_for(static_cast<int64_t>(qtasks.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      quantize_rows(jobs[qtasks[t].job].x, qtasks[t].b, qtasks[t].e, xq[xof[qtasks[t].job]]);
  });

  // Packed rows [b, e) of job j against all its rows of x. One row of x: the decode GEMV. Two: prefetched
  // packed rows, one at a time; more rows: tiles, 2 x 4 for 4-bit and 3 x 4 for 8-bit (measured: 8-bit
  // pp512 +12% over 2 x 4, 4-bit -5%).
  auto tile_shape = [&](int64_t m) { return std::pair<int, int>{m <= 2 ? 1 : bits == 8 ? 3 : 2, m <= 2 ? int(m) : 4}; };
  auto rows = [&](size_t j, int64_t b, int64_t e) {
    const QmmInt8Operand& op = jobs[j].w;
    const XQuant& X = xq[xof[j]];
    const int64_t m = jobs[j].m;
    const auto* w = reinterpret_cast<const uint8_t*>(op.wq);
    const auto* sp = static_cast<const uint8_t*>(op.scales);
    const auto* bp = static_cast<const uint8_t*>(op.biases);
    const auto [rw, mx] = tile_shape(m);
    if (m == 1) {
      const float gmul = op.global_scale > 0 ? op.global_scale / (448.0f * 6.0f) : 1.0f;  // nvfp4's, as MLX
      gemv_fn(spec, op.sdt)(X, op, gmul, b, e);
    } else if (bits == 4) {
      if (gs == 32) {
        if (m <= 2)
          run_range<4, true, true>(X, m, w, row_bytes, sp, bp, op.sdt, op.out, op.n, b, e, gshift, rw, mx);
        else
          run_range<4, true, false>(X, m, w, row_bytes, sp, bp, op.sdt, op.out, op.n, b, e, gshift, rw, mx);
      } else {
        if (m <= 2)
          run_range<4, false, true>(X, m, w, row_bytes, sp, bp, op.sdt, op.out, op.n, b, e, gshift, rw, mx);
        else
          run_range<4, false, false>(X, m, w, row_bytes, sp, bp, op.sdt, op.out, op.n, b, e, gshift, rw, mx);
      }
    } else {
      if (m <= 2)
        run_range<8, false, true>(X, m, w, row_bytes, sp, bp, op.sdt, op.out, op.n, b, e, gshift, rw, mx);
      else
        run_range<8, false, false>(X, m, w, row_bytes, sp, bp, op.sdt, op.out, op.n, b, e, gshift, rw, mx);
    }
  };
  // Tasks: chunks of contiguous packed rows of every job (with swiglu, the same rows of gate and up, whose
  // epilogue the task then applies); ~512 KB of packed rows in decode (each a long sequential stream for
  // the prefetchers: 1B 4-bit tg +8% and 8-bit +10% over 64 KB, medians of interleaved runs), in prefill
  // about 8 per thread and job, at least one 128 KB block.
  std::vector<RowTask> tasks;
  for (size_t j = 0; j < (swiglu_out ? 1 : count); ++j) {
    const int64_t n = jobs[j].w.n, m = jobs[j].m;
    const int rw = tile_shape(m).first;
    int64_t chunk =
        m <= 2 ? (int64_t{512} << 10) / row_bytes : std::max((int64_t{128} << 10) / row_bytes, n / (8 * threads));
    chunk = std::max<int64_t>(rw, (chunk + rw - 1) / rw * rw);
    for (int64_t b = 0; b < n; b += chunk) tasks.push_back({j, b, std::min(n, b + chunk)});
  }
  auto run_task = [&](const RowTask& t) {
    if (!swiglu_out) return rows(t.job, t.b, t.e);
    rows(0, t.b, t.e);
    rows(1, t.b, t.e);
    const int64_t n = jobs[0].w.n;
    const float* g = jobs[0].w.out;
    const float* u = jobs[1].w.out;
    for (int64_t i = 0; i < jobs[0].m; ++i)
      for (int64_t c = t.b; c < t.e; ++c) swiglu_out[i * n + c] = silu_times(g[i * n + c], u[i * n + c]);
  };
  // Threads take tasks from a shared counter, so a thread that starts late or is descheduled (a busy
  // machine) leaves its share to the others instead of holding up the call.
  const int64_t ntasks = static_cast<int64_t>(tasks.size());
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(threads, ntasks), 1, [&](int64_t, int64_t) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < ntasks;) run_task(tasks[c]);
  });
}

}  // namespace

void qmm_int8_group(const float* x, int64_t m, int64_t k, const QuantSpec& spec, const QmmInt8Operand* ops,
                    size_t count, float* swiglu_out) {
  if (m == 0 || count == 0) return;
  std::vector<QmmInt8Product> jobs;
  for (size_t i = 0; i < count; ++i) jobs.push_back({x, m, ops[i]});
  run_products(k, spec, jobs.data(), count, swiglu_out);
}

void qmm_int8_batch(int64_t k, const QuantSpec& spec, const QmmInt8Product* products, size_t count) {
  std::vector<QmmInt8Product> jobs;
  for (size_t i = 0; i < count; ++i)
    if (products[i].m > 0 && products[i].w.n > 0) jobs.push_back(products[i]);
  if (!jobs.empty()) run_products(k, spec, jobs.data(), jobs.size(), nullptr);
}

void qmm_int8(const float* x, int64_t m, int64_t k, const uint32_t* wq, const void* scales, const void* biases,
              Dtype sdt, int64_t n, const QuantSpec& spec, float global_scale, float* out) {
  if (n == 0) return;
  const QmmInt8Operand op{wq, scales, biases, sdt, n, out, global_scale};
  qmm_int8_group(x, m, k, spec, &op, 1, nullptr);
}

#endif  // LOOM_AVX2

}  // namespace loom::cpu
