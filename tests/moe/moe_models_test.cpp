// Mixtral, Qwen3-MoE, Qwen2-MoE, OLMoE and PhiMoE against transformers on their fixtures (tools/refgen/
// make_moe_fixtures.py), in each of the three expert layouts real checkpoints use: the per-expert
// tensors transformers 5 saves, the transformers-v5 fused tensors (PhiMoE's router renamed `mlp.router`
// as v5 names it), and mlx-lm's stacked switch_mlp (the latter two written here from the first). Per
// layout: logits, the router's decisions exactly, token-by-token decode == full pass, a left-padded batch
// == each prompt alone; bf16 compute once.
// Built twice: here for the CPU, and in tests/cuda with LOOM_TEST_DEVICE="cuda".
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "loom/core/allocator.h"
#include "loom/io/safetensors.h"
#include "loom/models/transformer.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {
namespace fs = std::filesystem;

const Device kDevice = test_device();

struct MoEFixture {
  std::string name;
  std::string block;  // per-expert key prefix below the layer: "block_sparse_moe" or "mlp"
  std::string gate, up, down;  // per-expert projection names
};

const MoEFixture kFixtures[] = {
    {"mixtral", "block_sparse_moe", "w1", "w3", "w2"},
    {"qwen3_moe", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"qwen2_moe", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"olmoe", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"phimoe", "block_sparse_moe", "w1", "w3", "w2"},
};

// Writes the fixture's weights in `layout` ("per_expert" = as saved, "fused", "mlx") to a scratch
// folder and returns it.
std::string write_layout(const MoEFixture& f, const std::string& layout) {
  std::string src = fixture_dir(f.name);
  if (layout == "per_expert") return src;
  io::WeightStore store = io::WeightStore::open_folder(src);
  std::map<std::string, std::vector<std::pair<int, Array>>> groups;  // "<layer prefix>|<proj>" -> experts
  std::vector<std::pair<std::string, Array>> out;
  std::regex re("(model\\.layers\\.\\d+)\\." + f.block + "\\.experts\\.(\\d+)\\.(\\w+)\\.weight");
  for (const auto& n : store.names()) {
    std::smatch m;
    if (std::regex_match(n, m, re)) {
      groups[m[1].str() + "|" + m[3].str()].push_back({std::stoi(m[2].str()), store.load(n)});
    } else {
      std::string key = n;
      // transformers v5 calls Mixtral's and PhiMoE's block `mlp` (and PhiMoE's router `mlp.router`).
      if (layout == "fused" && f.block != "mlp") key = std::regex_replace(key, std::regex("\\." + f.block + "\\."), ".mlp.");
      if (layout == "fused" && f.name == "phimoe")
        key = std::regex_replace(key, std::regex("\\.mlp\\.gate\\."), ".mlp.router.");
      out.push_back({key, store.load(n)});
    }
  }
  auto stacked = [&](const std::string& layer, const std::string& proj) {
    auto v = groups.at(layer + "|" + proj);
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first < b.first; });
    std::vector<Array> arrays;
    for (auto& [e, a] : v) arrays.push_back(a);
    return stack(arrays);
  };
  std::set<std::string> layers;
  for (auto& [k, v] : groups) layers.insert(k.substr(0, k.find('|')));
  for (const auto& l : layers) {
    if (layout == "fused") {
      out.push_back({l + ".mlp.experts.gate_up_proj", concatenate({stacked(l, f.gate), stacked(l, f.up)}, 1)});
      out.push_back({l + ".mlp.experts.down_proj", stacked(l, f.down)});
    } else {
      std::string p = l + "." + f.block + ".switch_mlp.";
      out.push_back({p + "gate_proj.weight", stacked(l, f.gate)});
      out.push_back({p + "up_proj.weight", stacked(l, f.up)});
      out.push_back({p + "down_proj.weight", stacked(l, f.down)});
    }
  }
  // Per process: ctest -j runs the tests of one (fixture, layout) in parallel processes.
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "moe_layouts" / (f.name + "_" + layout + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(fs::path(src) / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  io::save_safetensors((dir / "model.safetensors").string(), out);
  return dir.string();
}

class MoE : public ::testing::TestWithParam<std::tuple<int, std::string>> {
 protected:
  void SetUp() override {
    if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
    fx = kFixtures[std::get<0>(GetParam())];
    ref = load_reference(fx.name);
    std::ifstream in(fixture_dir(fx.name) + "/reference.json");
    raw = nlohmann::json::parse(in);
    lm = load_on_device(write_layout(fx, std::get<1>(GetParam())));
  }
  Array run(models::LanguageModel& m, const std::vector<int32_t>& ids, int64_t chunk) { return run_chunked(m, ids, chunk); }
  MoEFixture fx;
  Reference ref;
  nlohmann::json raw;
  models::LoadedModel lm;
};

// The feed-forward module of layer `layer` (its MoE block on the sparse layers).
const models::FeedForward* feed_forward(models::LanguageModel& m, const MoEFixture& f, int layer) {
  std::string path = "model.layers." + std::to_string(layer) + "." + f.block;
  for (auto& [p, mod] : m.modules())
    if (p == path) return dynamic_cast<const models::FeedForward*>(mod);
  return nullptr;
}

TEST_P(MoE, FullPassLogitsAndRoutingMatchTransformers) {
  auto moe_layers = raw["moe_layers"].get<std::vector<int>>();
  ASSERT_FALSE(moe_layers.empty());
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    expect_logits_near(run(*lm.model, ref.prompts[i], 1 << 20), ref.logits[i], kF32, "prompt " + std::to_string(i));
    for (size_t j = 0; j < moe_layers.size(); ++j) {
      const models::FeedForward* ff = feed_forward(*lm.model, fx, moe_layers[j]);
      ASSERT_NE(ff, nullptr) << "layer " << moe_layers[j] << " has no feed-forward at " << fx.block;
      Array inds = ff->last_routing;  // [1, T, k]
      ASSERT_TRUE(inds.valid()) << "layer " << moe_layers[j] << " recorded no routing";
      int64_t T = inds.shape(1), k = inds.shape(2);
      auto v = inds.to_vector<int64_t>();
      auto want = raw["routing"][i][j].get<std::vector<std::vector<int64_t>>>();
      ASSERT_EQ(static_cast<size_t>(T), want.size());
      for (int64_t t = 0; t < T; ++t) {
        std::vector<int64_t> got(v.begin() + t * k, v.begin() + (t + 1) * k);
        std::sort(got.begin(), got.end());
        EXPECT_EQ(got, want[t]) << "prompt " << i << " layer " << moe_layers[j] << " token " << t;
      }
    }
  }
}

