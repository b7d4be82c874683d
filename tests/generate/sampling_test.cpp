// Sampler filters and logits processors on crafted inputs (expected values derived by hand from
// mlx-lm's definitions in sample_utils.py), sampling distributions within statistical bounds, and
// seeded determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "loom/generate/logits_processors.h"
#include "loom/generate/sampling.h"
#include "loom/ops/ops.h"
#include "loom/ops/random.h"

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

// ---- the op-composed samplers and processors: ties, batches, the random stream, token arrays ----

TEST(Sampling, RngIsTheCounterBasedStream) {
  // The draws are random::uniform_at (loom/ops/random.h): element i of the draw with key k is the top
  // 24 bits of splitmix64's output function at k + golden * (i + 1). Written out here independently.
  auto mix = [](uint64_t x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  };
  Rng rng(9);
  const uint64_t key = rng.next_key();
  EXPECT_EQ(key, mix(9 ^ mix(1)));
  for (uint64_t i : {0, 1, 12345})
    EXPECT_EQ(Rng::uniform(key, i), static_cast<float>(mix(key + 0x9E3779B97F4A7C15ull * (i + 1)) >> 40) / 16777216.0f);
  auto draw = random_uniform({3}, key, Device::cpu()).to_vector<float>();
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(draw[i], Rng::uniform(key, i));
}

TEST(Sampling, TiesGoToTheLowerId) {
  // p = [.2 .3 .3 .2]: top_k = 1 keeps id 1 (the lower of the two .3); top_k = 3 keeps 0, 1, 2.
  EXPECT_EQ(kept(apply_top_k(logp({0.2f, 0.3f, 0.3f, 0.2f}), 1)), (std::vector<int>{1}));
  EXPECT_EQ(kept(apply_top_k(logp({0.2f, 0.3f, 0.3f, 0.2f}), 3)), (std::vector<int>{0, 1, 2}));
  // min_p = 1 keeps only the maximum (both .3); min_tokens_to_keep = 3 adds the lower .2 (id 0).
  EXPECT_EQ(kept(apply_min_p(logp({0.2f, 0.3f, 0.3f, 0.2f}), 1.0f)), (std::vector<int>{1, 2}));
  EXPECT_EQ(kept(apply_min_p(logp({0.2f, 0.3f, 0.3f, 0.2f}), 1.0f, 3)), (std::vector<int>{0, 1, 2}));
  // top_p: the ascending (stable) order is ids 0, 3, 1, 2 with mass .2 .4 .7 1.0; top_p = .65 keeps
  // mass > .35: ids 3, 1, 2.
  EXPECT_EQ(kept(apply_top_p(logp({0.2f, 0.3f, 0.3f, 0.2f}), 0.65f)), (std::vector<int>{1, 2, 3}));
}

TEST(Sampling, FiltersWorkRowByRowOnBatches) {
  // Two rows through every filter at once equal each row alone; a 3-d [2, 1, V] batch too.
  std::vector<float> a = {0.1f, 0.2f, 0.3f, 0.4f}, b = {0.4f, 0.05f, 0.5f, 0.05f};
  std::vector<float> both;
  for (float p : a) both.push_back(std::log(p));
  for (float p : b) both.push_back(std::log(p));
  Array x = Array::from(both, {2, 4});
  auto rows = [](const Array& y) { return y.to_float_vector(); };
  auto cat = [](Array p, Array q) {
    auto v = p.to_float_vector(), w = q.to_float_vector();
    v.insert(v.end(), w.begin(), w.end());
    return v;
  };
  EXPECT_EQ(rows(apply_top_k(x, 2)), cat(apply_top_k(logp(a), 2), apply_top_k(logp(b), 2)));
  EXPECT_EQ(rows(apply_min_p(x, 0.3f, 2)), cat(apply_min_p(logp(a), 0.3f, 2), apply_min_p(logp(b), 0.3f, 2)));
  EXPECT_EQ(rows(apply_top_p(x, 0.6f)), cat(apply_top_p(logp(a), 0.6f), apply_top_p(logp(b), 0.6f)));
  EXPECT_EQ(rows(apply_top_p(reshape(x, {2, 1, 4}), 0.6f)), rows(apply_top_p(x, 0.6f)));
  // XTC at probability 1 with threshold .15: row a drops .3 and .4 (ids 2, 3); row b drops .5 (id 2).
  Rng rng(1);
  EXPECT_EQ(kept(apply_xtc(x, 1.0f, 0.15f, {}, rng)), (std::vector<int>{0, 1, 4, 5, 7}));
}

