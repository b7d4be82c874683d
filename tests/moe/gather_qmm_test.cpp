// gather_qmm against dequantize + gather_mm (the exact tier: f32 activations agree up to f32 summation
// order, so within 1e-5) for every quantization format quantized_matmul takes (affine 2-8 bits at group
// sizes 32/64/128, mxfp4, nvfp4 with and without a global scale, mxfp8), on odd output widths: the decode
// shape (a few tokens x k experts, one GEMV per selected expert), the sorted-tokens shape (many pairs
// grouped by expert, one GEMM each), W without transpose with both index arrays broadcast, and half
// activations/scales. Then the quantized SwitchLinear / SwitchGLU against their dequantized twins.
#include <gtest/gtest.h>

#include <random>

#include "loom/common/error.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"
#include "tests/nan_max.h"

namespace loom::test {
namespace {

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

Array randn(const Shape& shape, uint32_t seed, Dtype dt = Dtype::f32) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(shape_size(shape));
  for (auto& x : v) x = d(g);
  return astype(Array::from(v, shape), dt);
}

Array randint(const Shape& shape, int hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(shape_size(shape));
  for (auto& x : v) x = static_cast<int32_t>(g() % hi);
  return Array::from(v, shape);
}

// max |got - want| / max |want| (the relative measure of DESIGN.md's table).
double max_rel(const Array& got, const Array& want) {
  auto g = astype(got, Dtype::f32).to_float_vector(), w = astype(want, Dtype::f32).to_float_vector();
  double md = 0, mw = 0;
  for (size_t i = 0; i < g.size(); ++i)
    md = nan_max(md, double(std::abs(g[i] - w[i]))), mw = std::max(mw, double(std::abs(w[i])));
  return md / mw;
}

std::vector<QuantSpec> all_specs() {
  std::vector<QuantSpec> v;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int gs : {32, 64, 128}) v.push_back({QuantMode::affine, bits, gs});
  v.push_back(default_quant_spec(QuantMode::mxfp4));
  v.push_back(default_quant_spec(QuantMode::nvfp4));
  v.push_back(default_quant_spec(QuantMode::mxfp8));
  return v;
}

// The oracle: the whole stack dequantized to f32, then gather_mm.
Array oracle(const Array& x, const QuantizedArrays& q, const Array& lhs, const Array& rhs, bool transpose,
             const QuantSpec& spec, const Array& global_scale = {}) {
  Array w = dequantize(q.wq, q.scales, q.biases, spec, Dtype::f32, global_scale);
  return gather_mm(astype(x, Dtype::f32), transpose ? swapaxes(w, -1, -2) : w, lhs, rhs);
}

TEST(GatherQMM, DecodeShapeMatchesDequantizedGatherMMForEveryFormat) {
  // x [3, 5, 1, 1, 128] (15 tokens) picks 2 of 7 experts W [7, 37, 128] each: out [3, 5, 2, 1, 37].
  Array x = randn({3, 5, 1, 1, 128}, 1);
  Array w = randn({7, 37, 128}, 2);
  Array idx = randint({3, 5, 2}, 7, 3);
  for (const QuantSpec& spec : all_specs()) {
    QuantizedArrays q = quantize(w, spec);
    Array got = gather_qmm(x, q.wq, q.scales, q.biases, {}, idx, /*transpose=*/true, spec);
    EXPECT_EQ(got.shape(), (Shape{3, 5, 2, 1, 37})) << quant_spec_str(spec);
    EXPECT_EQ(got.dtype(), Dtype::f32);
    EXPECT_LT(max_rel(got, oracle(x, q, {}, idx, true, spec)), 1e-5) << quant_spec_str(spec);
  }
}

