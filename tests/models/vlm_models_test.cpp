// Llama 4 (llama4, llama4_text) and Mistral 3 (mistral3, ministral3) against HF transformers on their
// tiny random fixtures (tools/refgen/make_vlm_fixtures.py; the llama4 and mistral3 checkpoints come
// from the ConditionalGeneration classes with tiny vision towers, so loading them proves sanitize drops
// the vision weights): logits of a full pass, token-by-token and chunked decode through the cache
// (chunks and windows shorter than the prompt), a left-padded batch plus one decode step, greedy
// tokens, bf16 compute, the prompt-cache round trip, the other key layouts real checkpoints use
// (mlx-lm's stacked experts, transformers' pre/post-4.52 VLM prefixes, v4-style configs), and
// Llama 4's routing decisions exactly. Built twice: here for the CPU, and in tests/cuda with
// LOOM_TEST_DEVICE="cuda".
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>

#include "loom/core/allocator.h"
#include "loom/generate/prompt_cache.h"
#include "loom/io/config.h"
#include "loom/io/safetensors.h"
#include "loom/models/transformer.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {

namespace fs = std::filesystem;
const Device kDevice = test_device();

std::string scratch(const std::string& name) {
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "vlm_scratch" / (name + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir.string();
}

nlohmann::json raw_reference(const std::string& name) {
  std::ifstream in(fixture_dir(name) + "/reference.json");
  if (!in) throw std::runtime_error("missing fixture " + fixture_dir(name) + "/reference.json");
  return nlohmann::json::parse(in);
}

class Vlm : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
    ref = load_reference(GetParam());
    lm = load_on_device(fixture_dir(GetParam()));
  }
  Reference ref;
  models::LoadedModel lm;
};

TEST_P(Vlm, FullPassMatchesTransformers) {
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    expect_logits_near(run_chunked(*lm.model, ref.prompts[i], 1 << 20), ref.logits[i], kF32,
                       "prompt " + std::to_string(i));
}

TEST_P(Vlm, TokenByTokenAndChunkedDecodeMatchFullPass) {
  // Chunks 1 and 5 cross the fixtures' attention chunks (4 and 3) and sliding windows (5) at
  // different offsets, so the chunked cache trims, and the rotating window slides, mid-prompt.
  for (int64_t chunk : {1, 5})
    expect_logits_near(run_chunked(*lm.model, ref.prompts[0], chunk), ref.logits[0], kF32,
                       "chunk " + std::to_string(chunk));
}

TEST_P(Vlm, LeftPaddedBatchMatchesEachAlone) {
  // Row 0: prompt 0; row 1: prompt 1 left-padded with token 0. Chunk boundaries, RoPE positions and
  // the attention temperature follow each row's own positions, so each row equals its prompt alone.
  expect_left_padded_batch_matches_each_alone(*lm.model, ref, 1);
}

TEST_P(Vlm, GreedyTokensMatchTransformers) {
  EXPECT_EQ(greedy_tokens(*lm.model, ref.prompts[0], ref.greedy.size()), ref.greedy);
}

TEST_P(Vlm, Bf16ComputeWithinBf16Tolerance) {
  ASSERT_GT(ref.hf_bf16_mean_rel, 0) << "reference.json lacks hf_bf16";
  models::LoadedModel m = load_on_device(fixture_dir(GetParam()), Dtype::bf16);
  models::Cache cache = m.model->make_cache();
  Array got = m.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::all);
  EXPECT_EQ(got.dtype(), Dtype::bf16);
  expect_logits_near(reshape(got, {got.shape(1), got.shape(2)}), ref.logits[0], bf16_tolerance(ref), "bf16 compute");
}

