// The router toolkit on crafted router logits; every expected value is derived by hand in a comment.
// Also SwitchGLU's sorted-tokens path against its unsorted path, and the expert-layout helpers.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "loom/common/error.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/ops.h"

namespace loom::test {
namespace {

void expect_floats(const Array& a, const std::vector<float>& want, float tol, const std::string& what) {
  auto got = astype(a, Dtype::f32).to_float_vector();
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << what << " at " << i;
}

// logits = log([1, 2, 3, 4]) -> softmax = [0.1, 0.2, 0.3, 0.4]; the top-2 are experts 3 and 2.
Array log1234() { return Array::from(std::vector<float>{0.f, std::log(2.f), std::log(3.f), std::log(4.f)}, {1, 4}); }

TEST(Router, SoftmaxTopKVariants) {
  nn::Routing r = nn::route(log1234(), {.top_k = 2});
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{3, 2}));
  expect_floats(r.weights, {0.4f, 0.3f}, 1e-6f, "scores");  // no renormalisation (Qwen2-MoE default)
  // Renormalised: 0.4 / 0.7 = 4/7, 0.3 / 0.7 = 3/7.
  r = nn::route(log1234(), {.top_k = 2, .weights = nn::RouterWeights::renormalized});
  expect_floats(r.weights, {4.f / 7, 3.f / 7}, 1e-6f, "renormalized");
  // Softmax of the selected logits log 4, log 3: 4/7, 3/7 (the same mixture, computed differently).
  r = nn::route(log1234(), {.top_k = 2, .weights = nn::RouterWeights::softmax_of_selected});
  expect_floats(r.weights, {4.f / 7, 3.f / 7}, 1e-6f, "softmax of selected");
  // Routed scaling 2.5 on the raw scores: 1.0, 0.75.
  r = nn::route(log1234(), {.top_k = 2, .routed_scaling_factor = 2.5f});
  expect_floats(r.weights, {1.0f, 0.75f}, 1e-6f, "routed scaling");
  EXPECT_THROW(nn::route(log1234(), {.top_k = 5}), ValueError);
}

TEST(Router, SigmoidWithSelectionOnlyCorrectionBias) {
  // sigmoid([0, 1, -1, 2]) = [0.5, 0.731059, 0.268941, 0.880797]; + bias [0, 0, 1, -1] for selection
  // = [0.5, 0.731059, 1.268941, -0.119203] -> experts 2 then 1; their weights are the unbiased
  // sigmoid scores 0.268941, 0.731059 (which sum to 1, so renormalising changes nothing).
  Array logits = Array::from(std::vector<float>{0, 1, -1, 2}, {1, 4});
  Array bias = Array::from(std::vector<float>{0, 0, 1, -1}, {4});
  nn::Routing r = nn::route(logits, {.top_k = 2, .score = nn::RouterScore::sigmoid}, bias);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{2, 1}));
  expect_floats(r.weights, {0.268941f, 0.731059f}, 1e-6f, "sigmoid scores");
  // Without the bias the selection is experts 3 (0.880797) and 1 (0.731059).
  r = nn::route(logits, {.top_k = 2, .score = nn::RouterScore::sigmoid});
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{3, 1}));
}

TEST(Router, GroupLimitedSelection) {
  // 8 experts in 4 groups of 2; sigmoid scores per group (sum of its best two ranks the group):
  //   g0 = sig[3, -3]   = [0.952574, 0.047426] -> 1.0
  //   g1 = sig[1, 0.8]  = [0.731059, 0.689974] -> 1.421033
  //   g2 = sig[2, -5]   = [0.880797, 0.006693] -> 0.887490
  //   g3 = sig[0, -0.5] = [0.5, 0.377541]      -> 0.877541
  // topk_group 2 keeps g1 and g0, so the top-2 are expert 0 (0.952574) and expert 2 (0.731059);
  // without the group limit expert 4 (0.880797) would be second.
  Array logits = Array::from(std::vector<float>{3, -3, 1, 0.8f, 2, -5, 0, -0.5f}, {1, 1, 8});
  nn::RouterSpec spec{.top_k = 2, .score = nn::RouterScore::sigmoid, .n_group = 4, .topk_group = 2};
  nn::Routing r = nn::route(logits, spec);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 2}));
  expect_floats(r.weights, {0.952574f, 0.731059f}, 1e-6f, "group-limited");
  spec.n_group = 1;
  EXPECT_EQ(nn::route(logits, spec).indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 4}));
}

