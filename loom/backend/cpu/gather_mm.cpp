// gather_mm on the CPU: for each output entry p, a small [M, K] x [K, N] product whose operands are
// picked by index. MoE layers call it with M = 1 and b a transposed view of stacked expert weights
// [E, N, K], so each output element is a dot product of an activation row with a contiguous weight
// row; half-precision weights are converted in registers (dot_half), never copied. Work is split over
// the pool by (p, block of N); sorted rhs indices make neighbouring p read the same expert.
// argpartition_last: nth_element + sort of packed (value, index) keys per row.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/simd.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

float dot_f32(const float* x, const float* w, int64_t k) {
  int64_t i = 0;
  float s = 0;
#ifdef LOOM_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= k; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(w + i + 8), a1);
  }
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < k; ++i) s += x[i] * w[i];
  return s;
}

float load_f(const uint8_t* p, Dtype dt) {
  if (dt == Dtype::f32) return *reinterpret_cast<const float*>(p);
  uint16_t v = *reinterpret_cast<const uint16_t*>(p);
  return dt == Dtype::bf16 ? bf16_to_float(v) : f16_to_float(v);
}

}  // namespace

void gather_mm(const Array& a, const Array& b, const Array& lhs, const Array& rhs, Array& out) {
  const int64_t P = lhs.size(), M = a.shape(-2), K = a.shape(-1), N = b.shape(-1);
  const int nb = b.ndim();
  const int64_t b_batch = b.strides()[0], sk = b.strides()[nb - 2], sn = b.strides()[nb - 1];
  const bool w_rows = sk == 1 || K == 1;  // weight rows contiguous along K
  const Dtype bdt = b.dtype(), adt = a.dtype(), odt = out.dtype();
  const size_t bsz = size_of(bdt);
  const auto* bp = static_cast<const uint8_t*>(b.raw_data());
  const int32_t* li = lhs.data<int32_t>();
  const int32_t* ri = rhs.data<int32_t>();
  // The activations as f32 (small: [Ba, M, K]).
  std::vector<float> af(a.size());
  convert_span(a.raw_data(), adt, af.data(), Dtype::f32, a.size());
  const int64_t nblk = std::max<int64_t>(1, std::min<int64_t>(N, 64));
  const int64_t blocks = (N + nblk - 1) / nblk;
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, nblk * K * M));
  parallel_for(P * blocks, grain, [&](int64_t s, int64_t e) {
    std::vector<float> acc(nblk);
    for (int64_t u = s; u < e; ++u) {
      int64_t p = u / blocks, n0 = (u % blocks) * nblk, n1 = std::min(N, n0 + nblk);
      const float* am = af.data() + static_cast<int64_t>(li[p]) * M * K;
      const uint8_t* bm = bp + static_cast<int64_t>(ri[p]) * b_batch * static_cast<int64_t>(bsz);
      for (int64_t m = 0; m < M; ++m) {
        const float* x = am + m * K;
        for (int64_t n = n0; n < n1; ++n) {
          float v;
          if (w_rows) {
            const uint8_t* wr = bm + n * sn * static_cast<int64_t>(bsz);
            v = bdt == Dtype::f32 ? dot_f32(x, reinterpret_cast<const float*>(wr), K)
                                  : dot_half(x, reinterpret_cast<const uint16_t*>(wr), K, bdt == Dtype::bf16);
          } else {
            v = 0;
            for (int64_t k = 0; k < K; ++k) v += x[k] * load_f(bm + (k * sk + n * sn) * static_cast<int64_t>(bsz), bdt);
          }
          acc[n - n0] = v;
        }
        uint8_t* o = static_cast<uint8_t*>(out.raw_data()) + ((p * M + m) * N + n0) * static_cast<int64_t>(size_of(odt));
        convert_span(acc.data(), Dtype::f32, o, odt, n1 - n0);
      }
    }
  });
}

void argpartition_last(const Array& in, int64_t kth, Array& out) {
  const int64_t n = in.shape(-1), rows = n ? in.size() / n : 0;
  const float* x = in.data<float>();
  uint32_t* o = out.data<uint32_t>();
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n)), [&](int64_t s, int64_t e) {
    // Each entry packed as (order-preserving bits of the value) << 32 | index: one integer compare
    // orders by value and breaks ties by index, and sorting 8-byte keys is several times faster than
    // an index sort through the values (a 150k-token vocabulary is sorted for top-p every step).
    std::vector<uint64_t> keys(n);
    for (int64_t r = s; r < e; ++r) {
      const float* v = x + r * n;
      for (int64_t i = 0; i < n; ++i) {
        float f = v[i] == 0.0f ? 0.0f : v[i];  // -0 and +0 tie, as the values compare equal
        uint32_t u;
        std::memcpy(&u, &f, sizeof u);
        u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
        keys[i] = (static_cast<uint64_t>(u) << 32) | static_cast<uint32_t>(i);
      }
      if (kth + 1 < n) {
        std::nth_element(keys.begin(), keys.begin() + kth, keys.end());
        std::sort(keys.begin(), keys.begin() + kth + 1);
      } else {
        std::sort(keys.begin(), keys.end());
      }
      uint32_t* idx = o + r * n;
      for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<uint32_t>(keys[i]);
    }
  });
}

}  // namespace loom::cpu
