// Small SIMD helpers for the hot CPU kernels: load 8 half/bfloat16 values as floats, horizontal sums,
// e^x in 8 lanes, silu_times. AVX2+FMA+F16C when the build targets x86-64-v3 (the default), scalar otherwise.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "loom/core/dtype.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LOOM_AVX2 1
#endif

namespace loom::cpu {

#ifdef LOOM_AVX2
inline __m256 load8_bf16(const uint16_t* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline __m256 load8_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// e^x in 8 lanes, within ~2 ulp of expf for x in [-87.3, 88.7]; 0 below (and for -inf), +inf above.
// Cephes' expf: x = n ln2 + r (ln2 in two parts), e^r by a degree-7 polynomial, times 2^n.
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.72283f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  __m256 v = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
  v = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), v);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(v, v), _mm256_add_ps(v, _mm256_set1_ps(1.0f)));
  // 2^n: n in [-126, 128] after the clamp; n = 128 (x near 88.7) splits as 2^127 * 2.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_min_epi32(ni, _mm256_set1_epi32(127));
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23)));
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(
                           _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, n1), _mm256_set1_epi32(127)), 23)));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), under);
  return _mm256_blendv_ps(y, _mm256_set1_ps(std::numeric_limits<float>::infinity()), over);
}

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}
#endif

// silu(g) * u in f32: the swiglu kernel's arithmetic, shared by the fused epilogues that must equal it.
inline float silu_times(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

// Dot product of f32 x[k] with a half-precision row w[k] (bf16 when `bf16`, else f16).
inline float dot_half(const float* x, const uint16_t* w, int64_t k, bool bf16) {
  int64_t i = 0;
  float s = 0;
#ifdef LOOM_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  if (bf16) {
    for (; i + 16 <= k; i += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8_bf16(w + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8_bf16(w + i + 8), a1);
    }
  } else {
    for (; i + 16 <= k; i += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8_f16(w + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8_f16(w + i + 8), a1);
    }
  }
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < k; ++i) s += x[i] * (bf16 ? bf16_to_float(w[i]) : f16_to_float(w[i]));
  return s;
}

}  // namespace loom::cpu