TEST(Router, PhiMoESparsemixer) {
  // jitter_eps 0.1: a logit s_j is masked out of a pick's softmax when (pick - s_j) / max(|s_j|, pick) > 0.2.
  // Row 0 [2.0, 1.9, -1.0, 0.5]: pick 1 = expert 0; gaps 0.1/2 = 0.05 (kept), 3/2, 1.5/2 (masked), so its
  //   weight is 1 / (1 + e^-0.1) = 0.524979. Pick 2 = expert 1 (expert 0 masked); gaps 2.9/1.9, 1.4/1.9
  //   (masked): weight 1.
  // Row 1 [-0.5, 0.3, 0.25, 0.28]: pick 1 = expert 1; gaps 0.8/0.5 (masked), 0.05/0.3, 0.02/0.3 (kept):
  //   1 / (1 + e^-0.05 + e^-0.02) = 0.341131. Pick 2 = expert 3; gaps 0.78/0.5 (masked), 0.03/0.28 (kept):
  //   1 / (1 + e^-0.03) = 0.507499.
  Array logits = Array::from(std::vector<float>{2.0f, 1.9f, -1.0f, 0.5f, -0.5f, 0.3f, 0.25f, 0.28f}, {2, 4});
  nn::Routing r = nn::sparsemixer_route(logits, 0.1f);
  EXPECT_EQ(r.indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1, 3}));
  expect_floats(r.weights, {0.524979f, 1.0f, 0.341131f, 0.507499f}, 1e-6f, "sparsemixer");
  // jitter_eps 0: only exact ties survive a mask, so both picks weigh 1 (a plain top-2 of the logits).
  r = nn::sparsemixer_route(logits, 0.0f);
  expect_floats(r.weights, {1, 1, 1, 1}, 0, "eps 0");
  EXPECT_THROW(nn::sparsemixer_route(Array::from(std::vector<float>{1}, {1, 1}), 0.1f), ValueError);
}

TEST(Router, SigmoidGatedSharedExpert) {
  // gate weight [1, 2] = [1, -1]; x = [2, 1] -> gate logit 1 -> sigmoid 0.731059; out = 0.731059 * y.
  nn::Linear gate(2, 1, false);
  gate.weight = Array::from(std::vector<float>{1, -1}, {1, 2});
  Array x = Array::from(std::vector<float>{2, 1}, {1, 2});
  Array y = Array::from(std::vector<float>{10, -4}, {1, 2});
  expect_floats(nn::sigmoid_gated(gate, x, y), {7.31059f, -2.924236f}, 1e-5f, "gated");
}

Array randn(const Shape& shape, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(shape_size(shape));
  for (auto& x : v) x = d(g);
  return Array::from(v, shape);
}

TEST(SwitchGLU, SortedTokensPathEqualsPerTokenPath) {
  // 40 tokens x top-2 = 80 pairs >= 64: the sorted path. Each token alone (2 pairs) is unsorted.
  nn::SwitchGLU glu(24, 20, 5, /*bias=*/true);
  glu.gate_proj.weight = randn({5, 20, 24}, 1);
  glu.up_proj.weight = randn({5, 20, 24}, 2);
  glu.down_proj.weight = randn({5, 24, 20}, 3);
  glu.gate_proj.bias = randn({5, 20}, 4);
  glu.up_proj.bias = randn({5, 20}, 5);
  glu.down_proj.bias = randn({5, 24}, 6);
  Array x = randn({2, 20, 24}, 7);
  std::vector<int32_t> ids;
  for (int t = 0; t < 40; ++t) ids.insert(ids.end(), {(t * 3) % 5, (t * 3 + 2) % 5});
  Array idx = Array::from(ids, {2, 20, 2});
  Array all = glu(x, idx);  // [2, 20, 2, 24]
  ASSERT_EQ(all.shape(), (Shape{2, 20, 2, 24}));
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 20; t += 7) {
      Array one = glu(slice(x, {b, t, 0}, {b + 1, t + 1, 24}), slice(idx, {b, t, 0}, {b + 1, t + 1, 2}));
      expect_floats(one, astype(slice(all, {b, t, 0, 0}, {b + 1, t + 1, 2, 24}), Dtype::f32).to_float_vector(), 1e-4f,
                    "token " + std::to_string(t));
    }
}

TEST(ExpertLayouts, StackAndSplitFusedGiveTheSameSwitchWeights) {
  // Two experts of a [3, 2] gate/up and [2, 3] down; fused gate_up = concat(gate, up) on axis 1.
  nn::WeightDict per, fused;
  std::vector<Array> g, u, d;
  for (int e = 0; e < 2; ++e) {
    g.push_back(randn({3, 2}, 10 + e));
    u.push_back(randn({3, 2}, 20 + e));
    d.push_back(randn({2, 3}, 30 + e));
    std::string p = "m.experts." + std::to_string(e) + ".";
    per[p + "w1.weight"] = g[e];
    per[p + "w3.weight"] = u[e];
    per[p + "w2.weight"] = d[e];
  }
  fused["m.experts.gate_up_proj"] = concatenate({stack(g), stack(u)}, 1);
  fused["m.experts.down_proj"] = stack(d);
  ASSERT_TRUE(nn::stack_experts(per, "m", "m", 2, {{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}}));
  ASSERT_TRUE(nn::split_fused_experts(fused, "m", "m"));
  EXPECT_EQ(per.size(), 3u);
  for (const char* k : {"m.switch_mlp.gate_proj.weight", "m.switch_mlp.up_proj.weight", "m.switch_mlp.down_proj.weight"}) {
    ASSERT_TRUE(per.count(k) && fused.count(k)) << k;
    EXPECT_EQ(per[k].to_float_vector(), contiguous(fused[k]).to_float_vector()) << k;
  }
  EXPECT_EQ(per["m.switch_mlp.up_proj.weight"].to_float_vector(), stack(u).to_float_vector());
}

}  // namespace
}  // namespace loom::test
