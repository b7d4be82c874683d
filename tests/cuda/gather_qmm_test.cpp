// CUDA parity of gather_qmm (backend/cuda/gather_qmm.cu) against the CPU twin, for every affine width
// (2, 3, 4, 5, 6, 8) and group size (32, 64, 128), mxfp4, nvfp4 (with and without a global scale) and
// mxfp8. Paths: W transposed with at most 8 rows per pair and up to 1024 pair rows goes through the decode
// GEMV over all pairs (indices read on the device): the decode shape, hundreds of pairs with repeated
// experts (sorted, as the switch layers pass them, and shuffled), x blocks picked by lhs, M = 1..8 per pair,
// rows long enough for several rounds per lane; W without transpose with broadcast index arrays (direct
// kernel); more rows (M = 9 per pair, or over 1024 pair rows: pairs grouped by expert on the host, one
// quantized_matmul each); bf16/f16 activations and scales. Within 1e-5 of max |cpu| (f32 accumulation in
// another order; half outputs one rounding apart: 1e-2).
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

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

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
      << "80 pairs global scale";
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

TEST(CudaGatherQMM, DecodeKernelAnyNumberOfPairs) {
  LOOM_REQUIRE_CUDA();
  // W [6, 40, 1152]: 36 packs per row (lanes 0-3 run a second round) and 40 rows (5 row groups of 8).
  Array w = rand_array({6, 40, 1152}, 20);
  // 300 pairs of one row each (over the old 64-row limit; every expert used ~50 times), sorted and shuffled.
  Array x1 = rand_array({300, 1, 1152}, 21);
  std::vector<int32_t> ids(300);
  for (int i = 0; i < 300; ++i) ids[i] = i * 6 / 300;
  Array sorted = Array::from(ids, {300});
  Array shuffled = indices({300}, 6, 22);
  // 100 pairs of 3 rows, x blocks repeated through lhs.
  Array x3 = rand_array({7, 3, 1152}, 23);
  Array lhs3 = indices({100}, 7, 24), rhs3 = indices({100}, 6, 25);
  for (const QuantSpec& spec : all_specs()) {
    EXPECT_TRUE(parity(x1, w, {}, sorted, true, spec, 1e-5)) << quant_spec_str(spec) << " 300 sorted";
    EXPECT_TRUE(parity(x1, w, {}, shuffled, true, spec, 1e-5)) << quant_spec_str(spec) << " 300 shuffled";
    EXPECT_TRUE(parity(x3, w, lhs3, rhs3, true, spec, 1e-5)) << quant_spec_str(spec) << " 100 x 3 rows";
  }
  // M = 1..8 rows per pair, 24 pairs.
  for (int64_t m = 1; m <= 8; ++m) {
    Array xm = rand_array({5, m, 1152}, static_cast<uint32_t>(30 + m));
    Array lhs = indices({24}, 5, static_cast<uint32_t>(40 + m)), rhs = indices({24}, 6, static_cast<uint32_t>(50 + m));
    for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 8, 32},
                                  QuantSpec{QuantMode::affine, 5, 128}, default_quant_spec(QuantMode::mxfp4),
                                  default_quant_spec(QuantMode::nvfp4), default_quant_spec(QuantMode::mxfp8)})
      EXPECT_TRUE(parity(xm, w, lhs, rhs, true, spec, 1e-5)) << quant_spec_str(spec) << " M " << m;
  }
}

TEST(CudaGatherQMM, DecodeKernelLongRowsAndGroupedAboveThreshold) {
  LOOM_REQUIRE_CUDA();
  // W [4, 64, 8192]: 256 packs per row. 200 pairs: one warp per row group, 8 rounds per lane; 8
  // pairs (one token's top-8 with a repeated expert): the block's warps split each row, 2 rounds each.
  Array w = rand_array({4, 64, 8192}, 60);
  Array x = rand_array({200, 1, 8192}, 61, Dtype::bf16);
  Array rhs = indices({200}, 4, 62);
  Array xt = rand_array({1, 1, 1, 8192}, 63);
  Array top8 = Array::from(std::vector<int32_t>{3, 0, 2, 1, 3, 2, 0, 1}, {1, 8});
  for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 8, 64},
                                QuantSpec{QuantMode::affine, 2, 32}, default_quant_spec(QuantMode::mxfp4),
                                default_quant_spec(QuantMode::mxfp8)}) {
    // bf16 activations give bf16 outputs: the GPU's f32 sums run in another order than the CPU's, so one
    // output rounding may land one bf16 step (2^-8 relative) apart.
    EXPECT_TRUE(parity(x, w, {}, rhs, true, spec, 1.0 / 256)) << quant_spec_str(spec) << " 200 pairs";
    EXPECT_TRUE(parity(xt, w, {}, top8, true, spec, 1e-5)) << quant_spec_str(spec) << " top-8";
  }
  // 1100 pairs of one row: above the decode GEMV's 1024 pair rows, the grouped path.
  Array wg = rand_array({5, 24, 256}, 64);
  Array xg = rand_array({1100, 1, 256}, 65);
  Array rg = indices({1100}, 5, 66);
  for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 4, 64}, default_quant_spec(QuantMode::nvfp4)})
    EXPECT_TRUE(parity(xg, wg, {}, rg, true, spec, 1e-5)) << quant_spec_str(spec) << " 1100 pairs";
}

// The 4/8-bit decode GEMV through gather_qmm's pairs: one token's top-8 over 6 experts with repeated
// experts (W [6, 99, 2048]: 99 rows, not a multiple of 4; 2048 codes, the MoE expert shape's K), and 2 tokens
// x top-4 with M = 2 and 4 rows per pair picked by lhs; every group size, f32 and bf16 activations (bf16
// outputs: one bf16 step, 2^-7 of max |cpu|; f32 outputs 1e-5, the f32 sums in another order).
TEST(CudaGatherQMM, Decode4And8BitPairs) {
  LOOM_REQUIRE_CUDA();
  Array w = rand_array({6, 99, 2048}, 80);
  Array top8 = Array::from(std::vector<int32_t>{5, 1, 5, 0, 2, 1, 5, 3}, {1, 8});
  Array lhs = Array::from(std::vector<int32_t>{0, 0, 1, 1, 2, 2, 1, 0}, {8});
  Array rhs = Array::from(std::vector<int32_t>{4, 4, 0, 2, 4, 1, 0, 3}, {8});
  for (int bits : {4, 8})
    for (int gs : {32, 64, 128}) {
      const QuantSpec spec{QuantMode::affine, bits, gs};
      for (Dtype xdt : {Dtype::f32, Dtype::bf16}) {
        const double tol = xdt == Dtype::f32 ? 1e-5 : 0x1p-7;
        Array x1 = rand_array({1, 1, 1, 2048}, 81, xdt);
        EXPECT_TRUE(parity(x1, w, {}, top8, true, spec, tol)) << quant_spec_str(spec) << " top-8 " << name(xdt);
        for (int64_t m : {2, 4}) {
          Array xm = rand_array({3, m, 2048}, static_cast<uint32_t>(82 + m), xdt);
          EXPECT_TRUE(parity(xm, w, lhs, rhs, true, spec, tol))
              << quant_spec_str(spec) << " M " << m << " " << name(xdt);
        }
      }
    }
}

}  // namespace
}  // namespace loom::test
