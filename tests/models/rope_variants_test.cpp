// RoPE variants against transformers' own parameter functions (ROPE_INIT_FUNCTIONS, recorded by
// tools/refgen/rope_ref.py in rope_reference.json): the inverse frequencies and the attention factor
// loom derives from each config, including the sequence-length-dependent dynamic and longrope ones.
#include <fstream>

#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/ops/fast.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {

nlohmann::json load_cases() {
  std::ifstream in(std::string(LOOM_SOURCE_DIR) + "/tests/models/rope_reference.json");
  if (!in) throw std::runtime_error("missing tests/models/rope_reference.json");
  return nlohmann::json::parse(in);
}

TEST(RopeVariants, MatchTransformersInvFreqAndAttentionFactor) {
  nlohmann::json ref = load_cases();
  int dims = ref["head_dim"].get<int>();
  ASSERT_GE(ref["cases"].size(), 9u);
  for (const auto& c : ref["cases"]) {
    std::string name = c["name"];
    nlohmann::json cfg = {{"rope_parameters", c["rope_parameters"]}, {"max_position_embeddings", c["max_position_embeddings"]}};
    io::Config config = io::Config::parse(cfg.dump(), name);  // v5 keys, normalised as when loading
    double theta = config.get_float("rope_theta");
    nn::Rope rope(dims, theta, false, models::parse_rope_scaling(config), c["max_position_embeddings"].get<int64_t>());
    // transformers evaluates sequence-dependent variants at seq_len; loom at the end of the sequence.
    int64_t total = std::max<int64_t>(1, c["seq_len"].get<int64_t>());
    std::vector<double> got = rope.inv_freq(total);
    auto want = c["inv_freq"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 2e-6 * std::abs(want[i]) + 1e-12) << name << " inv_freq[" << i << "]";
    EXPECT_NEAR(rope.mscale(), c["attention_factor"].get<double>(), 1e-6) << name << " attention factor";
  }
}

TEST(RopeVariants, DynamicScalingChangesBaseOnlyPastTheTrainedLength) {
  io::Config config = io::Config::parse(R"({"rope_scaling": {"type": "dynamic", "factor": 2.0}, "rope_theta": 10000.0})");
  nn::Rope rope(16, 10000.0, false, models::parse_rope_scaling(config), 32);
  // At or below 32 positions: the plain base. Past it: base * (f*L/max - (f-1))^(d/(d-2)).
  EXPECT_FLOAT_EQ(rope.spec_for(32).base, 10000.0f);
  EXPECT_NEAR(rope.spec_for(64).base, 10000.0 * std::pow(2.0 * 64 / 32 - 1, 16.0 / 14.0), 1e-2);
}

TEST(RopeVariants, MscaleScalesOnlyTheRotatedFeatures) {
  // longrope with an attention factor: x * mscale is rotated; a partial rotary leaves the tail as is.
  nn::RopeScaling s;
  s.type = "longrope";
  s.short_factor.assign(4, 1.0);
  s.long_factor.assign(4, 1.0);
  s.original_max_position_embeddings = 16;
  nn::Rope rope(8, 10000.0, false, s, 64);  // factor 4 -> mscale sqrt(1 + ln 4 / ln 16) = sqrt(1.5)
  EXPECT_NEAR(rope.mscale(), std::sqrt(1.5), 1e-6);
  Array x = Array::from(std::vector<float>(12, 1.0f), {1, 1, 1, 12});
  std::vector<float> y = rope(x, 0).to_float_vector();  // position 0: rotation is the identity
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], std::sqrt(1.5), 1e-6) << i;
  for (int i = 8; i < 12; ++i) EXPECT_FLOAT_EQ(y[i], 1.0f) << i;
}

}  // namespace
}  // namespace loom::test