bool array_equal(const Array& a, const Array& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Array ca = to_device(contiguous(a), Device::cpu()), cb = to_device(contiguous(b), Device::cpu());
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

TEST_P(Vlm, PromptCacheRoundTrip) {
  // Prefill 8 tokens, save, load, and decode the rest of prompt 0 one token at a time on the loaded
  // cache: the logits equal transformers' for those positions, and equal the original cache's bit
  // for bit (the loaded cache holds the same positions, chunk bookkeeping included).
  const auto& p = ref.prompts[0];
  const int64_t T = static_cast<int64_t>(p.size()), pre = 8;
  models::Cache c = lm.model->make_cache();
  lm.model->forward(tokens_array(std::vector<int32_t>(p.begin(), p.begin() + pre)), c, models::LogitsMode::none);
  std::string file = scratch("prompt_cache") + "/" + GetParam() + ".safetensors";
  generate::save_prompt_cache(file, c, {{"model", GetParam()}});
  std::map<std::string, std::string> meta;
  models::Cache back = generate::load_prompt_cache(file, *lm.model, &meta);
  EXPECT_EQ(meta.at("model"), GetParam());
  EXPECT_EQ(back.offset(), pre);
  for (int64_t t = pre; t < T; ++t) {
    Array a = lm.model->forward(tokens_array({p[t]}), back, models::LogitsMode::all);
    Array b = lm.model->forward(tokens_array({p[t]}), c, models::LogitsMode::all);
    EXPECT_TRUE(array_equal(a, b)) << "position " << t;
    int64_t V = a.shape(-1);
    expect_logits_near(reshape(a, {1, V}), slice_axis(ref.logits[0], 0, t, t + 1), kF32,
                       "position " + std::to_string(t));
  }
  fs::remove(file);
}

TEST_P(Vlm, SteadyStateDecodeAllocatesNothingNew) {
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::last);
  for (int i = 0; i < 3; ++i) lm.model->forward(tokens_array({3}), cache, models::LogitsMode::last);
  uint64_t before = allocator::stats(kDevice).system_allocs;
  for (int i = 0; i < 20; ++i) lm.model->forward(tokens_array({3}), cache, models::LogitsMode::last);
  EXPECT_EQ(allocator::stats(kDevice).system_allocs, before) << "decode steps made new system allocations";
}

// The fixture's weights rewritten by `rename` (key -> new key, "" drops it; may add tensors through
// `extra`) into a scratch folder with the same config; returns the folder.
std::string rewrite(
    const std::string& name, const std::string& tag, const std::function<std::string(const std::string&)>& rename,
    const std::function<void(io::WeightStore&, std::vector<std::pair<std::string, Array>>&)>& extra = {},
    const std::function<void(nlohmann::json&)>& config = {}) {
  io::WeightStore store = io::WeightStore::open_folder(fixture_dir(name));
  std::vector<std::pair<std::string, Array>> out;
  for (const auto& n : store.names()) {
    std::string key = rename(n);
    if (!key.empty()) out.push_back({key, store.load(n)});
  }
  if (extra) extra(store, out);
  std::string dir = scratch(name + "_" + tag);
  nlohmann::json j = nlohmann::json::parse(std::ifstream(fixture_dir(name) + "/config.json"));
  if (config) config(j);
  std::ofstream(dir + "/config.json") << j.dump(2);
  io::save_safetensors(dir + "/model.safetensors", out);
  return dir;
}

// The vision-language checkpoints only.
class VlmCheckpoint : public Vlm {};

TEST_P(VlmCheckpoint, VisionWeightsArePresentAndDropped) {
  // The checkpoint really carries a vision tower and a projector (the strict load of the model in
  // SetUp succeeded, so sanitize dropped them) ...
  io::WeightStore store = io::WeightStore::open_folder(fixture_dir(GetParam()));
  int vision = 0, projector = 0;
  for (const auto& n : store.names()) {
    vision += n.find("vision") != std::string::npos;
    projector += n.find("multi_modal_projector") != std::string::npos;
  }
  EXPECT_GT(vision, 0);
  EXPECT_GT(projector, 0);
  // ... and an unknown extra tensor is still an error naming it (sanitize drops only what it should).
  std::string dir = rewrite(
      GetParam(), "stray", [](const std::string& k) { return k; },
      [](io::WeightStore&, std::vector<std::pair<std::string, Array>>& out) {
        out.push_back({"mystery_tower.weight", zeros({2})});
      });
  try {
    load_on_device(dir);
    FAIL() << "expected the stray tensor to be refused";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("mystery_tower.weight"), std::string::npos) << e.what();
  }
}