TEST_P(MoE, TokenByTokenAndChunkedDecodeMatchFullPass) {
  for (int64_t chunk : {1, 5})
    expect_logits_near(run(*lm.model, ref.prompts[0], chunk), ref.logits[0], kF32, "chunk " + std::to_string(chunk));
}

TEST_P(MoE, LeftPaddedBatchMatchesEachAlone) {
  expect_left_padded_batch_matches_each_alone(*lm.model, ref, 0);
}

TEST_P(MoE, GreedyTokensMatchTransformers) {
  EXPECT_EQ(greedy_tokens(*lm.model, ref.prompts[0], ref.greedy.size()), ref.greedy);
}

TEST_P(MoE, SteadyStateDecodeAllocatesNothingNew) {
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::last);
  for (int i = 0; i < 3; ++i) lm.model->forward(tokens_array({3}), cache, models::LogitsMode::last);
  uint64_t before = allocator::stats(kDevice).system_allocs;
  for (int i = 0; i < 20; ++i) lm.model->forward(tokens_array({static_cast<int32_t>(3 + i % 5)}), cache, models::LogitsMode::last);
  EXPECT_EQ(allocator::stats(kDevice).system_allocs, before) << "decode steps made new system allocations";
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<int, std::string>>& info) {
  return kFixtures[std::get<0>(info.param)].name + "_" + std::get<1>(info.param);
}

INSTANTIATE_TEST_SUITE_P(Layouts, MoE,
                         ::testing::Combine(::testing::Range(0, 5),
                                            ::testing::Values("per_expert", "fused", "mlx")),
                         param_name);

// The fixtures' transformers-v5 configs rewritten with v4 keys load to the same model.
TEST(MoEConfig, V4StyleConfigGivesSameLogits) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  for (const auto& f : kFixtures) {
    Reference ref = load_reference(f.name);
    models::LoadedModel m = load_on_device(v4_config_copy(f.name));
    expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, f.name + " v4 config");
  }
}

// bf16 compute, within DESIGN's bf16 row widened to transformers' own bf16 error on the fixture (every
// fixture's expert widths are multiples of 8, so transformers' bf16 grouped_mm runs on all of them).
TEST(MoEBf16, ComputeWithinBf16Tolerance) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  for (const auto& f : kFixtures) {
    Reference ref = load_reference(f.name);
    if (ref.hf_bf16_mean_rel <= 0) {
      ADD_FAILURE() << f.name << ": reference.json lacks hf_bf16 (run tools/refgen/bf16_baseline.py)";
      continue;
    }
    models::LoadedModel m = load_on_device(fixture_dir(f.name), Dtype::bf16);
    models::Cache cache = m.model->make_cache();
    Array got = m.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::all);
    EXPECT_EQ(got.dtype(), Dtype::bf16);
    Tolerance tol = bf16_tolerance(ref);
    expect_logits_near(reshape(got, {got.shape(1), got.shape(2)}), ref.logits[0], tol, f.name + " bf16");
  }
}

}  // namespace
}  // namespace loom::test
