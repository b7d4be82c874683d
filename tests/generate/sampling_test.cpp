// Sampler filters and logits processors on crafted inputs (expected values derived by hand from
// mlx-lm's definitions in sample_utils.py), sampling distributions within statistical bounds, and
// seeded determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "loom/generate/logits_processors.h"
#include "loom/generate/sampling.h"
#include "loom/ops/ops.h"

using namespace loom;
using namespace loom::generate;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

Array logp(std::vector<float> probs) {
  for (auto& p : probs) p = std::log(p);
  return Array::from(probs, {1, static_cast<int64_t>(probs.size())});
}

// Which entries survived a filter (finite).
std::vector<int> kept(const Array& a) {
  std::vector<int> out;
  auto v = a.to_float_vector();
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] != -kInf) out.push_back(static_cast<int>(i));
  return out;
}

}  // namespace

TEST(Sampling, TopKKeepsTheKLargest) {
  // p = [.1 .2 .3 .4]: the 2 largest are ids 3 and 2.
  EXPECT_EQ(kept(apply_top_k(logp({0.1f, 0.2f, 0.3f, 0.4f}), 2)), (std::vector<int>{2, 3}));
  EXPECT_EQ(kept(apply_top_k(logp({0.4f, 0.3f, 0.2f, 0.1f}), 1)), (std::vector<int>{0}));
  EXPECT_THROW(apply_top_k(logp({0.5f, 0.5f}), 2), std::exception);  // k must be < V
}

TEST(Sampling, MinPScalesByTheTopProbability) {
  // p = [.5 .3 .15 .05], min_p = .2: cut = .2 * .5 = .1, so only .05 (id 3) goes.
  EXPECT_EQ(kept(apply_min_p(logp({0.5f, 0.3f, 0.15f, 0.05f}), 0.2f)), (std::vector<int>{0, 1, 2}));
  // min_p = .5: cut = .25 keeps .5 and .3; min_tokens_to_keep = 3 adds back .15.
  EXPECT_EQ(kept(apply_min_p(logp({0.5f, 0.3f, 0.15f, 0.05f}), 0.5f)), (std::vector<int>{0, 1}));
  EXPECT_EQ(kept(apply_min_p(logp({0.5f, 0.3f, 0.15f, 0.05f}), 0.5f, 3)), (std::vector<int>{0, 1, 2}));
  // Surviving values are unchanged.
  auto v = apply_min_p(logp({0.5f, 0.3f, 0.15f, 0.05f}), 0.2f).to_float_vector();
  EXPECT_FLOAT_EQ(v[1], std::log(0.3f));
}

TEST(Sampling, TopPKeepsTheNucleus) {
  // p = [.1 .2 .3 .4]; ascending cumulative mass .1 .3 .6 1.0; keep where cum > 1 - top_p.
  // top_p = .5 -> cum > .5 keeps ids 2, 3.  top_p = .75 -> cum > .25 keeps ids 1, 2, 3.
  EXPECT_EQ(kept(apply_top_p(logp({0.1f, 0.2f, 0.3f, 0.4f}), 0.5f)), (std::vector<int>{2, 3}));
  EXPECT_EQ(kept(apply_top_p(logp({0.1f, 0.2f, 0.3f, 0.4f}), 0.75f)), (std::vector<int>{1, 2, 3}));
  // Order of the input does not matter: p = [.4 .1 .3 .2], top_p = .5 keeps ids 0, 2.
  EXPECT_EQ(kept(apply_top_p(logp({0.4f, 0.1f, 0.3f, 0.2f}), 0.5f)), (std::vector<int>{0, 2}));
}

TEST(Sampling, XtcRemovesTopChoicesButTheLeastAboveThreshold) {
  // p = [.05 .15 .3 .5], threshold .1: above it .15 .3 .5; the least of those (.15) stays and every
  // token more likely than it (.3, .5) goes. Probability 1 always applies.
  Rng rng(1);
  EXPECT_EQ(kept(apply_xtc(logp({0.05f, 0.15f, 0.3f, 0.5f}), 1.0f, 0.1f, {}, rng)), (std::vector<int>{0, 1}));
  // A special token is never removed.
  EXPECT_EQ(kept(apply_xtc(logp({0.05f, 0.15f, 0.3f, 0.5f}), 1.0f, 0.1f, {3}, rng)), (std::vector<int>{0, 1, 3}));
  // Only one token above the threshold: nothing is more likely than it, nothing goes.
  EXPECT_EQ(kept(apply_xtc(logp({0.05f, 0.05f, 0.1f, 0.8f}), 1.0f, 0.1f, {}, rng)), (std::vector<int>{0, 1, 2, 3}));
  // Probability 0: never applied.
  EXPECT_EQ(kept(apply_xtc(logp({0.05f, 0.15f, 0.3f, 0.5f}), 0.0f, 0.1f, {}, rng)), (std::vector<int>{0, 1, 2, 3}));
}