// transformers >= 4.52 saves VLMs as model.language_model.* / model.<tower>.* / lm_head.*; earlier
// versions and mlx-community as language_model.model.* / <tower>.* / language_model.lm_head.*. The
// fixture has one of them; the other must load to the same logits.
TEST_P(VlmCheckpoint, OtherVlmKeyLayoutGivesSameLogits) {
  io::WeightStore store = io::WeightStore::open_folder(fixture_dir(GetParam()));
  bool v5 = false;
  for (const auto& n : store.names()) v5 = v5 || n.rfind("model.language_model.", 0) == 0;
  auto to_legacy = [](const std::string& k) {
    if (k.rfind("model.language_model.", 0) == 0) return "language_model.model." + k.substr(21);
    if (k.rfind("lm_head.", 0) == 0) return "language_model." + k;
    if (k.rfind("model.", 0) == 0) return k.substr(6);
    return k;
  };
  auto to_v5 = [](const std::string& k) {
    if (k.rfind("language_model.model.", 0) == 0) return "model.language_model." + k.substr(21);
    if (k.rfind("language_model.lm_head.", 0) == 0) return k.substr(15);
    return "model." + k;
  };
  std::string dir = v5 ? rewrite(GetParam(), "legacy", to_legacy) : rewrite(GetParam(), "v5", to_v5);
  models::LoadedModel m = load_on_device(dir);
  expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32,
                     v5 ? "legacy layout" : "v5 layout");
}

// The config with transformers-v4 keys (rope_theta + rope_scaling instead of rope_parameters, in the
// text config too) loads to the same model.
TEST_P(Vlm, V4StyleConfigGivesSameLogits) {
  auto v4 = [](nlohmann::json& j) {
    if (!j.contains("rope_parameters")) return;
    nlohmann::json rp = j["rope_parameters"];
    j.erase("rope_parameters");
    j["rope_theta"] = rp["rope_theta"];
    rp.erase("rope_theta");
    if (rp.value("rope_type", "default") != "default") {
      rp["type"] = rp["rope_type"];
      j["rope_scaling"] = rp;
    }
  };
  std::string dir = rewrite(
      GetParam(), "v4", [](const std::string& k) { return k; }, {},
      [&](nlohmann::json& j) {
        v4(j);
        if (j.contains("text_config")) v4(j["text_config"]);
        if (j.contains("dtype")) j["torch_dtype"] = j["dtype"], j.erase("dtype");
      });
  models::LoadedModel m = load_on_device(dir);
  expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, "v4 config");
}

INSTANTIATE_TEST_SUITE_P(Architectures, Vlm,
                         ::testing::Values("llama4", "llama4_text", "mistral3", "mistral3_ministral3", "ministral3"));
INSTANTIATE_TEST_SUITE_P(Checkpoints, VlmCheckpoint, ::testing::Values("llama4", "mistral3", "mistral3_ministral3"));

// ---- Llama 4's mixture of experts ----

class Llama4Moe : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
    ref = load_reference(GetParam());
    raw = raw_reference(GetParam());
  }
  Reference ref;
  nlohmann::json raw;
};

// The feed-forward of layer `layer` wherever the text model sits (model.* or language_model.model.*).
const models::FeedForward* feed_forward(models::LanguageModel& m, int layer) {
  std::string tail = "layers." + std::to_string(layer) + ".feed_forward";
  for (auto& [p, mod] : m.modules())
    if (p.size() >= tail.size() && p.compare(p.size() - tail.size(), tail.size(), tail) == 0 &&
        (p.size() == tail.size() || p[p.size() - tail.size() - 1] == '.'))
      return dynamic_cast<const models::FeedForward*>(mod);
  return nullptr;
}

