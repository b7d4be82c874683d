// CUDA parity of gather_qmm (backend/cuda/gather_qmm.cu) against the CPU twin, for every affine width
// (2, 3, 4, 5, 6, 8) and group size (32, 64, 128), mxfp4, nvfp4 (with and without a global scale) and
// mxfp8: the decode shape (P * M <= 64 output rows: the direct one-warp-per-output kernel), the
// sorted-tokens shape (70 pairs: pairs grouped by expert on the host, one quantized_matmul each, M = 1
// and M = 9 per pair), W without transpose with broadcast index arrays, and bf16/f16 activations and
// scales. Within 1e-5 of max |cpu| (f32 accumulation in another order; half outputs one rounding apart).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "loom/core/quant.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"
#include "tests/cuda/parity.h"

namespace loom::test {
namespace {

std::vector<QuantSpec> all_specs() {
  std::vector<QuantSpec> v;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int gs : {32, 64, 128}) v.push_back({QuantMode::affine, bits, gs});
  v.push_back(default_quant_spec(QuantMode::mxfp4));
  v.push_back(default_quant_spec(QuantMode::nvfp4));
  v.push_back(default_quant_spec(QuantMode::mxfp8));
  return v;
}

Array indices(const Shape& shape, int hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(shape_size(shape));
  for (auto& x : v) x = static_cast<int32_t>(g() % hi);
  return Array::from(v, shape);
}

// gather_qmm of the same operands on both devices (the GPU copies quantized on the GPU from the same
// weights, so both sides hold the same codes: quantize is bit-identical across devices).
::testing::AssertionResult parity(const Array& x, const Array& w, const Array& lhs, const Array& rhs, bool transpose,
                                  const QuantSpec& spec, double tol, const Array& global_scale = {}) {
  QuantizedArrays qc = quantize(w, spec, global_scale);
  Array cpu = gather_qmm(x, qc.wq, qc.scales, qc.biases, lhs, rhs, transpose, spec, false, global_scale);
  Array gpu = gather_qmm(on_gpu(x), on_gpu(qc.wq), on_gpu(qc.scales), on_gpu(qc.biases), on_gpu(lhs), on_gpu(rhs),
                         transpose, spec, false, global_scale);
  return gpu_matches_cpu(gpu, cpu, tol);
}

TEST(CudaGatherQMM, DecodeShapeEveryFormat) {
  LOOM_REQUIRE_CUDA();
  // 4 tokens x top-2 of 7 experts W [7, 37, 128]: 8 output rows.
  Array x = rand_array({4, 1, 1, 128}, 1);
  Array w = rand_array({7, 37, 128}, 2);
  Array rhs = indices({4, 2}, 7, 3);
  for (const QuantSpec& spec : all_specs())
    EXPECT_TRUE(parity(x, w, {}, rhs, true, spec, 1e-5)) << quant_spec_str(spec);
}

TEST(CudaGatherQMM, SortedTokensShapeGroupsByExpert) {
  LOOM_REQUIRE_CUDA();
  // 70 pairs over 5 experts (sorted, as the switch layers pass them, and shuffled), then 6 pairs of 9 rows.
  Array x = rand_array({70, 1, 128}, 4);
  Array w = rand_array({5, 33, 128}, 5);
  std::vector<int32_t> ids(70);
  for (int i = 0; i < 70; ++i) ids[i] = i * 5 / 70;
  Array sorted = Array::from(ids, {70});
  Array shuffled = indices({70}, 5, 6);
  Array xm = rand_array({4, 9, 128}, 7);
  Array lhs = Array::from(std::vector<int32_t>{3, 0, 3, 1, 2, 2, 0, 1}, {8});
  Array rhs = Array::from(std::vector<int32_t>{1, 1, 4, 1, 0, 1, 3, 3}, {8});
  for (const QuantSpec& spec : all_specs()) {
    EXPECT_TRUE(parity(x, w, {}, sorted, true, spec, 1e-5)) << quant_spec_str(spec) << " sorted";
    EXPECT_TRUE(parity(x, w, {}, shuffled, true, spec, 1e-5)) << quant_spec_str(spec) << " shuffled";
    EXPECT_TRUE(parity(xm, w, lhs, rhs, true, spec, 1e-5)) << quant_spec_str(spec) << " M = 9";
  }
}

TEST(CudaGatherQMM, WithoutTransposeAndGlobalScale) {
  LOOM_REQUIRE_CUDA();
  // x [4, 3, 64] picked by lhs [2, 1], W [6, 64, 128] quantized along N picked by rhs [1, 3]: 18 rows (direct
  // kernel); the same with 30 lhs entries (90 rows, grouped path).
  Array x = rand_array({4, 3, 64}, 8);
  Array w = rand_array({6, 64, 128}, 9);
  Array lhs = Array::from(std::vector<int32_t>{3, 0}, {2, 1});
  Array rhs = Array::from(std::vector<int32_t>{5, 1, 2}, {1, 3});
  Array lhs_many = indices({10, 1}, 4, 10);
  for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 5, 32}, QuantSpec{QuantMode::affine, 4, 64},
                                default_quant_spec(QuantMode::nvfp4), default_quant_spec(QuantMode::mxfp8)}) {
    EXPECT_TRUE(parity(x, w, lhs, rhs, false, spec, 1e-5)) << quant_spec_str(spec);
    EXPECT_TRUE(parity(x, w, lhs_many, rhs, false, spec, 1e-5)) << quant_spec_str(spec) << " many";
  }
  Array g = Array::from(std::vector<float>{448.0f * 6.0f / 3.5f}, {1});
  Array xd = rand_array({6, 1, 1, 64}, 11), wd = rand_array({3, 21, 64}, 12);
  Array rd = indices({6, 2}, 3, 13);
  EXPECT_TRUE(parity(xd, wd, {}, rd, true, default_quant_spec(QuantMode::nvfp4), 1e-5, g)) << "decode global scale";
  Array xs = rand_array({80, 1, 64}, 14);
  EXPECT_TRUE(parity(xs, wd, {}, indices({80}, 3, 15), true, default_quant_spec(QuantMode::nvfp4), 1e-5, g))
      << "grouped global scale";
}

TEST(CudaGatherQMM, HalfActivationsAndScales) {
  LOOM_REQUIRE_CUDA();
  // bf16 x and bf16 weights (so bf16 scales/biases): bf16 out; f16 x with f32 scales: f32 out.
  for (int64_t tokens : {9, 90}) {
    Array w = rand_array({4, 19, 64}, 16);
    Array rhs = indices({tokens, 1}, 4, 17);
    QuantSpec spec{QuantMode::affine, 4, 32};
    EXPECT_TRUE(
        parity(rand_array({tokens, 1, 1, 64}, 18, Dtype::bf16), astype(w, Dtype::bf16), {}, rhs, true, spec, 1e-2))
        << tokens << " bf16";
    EXPECT_TRUE(parity(rand_array({tokens, 1, 1, 64}, 19, Dtype::f16), w, {}, rhs, true, spec, 1e-5))
        << tokens << " f16";
  }
}

}  // namespace
}  // namespace loom::test
