// Decode kernels (quantized_matmul with W.T and <= 8 activation rows) for affine 4- and 8-bit: the
// blocked kernels tile several packed rows (1 activation row) or several activation rows, with tails
// of 1-3 rows; every M in 1..8, N not a multiple of the tile, group sizes 32/64/128 and scales in
// f32/bf16/f16 are checked against the twin (dequantize + matmul) within 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"
#include "tests/nan_max.h"

namespace loom {
namespace {

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

Array rand_m(int64_t r, int64_t c, uint32_t seed, float amp = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-amp, amp);
  std::vector<float> v(r * c);
  for (auto& x : v) x = d(g);
  return Array::from(v, {r, c});
}

TEST(QuantizedMatmulDecode, BlockedKernelsMatchTwin) {
  for (int bits : {4, 8})
    for (int gs : {32, 64, 128})
      for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16})
        for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{13, 256}, {70, 512}, {5, 128}}) {
          QuantSpec spec{QuantMode::affine, bits, gs};
          Array w = astype(rand_m(N, K, static_cast<uint32_t>(N + K + bits), 0.2f), dt);
          auto q = quantize(w, spec);
          for (int64_t M = 1; M <= 8; ++M) {
            Array x = rand_m(M, K, static_cast<uint32_t>(M * 31 + gs), 2.0f);
            Array got = astype(quantized_matmul(x, q.wq, q.scales, q.biases, true, spec), Dtype::f32);
            Array ref = astype(detail::quantized_matmul_reference(x, q.wq, q.scales, q.biases, true, spec), Dtype::f32);
            auto g = got.to_float_vector(), r = ref.to_float_vector();
            ASSERT_EQ(g.size(), r.size());
            double md = 0, mr = 0;
            for (size_t i = 0; i < g.size(); ++i)
              md = nan_max(md, double(std::abs(g[i] - r[i]))), mr = std::max(mr, double(std::abs(r[i])));
            EXPECT_LE(md, 1e-5 * std::max(1.0, mr))
                << "bits " << bits << " gs " << gs << " dtype " << name(dt) << " M " << M << " N " << N << " K " << K;
          }
        }
}

}  // namespace
}  // namespace loom