// Runs each prompt and checks every MoE layer's top-1 expert per token against transformers' router
// (reference.json: routing[prompt][moe layer][token] = [expert]; every expert is used, and each
// token's best score beats the second by >= 1e-3, so the decisions must agree exactly).
void expect_routing(models::LanguageModel& m, const Reference& ref, const nlohmann::json& raw,
                    const std::string& what) {
  auto moe_layers = raw.at("moe_layers").get<std::vector<int>>();
  ASSERT_FALSE(moe_layers.empty());
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    expect_logits_near(run_chunked(m, ref.prompts[i], 1 << 20), ref.logits[i], kF32,
                       what + " prompt " + std::to_string(i));
    for (size_t j = 0; j < moe_layers.size(); ++j) {
      const models::FeedForward* ff = feed_forward(m, moe_layers[j]);
      ASSERT_NE(ff, nullptr) << "layer " << moe_layers[j];
      Array inds = ff->last_routing;  // [1, T, 1]
      ASSERT_TRUE(inds.valid()) << "layer " << moe_layers[j] << " recorded no routing";
      auto v = inds.to_vector<int64_t>();
      auto want = raw["routing"][i][j].get<std::vector<std::vector<int64_t>>>();
      ASSERT_EQ(v.size(), want.size());
      for (size_t t = 0; t < v.size(); ++t)
        EXPECT_EQ(std::vector<int64_t>{v[t]}, want[t])
            << what << " prompt " << i << " layer " << moe_layers[j] << " token " << t;
    }
  }
}

TEST_P(Llama4Moe, RoutingDecisionsMatchTransformers) {
  models::LoadedModel m = load_on_device(fixture_dir(GetParam()));
  expect_routing(*m.model, ref, raw, "fused experts");
}

// mlx-lm's sanitize turns transformers' fused experts (gate_up_proj [E, H, 2I] with the gate columns
// first, down_proj [E, I, H], both applied as x @ W) into stacked SwitchGLU weights [E, out, in]; an
// mlx-community checkpoint carries those. Written here from the fixture, they load to the same model.
TEST_P(Llama4Moe, MlxStackedExpertsGiveSameLogitsAndRouting) {
  std::regex fused(R"((.*\.feed_forward\.experts)\.(gate_up_proj|down_proj))");
  std::string dir = rewrite(
      GetParam(), "mlx_experts", [&](const std::string& k) { return std::regex_match(k, fused) ? "" : k; },
      [&](io::WeightStore& store, std::vector<std::pair<std::string, Array>>& out) {
        for (const auto& n : store.names()) {
          std::smatch mt;
          if (!std::regex_match(n, mt, fused)) continue;
          Array w = store.load(n);
          if (mt[2] == "down_proj") {
            out.push_back({mt[1].str() + ".down_proj.weight", contiguous(swapaxes(w, 1, 2))});
          } else {
            int64_t I = w.shape(2) / 2;
            out.push_back({mt[1].str() + ".gate_proj.weight", contiguous(swapaxes(slice_axis(w, 2, 0, I), 1, 2))});
            out.push_back({mt[1].str() + ".up_proj.weight", contiguous(swapaxes(slice_axis(w, 2, I, 2 * I), 1, 2))});
          }
        }
      });
  models::LoadedModel m = load_on_device(dir);
  expect_routing(*m.model, ref, raw, "mlx stacked experts");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Llama4Moe, ::testing::Values("llama4", "llama4_text"));

// The fixtures cover the layer kinds they claim: llama4 has RoPE+chunked, NoPE+global, MoE and dense
// layers; llama4_text MoE everywhere with one NoPE layer.
TEST(Llama4Layers, FixturesCoverEveryLayerKind) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  for (const std::string name : {"llama4", "llama4_text"}) {
    models::LoadedModel m = load_on_device(fixture_dir(name));
    models::Cache c = m.model->make_cache();
    int chunked = 0, global = 0, moe = 0, dense = 0;
    for (auto& l : c.layers) (dynamic_cast<models::ChunkedKVCache*>(l.get()) ? chunked : global)++;
    for (int i = 0; i < m.model->num_layers(); ++i) {
      const models::FeedForward* ff = feed_forward(*m.model, i);
      ASSERT_NE(ff, nullptr);
      (dynamic_cast<const models::DecoderMLP*>(ff) ? dense : moe)++;
    }
    EXPECT_GT(chunked, 0) << name;
    EXPECT_GT(global, 0) << name;
    EXPECT_GT(moe, 0) << name;
    if (name == "llama4") EXPECT_GT(dense, 0) << name;
  }
}