TEST(Sampling, XtcDecidesWithOneSeededUniform) {
  // The decision for a call is uniform_at(next key, 0) > probability (skip XTC), the same for every row.
  std::vector<float> p = {0.05f, 0.15f, 0.3f, 0.5f};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng shadow(seed), rng(seed);
    const bool skip = Rng::uniform(shadow.next_key(), 0) > 0.5f;
    const std::vector<int> want = skip ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{0, 1};
    EXPECT_EQ(kept(apply_xtc(logp(p), 0.5f, 0.1f, {}, rng)), want) << "seed " << seed;
  }
}

TEST(Sampling, TopPOnALongRowMatchesTheSortedDefinition) {
  // 1000 tokens (beyond the 32 that cumsum adds purely sequentially): the kept set is the smallest
  // suffix of the ascending order whose mass exceeds top_p, computed here in f64 on sorted values.
  // The random probabilities are checked to leave every cumulative sum > 1e-4 away from 1 - top_p.
  std::mt19937 gen(4);
  std::uniform_real_distribution<float> d(0.0f, 1.0f);
  std::vector<float> p(1000);
  double total = 0;
  for (auto& v : p) total += v = d(gen);
  for (auto& v : p) v = static_cast<float>(v / total);
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return p[i] < p[j]; });
  for (float top_p : {0.3f, 0.8f}) {
    std::vector<int> want;
    double cum = 0;
    for (int i : order) {
      cum += p[i];
      ASSERT_GT(std::fabs(cum - (1.0 - top_p)), 1e-4);
      if (cum > 1.0 - top_p) want.push_back(i);
    }
    std::sort(want.begin(), want.end());
    EXPECT_EQ(kept(apply_top_p(logp(p), top_p)), want) << "top_p " << top_p;
  }
}

TEST(LogitsProcessors, TokenArraysWindowsAndStrays) {
  Array logits = Array::from(std::vector<float>{1.0f, -1.0f, 2.0f, 0.5f}, {1, 4});
  // The same processors on an int32 token array (as the generation loop passes them).
  Array tokens = Array::from(std::vector<int32_t>{0, 1, 1}, {3});
  EXPECT_EQ(make_repetition_penalty(2.0f)(tokens, logits).to_float_vector(), (std::vector<float>{0.5f, -2.0f, 2.0f, 0.5f}));
  EXPECT_EQ(make_frequency_penalty(0.5f, 2)(tokens, logits).to_float_vector(), (std::vector<float>{1.0f, -2.0f, 2.0f, 0.5f}));
  // Ids outside the vocabulary count towards the window but change nothing: window [7, 1] -> id 1 only.
  std::vector<int32_t> stray = {2, 7, 1};
  EXPECT_EQ(make_presence_penalty(1.0f, 2)(stray, logits).to_float_vector(), (std::vector<float>{1.0f, -2.0f, 2.0f, 0.5f}));
  EXPECT_EQ(make_logit_bias({{9, 1.0f}, {-1, 1.0f}, {0, 0.25f}})(stray, logits).to_float_vector(),
            (std::vector<float>{1.25f, -1.0f, 2.0f, 0.5f}));
  // No history: unchanged values (as f32); a batch of two rows gets the same update in each row.
  EXPECT_EQ(make_presence_penalty(1.0f)(std::vector<int32_t>{}, logits).to_float_vector(), logits.to_float_vector());
  Array two = concatenate({logits, logits}, 0);
  EXPECT_EQ(make_frequency_penalty(0.5f)(tokens, two).to_float_vector(),
            (std::vector<float>{0.5f, -2.0f, 2.0f, 0.5f, 0.5f, -2.0f, 2.0f, 0.5f}));
  LogitsProcessorSpec spec;
  spec.repetition_penalty = 1.1f;
  spec.repetition_context_size = 7;
  spec.frequency_penalty = 0.5f;
  spec.frequency_context_size = 30;
  spec.presence_penalty = 0.0f;  // off: its context size does not count
  spec.presence_context_size = 99;
  EXPECT_EQ(history_needed(spec), 30);
}