TEST(GatherQMM, SortedTokensShapeGroupsPairsByExpert) {
  // 70 pairs over 5 experts, given sorted (the switch layers' layout above 64 pairs) and shuffled:
  // experts run as one multi-row product each, with results scattered back in pair order.
  Array x = randn({70, 1, 128}, 4);
  Array w = randn({5, 33, 128}, 5);
  std::vector<int32_t> ids(70);
  for (int i = 0; i < 70; ++i) ids[i] = i * 5 / 70;
  Array sorted = Array::from(ids, {70});
  Array shuffled = randint({70}, 5, 6);
  for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 3, 32},
                                default_quant_spec(QuantMode::mxfp4), default_quant_spec(QuantMode::mxfp8)}) {
    QuantizedArrays q = quantize(w, spec);
    for (bool is_sorted : {true, false}) {
      const Array& idx = is_sorted ? sorted : shuffled;
      Array got = gather_qmm(x, q.wq, q.scales, q.biases, {}, idx, true, spec, /*sorted_indices=*/is_sorted);
      EXPECT_EQ(got.shape(), (Shape{70, 1, 33}));
      EXPECT_LT(max_rel(got, oracle(x, q, {}, idx, true, spec)), 1e-5) << quant_spec_str(spec);
    }
  }
  // Many rows per pair too (M = 9 > the decode kernel's 8 rows): x [4, 9, 128] with lhs picking rows.
  Array xm = randn({4, 9, 128}, 7);
  Array lhs = Array::from(std::vector<int32_t>{3, 0, 3, 1, 2, 2}, {6});
  Array rhs = Array::from(std::vector<int32_t>{1, 1, 4, 1, 0, 1}, {6});
  QuantizedArrays q = quantize(w, {QuantMode::affine, 8, 32});
  EXPECT_LT(max_rel(gather_qmm(xm, q.wq, q.scales, q.biases, lhs, rhs, true, {QuantMode::affine, 8, 32}),
                    oracle(xm, q, lhs, rhs, true, {QuantMode::affine, 8, 32})),
            1e-5);
}

TEST(GatherQMM, WithoutTransposeAndBothIndexArraysBroadcast) {
  // x [4, 3, 64] picked by lhs [2, 1]; W [6, 64, 96] quantized along its 96 columns, picked by rhs [1, 3]:
  // out [2, 3, 3, 96] = x[lhs] @ W[rhs].
  Array x = randn({4, 3, 64}, 8);
  Array w = randn({6, 64, 96}, 9);
  Array lhs = Array::from(std::vector<int32_t>{3, 0}, {2, 1});
  Array rhs = Array::from(std::vector<int32_t>{5, 1, 2}, {1, 3});
  for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 5, 32}, default_quant_spec(QuantMode::nvfp4)}) {
    QuantizedArrays q = quantize(w, spec);
    Array got = gather_qmm(x, q.wq, q.scales, q.biases, lhs, rhs, /*transpose=*/false, spec);
    EXPECT_EQ(got.shape(), (Shape{2, 3, 3, 96}));
    EXPECT_LT(max_rel(got, oracle(x, q, lhs, rhs, false, spec)), 1e-5) << quant_spec_str(spec);
  }
}

TEST(GatherQMM, Nvfp4GlobalScale) {
  Array x = randn({6, 1, 64}, 10);
  Array w = randn({3, 21, 64}, 11);
  Array g = Array::from(std::vector<float>{448.0f * 6.0f / 3.5f}, {1});
  QuantSpec spec = default_quant_spec(QuantMode::nvfp4);
  QuantizedArrays q = quantize(w, spec, g);
  Array idx = randint({6, 2}, 3, 12);
  Array xe = expand_dims(x, 1);  // [6, 1, 1, 64] against indices [6, 2]
  Array got = gather_qmm(xe, q.wq, q.scales, q.biases, {}, idx, true, spec, false, g);
  EXPECT_LT(max_rel(got, oracle(xe, q, {}, idx, true, spec, g)), 1e-5);
}

TEST(GatherQMM, HalfActivationsAndScales) {
  // bf16 x with bf16 scales/biases -> bf16 out; f16 x with f32 scales -> f32 out (affine promotes).
  // The oracle computes in f32 from the same rounded inputs; one bf16 rounding of the result apart.
  Array w = randn({4, 19, 64}, 13);
  Array idx = randint({9, 1}, 4, 14);
  QuantSpec spec{QuantMode::affine, 4, 32};
  QuantizedArrays qb = quantize(astype(w, Dtype::bf16), spec);
  Array xb = randn({9, 1, 1, 64}, 15, Dtype::bf16);
  Array got = gather_qmm(xb, qb.wq, qb.scales, qb.biases, {}, idx, true, spec);
  EXPECT_EQ(got.dtype(), Dtype::bf16);
  EXPECT_LT(max_rel(got, oracle(xb, qb, {}, idx, true, spec)), 1e-2);
  QuantizedArrays qf = quantize(w, spec);
  Array xh = randn({9, 1, 1, 64}, 16, Dtype::f16);
  Array goth = gather_qmm(xh, qf.wq, qf.scales, qf.biases, {}, idx, true, spec);
  EXPECT_EQ(goth.dtype(), Dtype::f32);
  EXPECT_LT(max_rel(goth, oracle(xh, qf, {}, idx, true, spec)), 1e-5);
}