// Older Llama 4 configs (and mlx-lm's defaults) give attn_temperature_tuning as an int (4); any
// non-zero value switches the tuning on, 0 (or false) off, which changes the NoPE layer's output.
TEST(Llama4Config, IntegerTemperatureTuningFlag) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  Reference ref = load_reference("llama4_text");
  auto with_flag = [](const nlohmann::json& flag) {
    return [flag](nlohmann::json& j) { j["attn_temperature_tuning"] = flag; };
  };
  auto same = [](const std::string& k) { return k; };
  models::LoadedModel four = load_on_device(rewrite("llama4_text", "tuning4", same, {}, with_flag(4)));
  expect_logits_near(run_chunked(*four.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32,
                     "attn_temperature_tuning 4");
  models::LoadedModel off = load_on_device(rewrite("llama4_text", "tuning0", same, {}, with_flag(0)));
  Array got = run_chunked(*off.model, ref.prompts[0], 1 << 20);
  double d = 0, m = 0;
  auto g = got.to_float_vector(), r = ref.logits[0].to_float_vector();
  for (size_t i = 0; i < r.size(); ++i)
    d = std::max(d, std::abs(static_cast<double>(g[i]) - r[i])), m = std::max(m, std::abs(static_cast<double>(r[i])));
  EXPECT_GT(d / m, 1e-2) << "switching the tuning off should change the logits";
}

// ---- the query temperature knob ----

TEST(QueryTemperature, ScalesEachRowAtItsOwnPositions) {
  // Llama 4's form (shift 1): 1 + 0.5 * log(1 + floor((pos + 1) / 4)). Positions 2..5 of an unpadded
  // row give floor(3/4, 4/4, 5/4, 6/4) = 0, 1, 1, 1 -> 1, 1 + 0.5 log 2 = 1.346574 (x3). A row padded by 2
  // sits at positions 0..3 -> floor(1/4 .. 4/4) = 0, 0, 0, 1.
  models::DecoderArgs::QueryTemperature t{.beta = 0.5, .floor_scale = 4, .shift = 1};
  models::Cache cache;
  cache.layers.push_back(std::make_unique<models::KVCache>());
  cache.at<models::KVCache>(0).update_and_fetch(zeros({2, 1, 2, 1}), zeros({2, 1, 2, 1}));  // offset 2
  cache.left_padding = Array::from(std::vector<int32_t>{0, 2}, {2});
  models::Step step = models::make_step(cache, 4);
  Array s = models::query_temperature_scale(t, step, 2);
  ASSERT_EQ(s.shape(), (Shape{2, 1, 4, 1}));
  const float a = 1.0f + 0.5f * std::log(2.0f);
  std::vector<float> want{1, a, a, a, 1, 1, 1, a}, got = s.to_float_vector();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  // Ministral 3's form (shift 0) without padding: positions 2..5, floor(pos / 2) = 1, 1, 2, 2.
  cache.left_padding = Array();
  step = models::make_step(cache, 4);
  s = models::query_temperature_scale({.beta = 0.1, .floor_scale = 2, .shift = 0}, step, 1);
  ASSERT_EQ(s.shape(), (Shape{1, 1, 4, 1}));
  got = s.to_float_vector();
  const float l2 = 1.0f + 0.1f * std::log(2.0f), l3 = 1.0f + 0.1f * std::log(3.0f);
  want = {l2, l2, l3, l3};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
}

}  // namespace
}  // namespace loom::test