TEST(Sampling, GreedyAtTemperatureZero) {
  Sampler s({.temp = 0.0f});
  EXPECT_EQ(s(logp({0.1f, 0.6f, 0.3f})).item<int32_t>(), 1);
}

// Draws n samples (one per row) and checks each frequency within 5 standard deviations.
void check_distribution(const std::vector<float>& p, const SamplerSpec& spec, const std::vector<double>& expected) {
  const int64_t n = 20000, V = static_cast<int64_t>(p.size());
  std::vector<float> rows;
  for (int64_t i = 0; i < n; ++i)
    for (float x : p) rows.push_back(std::log(x));
  Sampler s(spec, 42);
  auto ids = s(Array::from(rows, {n, V})).to_vector<int32_t>();
  std::vector<double> count(V, 0);
  for (int32_t id : ids) count.at(id) += 1;
  for (int64_t i = 0; i < V; ++i) {
    double sd = std::sqrt(n * expected[i] * (1 - expected[i]));
    EXPECT_NEAR(count[i], n * expected[i], 5 * sd + 1e-9) << "token " << i;
  }
}

TEST(Sampling, CategoricalMatchesTheDistribution) {
  check_distribution({0.1f, 0.2f, 0.3f, 0.4f}, {.temp = 1.0f}, {0.1, 0.2, 0.3, 0.4});
  // temp 0.5 squares the probabilities: [1 4 9 16] / 30.
  check_distribution({0.1f, 0.2f, 0.3f, 0.4f}, {.temp = 0.5f}, {1 / 30.0, 4 / 30.0, 9 / 30.0, 16 / 30.0});
  // top_k = 2 renormalises over ids 2, 3: [0 0 3/7 4/7].
  check_distribution({0.1f, 0.2f, 0.3f, 0.4f}, {.temp = 1.0f, .top_k = 2}, {0, 0, 3 / 7.0, 4 / 7.0});
  // top_p = .75 keeps ids 1..3: [0 2/9 3/9 4/9].
  check_distribution({0.1f, 0.2f, 0.3f, 0.4f}, {.temp = 1.0f, .top_p = 0.75f}, {0, 2 / 9.0, 3 / 9.0, 4 / 9.0});
}

TEST(Sampling, SameSeedSameTokens) {
  std::vector<float> rows;
  for (int i = 0; i < 256; ++i)
    for (float x : {0.25f, 0.25f, 0.25f, 0.25f}) rows.push_back(std::log(x));
  Array lp = Array::from(rows, {256, 4});
  Sampler a({.temp = 1.0f}, 7), b({.temp = 1.0f}, 7), c({.temp = 1.0f}, 8);
  auto ta = a(lp).to_vector<int32_t>();
  EXPECT_EQ(ta, b(lp).to_vector<int32_t>());
  EXPECT_NE(ta, c(lp).to_vector<int32_t>());
  EXPECT_NE(ta, a(lp).to_vector<int32_t>());  // the stream advances between draws
}

TEST(LogitsProcessors, PenaltiesAndBias) {
  Array logits = Array::from(std::vector<float>{1.0f, -1.0f, 2.0f, 0.5f}, {1, 4});
  std::vector<int32_t> tokens = {0, 1, 1};
  // Repetition 2: id 0 (1 > 0) -> 1/2, id 1 (-1 < 0) -> -1*2, each distinct token once.
  EXPECT_EQ(make_repetition_penalty(2.0f)(tokens, logits).to_float_vector(), (std::vector<float>{0.5f, -2.0f, 2.0f, 0.5f}));
  // Presence .5 subtracts once per distinct token; frequency .5 once per occurrence (id 1 twice).
  EXPECT_EQ(make_presence_penalty(0.5f)(tokens, logits).to_float_vector(), (std::vector<float>{0.5f, -1.5f, 2.0f, 0.5f}));
  EXPECT_EQ(make_frequency_penalty(0.5f)(tokens, logits).to_float_vector(), (std::vector<float>{0.5f, -2.0f, 2.0f, 0.5f}));
  // Context size 2 sees only the last two tokens [1, 1].
  EXPECT_EQ(make_frequency_penalty(0.5f, 2)(tokens, logits).to_float_vector(), (std::vector<float>{1.0f, -2.0f, 2.0f, 0.5f}));
  EXPECT_EQ(make_logit_bias({{3, 1.5f}})(tokens, logits).to_float_vector(), (std::vector<float>{1.0f, -1.0f, 2.0f, 2.0f}));
  // The input is never modified.
  EXPECT_EQ(logits.to_float_vector(), (std::vector<float>{1.0f, -1.0f, 2.0f, 0.5f}));
  LogitsProcessorSpec spec;
  spec.repetition_penalty = 0.0f;  // 0 means off, as in mlx-lm
  spec.presence_penalty = 1.0f;
  EXPECT_EQ(make_logits_processors(spec).size(), 1u);
}