TEST(GatherQMM, RejectsBadArguments) {
  QuantSpec spec{QuantMode::affine, 4, 32};
  QuantizedArrays q = quantize(randn({3, 8, 64}, 1), spec);
  Array x = randn({2, 1, 64}, 2), idx = Array::from(std::vector<int32_t>{0, 2}, {2});
  EXPECT_THROW(gather_qmm(randn({2, 1, 32}, 3), q.wq, q.scales, q.biases, {}, idx, true, spec), ValueError);  // K
  EXPECT_THROW(gather_qmm(x, q.wq, q.scales, q.biases, {}, Array::from(std::vector<int32_t>{3}, {1}), true, spec),
               ValueError);                                                          // range
  EXPECT_THROW(gather_qmm(x, q.wq, q.scales, {}, {}, idx, true, spec), ValueError);  // biases
  EXPECT_THROW(gather_qmm(x, q.wq, q.scales, q.biases, {}, idx, true, {QuantMode::affine, 8, 32}), ValueError);  // bits
  EXPECT_THROW(gather_qmm(x, q.wq, q.scales, q.biases, {}, idx, true, default_quant_spec(QuantMode::mxfp4)),
               ValueError);  // fp mode with biases
}

// A quantized SwitchGLU equals the same layer switched back to dense (its dequantized twin) on both
// routing paths: fewer than 64 (token, expert) pairs (unsorted) and more (sorted by expert first).
TEST(QuantizedSwitch, SwitchGLUEqualsDequantizedTwin) {
  for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 4, 32}, QuantSpec{QuantMode::affine, 8, 64},
                                default_quant_spec(QuantMode::mxfp4)}) {
    nn::SwitchGLU q(64, 128, 6), twin(64, 128, 6);
    for (auto* l : {&q, &twin}) {
      l->gate_proj.weight = randn({6, 128, 64}, 20);
      l->up_proj.weight = randn({6, 128, 64}, 21);
      l->down_proj.weight = randn({6, 64, 128}, 22);
      for (auto* s : {&l->gate_proj, &l->up_proj, &l->down_proj}) s->to_quantized(spec);
    }
    for (auto* s : {&twin.gate_proj, &twin.up_proj, &twin.down_proj}) s->to_dense(Dtype::f32);
    EXPECT_TRUE(q.gate_proj.quantized().has_value());
    EXPECT_FALSE(twin.gate_proj.quantized().has_value());
    for (int64_t tokens : {5, 40}) {  // 10 and 80 pairs
      Array x = randn({1, tokens, 64}, 23);
      Array idx = randint({1, tokens, 2}, 6, 24);
      Array a = q(x, idx), b = twin(x, idx);
      EXPECT_EQ(a.shape(), (Shape{1, tokens, 2, 64}));
      EXPECT_LT(max_rel(a, b), 1e-5) << quant_spec_str(spec) << " tokens " << tokens;
    }
  }
}

TEST(QuantizedSwitch, SlotsFollowMlxQuantizedSwitchLinear) {
  // Packed [E, out, in*bits/32], scales and biases [E, out, in/group_size], bias unquantized.
  nn::SwitchLinear l(64, 10, 3, /*bias=*/true);
  l.to_quantized({QuantMode::affine, 4, 32});
  std::map<std::string, Shape> shapes;
  for (auto& p : l.parameters()) shapes[p.path] = p.shape;
  EXPECT_EQ(shapes.at("weight"), (Shape{3, 10, 8}));
  EXPECT_EQ(shapes.at("scales"), (Shape{3, 10, 2}));
  EXPECT_EQ(shapes.at("biases"), (Shape{3, 10, 2}));
  EXPECT_EQ(shapes.at("bias"), (Shape{3, 10}));
  nn::SwitchLinear f(64, 10, 3, false);
  f.to_quantized(default_quant_spec(QuantMode::mxfp4));
  shapes.clear();
  for (auto& p : f.parameters()) shapes[p.path] = p.shape;
  EXPECT_EQ(shapes.size(), 2u);  // no biases for the fp modes
  EXPECT_THROW(nn::SwitchLinear(48, 4, 2, false).to_quantized({QuantMode::affine, 4, 32}), ValueError);
}

}  // namespace
}  // namespace loom::test
