// The hybrid recurrent + attention architectures against transformers on their tiny fixtures
// (tools/refgen/make_hybrid_fixtures.py): qwen3_next (gated DeltaNet + gated attention + MoE with a
// shared expert) and recurrent_gemma (RG-LRU + local attention with a window shorter than the
// prompts). Per fixture: full-pass logits; token-by-token and chunked decode through the recurrent
// caches == full pass; a left-padded batch == each prompt alone (and one decode step); greedy tokens;
// v4-style configs; bf16 compute; a steady-state decode step that allocates nothing new; a
// prompt-cache round trip. qwen3_next also: its router's decisions exactly, the per-expert and
// mlx-lm checkpoint layouts, and the older full_attention_interval config; recurrent_gemma also
// mlx-lm's conv layout and a decode far past the window keeps the window cache at window size.
// Built twice: here for the CPU, and in tests/cuda with LOOM_TEST_DEVICE="cuda".
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "loom/common/strings.h"
#include "loom/core/allocator.h"
#include "loom/generate/prompt_cache.h"
#include "loom/io/safetensors.h"
#include "loom/models/transformer.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {
namespace fs = std::filesystem;

const Device kDevice = test_device();

nlohmann::json raw_reference(const std::string& name) {
  std::ifstream in(fixture_dir(name) + "/reference.json");
  if (!in) throw std::runtime_error("missing fixture " + fixture_dir(name) + "/reference.json");
  return nlohmann::json::parse(in);
}

// A scratch folder of this process (ctest -j runs tests of one fixture in parallel processes).
fs::path scratch(const std::string& what) {
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "hybrid_fixtures" / (what + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

// A copy of fixture `name` with its config edited by `edit` (weights unchanged).
std::string config_variant(const std::string& name, const std::string& what,
                           const std::function<void(nlohmann::json&)>& edit) {
  std::ifstream in(fixture_dir(name) + "/config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  edit(j);
  fs::path dir = scratch(name + "_" + what);
  std::ofstream(dir / "config.json") << j.dump(2);
  fs::copy_file(fs::path(fixture_dir(name)) / "model.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  return dir.string();
}

// A copy of fixture `name` whose tensors are rewritten by `rewrite` (name, tensor -> entries out).
std::string weights_variant(
    const std::string& name, const std::string& what,
    const std::function<void(const std::string&, const Array&, std::vector<std::pair<std::string, Array>>&)>& rewrite) {
  io::WeightStore store = io::WeightStore::open_folder(fixture_dir(name));
  std::vector<std::pair<std::string, Array>> out;
  for (const auto& n : store.names()) rewrite(n, store.load(n), out);
  fs::path dir = scratch(name + "_" + what);
  fs::copy_file(fs::path(fixture_dir(name)) / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  io::save_safetensors((dir / "model.safetensors").string(), out);
  return dir.string();
}

// transformers' [C, 1, K] depthwise conv weight in mlx-lm's [C, K, 1] layout.
Array conv_to_mlx(const Array& w) { return contiguous(moveaxis(w, 2, 1)); }

class Hybrid : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
    ref = load_reference(GetParam());
    raw = raw_reference(GetParam());
    lm = load_on_device(fixture_dir(GetParam()));
  }
  Array run(models::LanguageModel& m, const std::vector<int32_t>& ids, int64_t chunk) {
    return run_chunked(m, ids, chunk);
  }
  Reference ref;
  nlohmann::json raw;
  models::LoadedModel lm;
};

TEST_P(Hybrid, FullPassMatchesTransformers) {
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    expect_logits_near(run(*lm.model, ref.prompts[i], 1 << 20), ref.logits[i], kF32, "prompt " + std::to_string(i));
}

// Token by token, the recurrent layers take their single-step path and carry conv window and state
// between calls; chunks of 5 split the prompt at positions 5 and 10 (across recurrent-state and
// window-cache boundaries).
TEST_P(Hybrid, TokenByTokenAndChunkedDecodeMatchFullPass) {
  for (int64_t chunk : {1, 5}) {
    for (size_t i = 0; i < ref.prompts.size(); ++i)
      expect_logits_near(run(*lm.model, ref.prompts[i], chunk), ref.logits[i], kF32,
                         "prompt " + std::to_string(i) + " chunk " + std::to_string(chunk));
  }
}

TEST_P(Hybrid, LeftPaddedBatchMatchesEachAlone) {
  // Row 0: prompt 0; row 1: prompt 1 left-padded to the same length with token 0.
  expect_left_padded_batch_matches_each_alone(*lm.model, ref, 2);
}

TEST_P(Hybrid, GreedyTokensMatchTransformers) {
  EXPECT_EQ(greedy_tokens(*lm.model, ref.prompts[0], ref.greedy.size()), ref.greedy);
}

TEST_P(Hybrid, V4StyleConfigGivesSameLogits) {
  models::LoadedModel v4 = load_on_device(v4_config_copy(GetParam()));
  expect_logits_near(run(*v4.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, "v4 config");
}

// bf16 compute within DESIGN's bf16 row widened to transformers' own bf16 error on the fixture
// (hf_bf16, tools/refgen/bf16_baseline.py).
TEST_P(Hybrid, Bf16ComputeWithinBf16Tolerance) {
  models::LoadedModel m = load_on_device(fixture_dir(GetParam()), Dtype::bf16);
  Array got = run(*m.model, ref.prompts[0], 1 << 20);
  EXPECT_EQ(got.dtype(), Dtype::bf16);
  EXPECT_EQ(got.device(), kDevice);
  ASSERT_GT(ref.hf_bf16_mean_rel, 0) << "reference.json lacks hf_bf16 (run tools/refgen/bf16_baseline.py)";
  expect_logits_near(got, ref.logits[0], bf16_tolerance(ref), "bf16 compute");
}

TEST_P(Hybrid, SteadyStateDecodeAllocatesNothingNew) {
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::last);
  for (int i = 0; i < 3; ++i) lm.model->forward(tokens_array({3}), cache, models::LogitsMode::last);
  uint64_t before = allocator::stats(kDevice).system_allocs;
  for (int i = 0; i < 20; ++i)
    lm.model->forward(tokens_array({static_cast<int32_t>(3 + i % 5)}), cache, models::LogitsMode::last);
  EXPECT_EQ(allocator::stats(kDevice).system_allocs, before) << "decode steps made new system allocations";
}

// Prefill the first 8 tokens, save the cache in mlx-lm's prompt-cache format, load it into a fresh
// cache, and feed the last 4 tokens: the logits are the reference's positions 8..11 (so the
// recurrent states, conv windows, KV/window caches and the position offset all survived).
TEST_P(Hybrid, PromptCacheRoundTrip) {
  const auto& p = ref.prompts[0];
  const int64_t split = 8, T = static_cast<int64_t>(p.size());
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(std::vector<int32_t>(p.begin(), p.begin() + split)), cache, models::LogitsMode::last);
  std::string file = (scratch(GetParam() + "_prompt_cache") / "cache.safetensors").string();
  generate::save_prompt_cache(file, cache, {{"note", "hybrid"}});
  std::map<std::string, std::string> meta;
  models::Cache loaded = generate::load_prompt_cache(file, *lm.model, &meta);
  EXPECT_EQ(meta["note"], "hybrid");
  EXPECT_EQ(loaded.offset(), split);
  Array tail = tokens_array(std::vector<int32_t>(p.begin() + split, p.end()));
  Array got = lm.model->forward(tail, loaded, models::LogitsMode::all);
  expect_logits_near(reshape(got, {T - split, got.shape(-1)}), slice_axis(ref.logits[0], 0, split, T), kF32,
                     "after reload");
}

INSTANTIATE_TEST_SUITE_P(Architectures, Hybrid, ::testing::Values("qwen3_next", "recurrent_gemma"));

// ---- qwen3_next ----

// The router's choices at every MoE layer and token equal transformers' (fixture routing margin >= 1e-3).
TEST(Qwen3Next, RoutingMatchesTransformers) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  Reference ref = load_reference("qwen3_next");
  nlohmann::json raw = raw_reference("qwen3_next");
  models::LoadedModel lm = load_on_device(fixture_dir("qwen3_next"));
  auto moe_layers = raw["moe_layers"].get<std::vector<int>>();
  ASSERT_FALSE(moe_layers.empty());
  std::map<std::string, nn::Module*> modules;
  for (auto& [path, m] : lm.model->modules()) modules[path] = m;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    run_chunked(*lm.model, ref.prompts[i], 1 << 20);
    for (size_t j = 0; j < moe_layers.size(); ++j) {
      auto* ff = dynamic_cast<models::FeedForward*>(modules["model.layers." + std::to_string(moe_layers[j]) + ".mlp"]);
      ASSERT_NE(ff, nullptr) << "layer " << moe_layers[j] << " has no feed-forward at .mlp";
      ASSERT_TRUE(ff->last_routing.valid()) << "layer " << moe_layers[j] << " recorded no routing";
      Array inds = ff->last_routing;  // [1, T, k]
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

// The fixture's weights rewritten in one of the layouts real Qwen3-Next checkpoints use:
//  "per_expert": transformers' experts.{e}.{gate,up,down}_proj (what transformers 5.17 saves);
//  "fused": transformers 5's in-memory experts.gate_up_proj [E, 2I, H] (gate rows first) + down_proj;
//  "mlx": mlx-lm's sanitized layout: switch_mlp.{gate,up,down}_proj stacks, the (1 + weight) norms stored
//         as 1 + weight, conv1d [C, K, 1].
// Whatever the fixture's own expert layout, the experts are first gathered per layer and projection.
std::string qwen3_next_layout(const std::string& layout) {
  io::WeightStore store = io::WeightStore::open_folder(fixture_dir("qwen3_next"));
  std::map<std::string, std::map<std::string, std::map<int64_t, Array>>> experts;  // layer mlp -> proj -> e -> w
  std::vector<std::pair<std::string, Array>> out;
  std::regex per_expert("(model\\.layers\\.\\d+\\.mlp)\\.experts\\.(\\d+)\\.(\\w+_proj)\\.weight");
  std::regex fused("(model\\.layers\\.\\d+\\.mlp)\\.experts\\.(gate_up_proj|down_proj)");
  const char* offset_norms[] = {".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
                                ".q_norm.weight", ".k_norm.weight"};
  for (const auto& n : store.names()) {
    Array w = store.load(n);
    std::smatch m;
    if (std::regex_match(n, m, per_expert)) {
      experts[m[1].str()][m[3].str()][std::stoll(m[2].str())] = w;
    } else if (std::regex_match(n, m, fused)) {
      for (int64_t e = 0; e < w.shape(0); ++e) {
        Array we = reshape(slice_axis(w, 0, e, e + 1), {w.shape(1), w.shape(2)});
        int64_t I = w.shape(1) / 2;
        auto& projs = experts[m[1].str()];
        if (m[2] == "down_proj") {
          projs["down_proj"][e] = we;
        } else {
          projs["gate_proj"][e] = slice_axis(we, 0, 0, I);
          projs["up_proj"][e] = slice_axis(we, 0, I, 2 * I);
        }
      }
    } else if (layout == "mlx" && ends_with(n, "conv1d.weight")) {
      out.push_back({n, conv_to_mlx(w)});
    } else if (layout == "mlx" && std::any_of(std::begin(offset_norms), std::end(offset_norms),
                                              [&](const char* s) { return ends_with(n, s); })) {
      out.push_back({n, astype(w, Dtype::f32) + 1.0});
    } else {
      out.push_back({n, w});
    }
  }
  EXPECT_EQ(experts.size(), 3u) << "MoE layers found in the fixture";
  auto stacked = [](const std::map<int64_t, Array>& by_e) {
    std::vector<Array> v;
    for (const auto& [e, a] : by_e) v.push_back(a);
    return stack(v);
  };
  for (const auto& [mlp, projs] : experts) {
    if (layout == "per_expert") {
      for (const auto& [proj, by_e] : projs)
        for (const auto& [e, a] : by_e)
          out.push_back({mlp + ".experts." + std::to_string(e) + "." + proj + ".weight", a});
    } else if (layout == "fused") {
      out.push_back({mlp + ".experts.gate_up_proj",
                     concatenate({stacked(projs.at("gate_proj")), stacked(projs.at("up_proj"))}, 1)});
      out.push_back({mlp + ".experts.down_proj", stacked(projs.at("down_proj"))});
    } else {
      for (const auto& [proj, by_e] : projs) out.push_back({mlp + ".switch_mlp." + proj + ".weight", stacked(by_e)});
    }
  }
  fs::path dir = scratch("qwen3_next_" + layout);
  fs::copy_file(fs::path(fixture_dir("qwen3_next")) / "config.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  io::save_safetensors((dir / "model.safetensors").string(), out);
  return dir.string();
}

// The same weights in every checkpoint layout load to the same model (sanitize recognises
// transformers' layouts by their expert keys and adds the norm offsets; mlx-lm's it takes as stored).
TEST(Qwen3Next, CheckpointLayoutsGiveSameLogits) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  Reference ref = load_reference("qwen3_next");
  for (const std::string layout : {"per_expert", "fused", "mlx"}) {
    models::LoadedModel m = load_on_device(qwen3_next_layout(layout));
    for (size_t i = 0; i < ref.prompts.size(); ++i)
      expect_logits_near(run_chunked(*m.model, ref.prompts[i], 1 << 20), ref.logits[i], kF32,
                         layout + " prompt " + std::to_string(i));
  }
}

// Configs without layer_types (transformers 4, mlx-lm) place the attention layers by
// full_attention_interval; the fixture's layer_types are linear, full, linear = interval 2.
TEST(Qwen3Next, FullAttentionIntervalConfigGivesSameLogits) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  Reference ref = load_reference("qwen3_next");
  std::string dir = config_variant("qwen3_next", "interval", [](nlohmann::json& j) {
    ASSERT_EQ(j["layer_types"], nlohmann::json({"linear_attention", "full_attention", "linear_attention"}));
    j.erase("layer_types");
    j["full_attention_interval"] = 2;
  });
  models::LoadedModel m = load_on_device(dir);
  expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, "full_attention_interval");
}

// mlx-lm's qwen3_next.py quant_predicate: quantizing the model keeps the router gates and the
// shared-expert gates at 8 bits (group 32: their 32 inputs); everything else gets the base format.
TEST(Qwen3Next, QuantizationKeepsGatesAt8Bits) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  models::LoadedModel lm = models::load_model(fixture_dir("qwen3_next"));
  std::map<std::string, QuantSpec> special = models::quantize_model(*lm.model, QuantSpec{QuantMode::affine, 4, 32});
  std::map<std::string, QuantSpec> want;
  for (int l = 0; l < 3; ++l)
    for (const char* g : {".mlp.gate", ".mlp.shared_expert_gate"})
      want["model.layers." + std::to_string(l) + g] = QuantSpec{QuantMode::affine, 8, 32};
  EXPECT_EQ(special, want);
  Reference ref = load_reference("qwen3_next");
  Array got = run_chunked(*lm.model, ref.prompts[0], 1 << 20);
  EXPECT_EQ(got.shape(), ref.logits[0].shape());
  for (float v : got.to_float_vector()) ASSERT_TRUE(std::isfinite(v));
}

// ---- recurrent_gemma ----

// mlx-lm's checkpoint layout (conv_1d [C, K, 1]) loads to the same model.
TEST(RecurrentGemma, MlxConvLayoutGivesSameLogits) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  Reference ref = load_reference("recurrent_gemma");
  int converted = 0;
  std::string dir = weights_variant("recurrent_gemma", "mlx", [&](const std::string& n, const Array& w, auto& out) {
    if (!ends_with(n, "conv_1d.weight")) return out.push_back({n, w});
    ++converted;
    out.push_back({n, conv_to_mlx(w)});
  });
  EXPECT_EQ(converted, 2);  // the two recurrent blocks
  models::LoadedModel m = load_on_device(dir);
  expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, "mlx conv layout");
}

// The attention block's cache holds the window and no more, however long the decode; and the
// window matters in the fixture (reference.json records how much the logits move without it).
TEST(RecurrentGemma, WindowCacheStaysAtWindowSize) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  nlohmann::json raw = raw_reference("recurrent_gemma");
  int64_t window = raw["attention_window_size"].get<int64_t>();
  EXPECT_LT(window, 7) << "the window must be shorter than both prompts";
  EXPECT_GT(raw["window_effect_max_rel"].get<double>(), 1e-2);
  models::LoadedModel lm = load_on_device(fixture_dir("recurrent_gemma"));
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(raw["prompts"][0].get<std::vector<int32_t>>()), cache, models::LogitsMode::last);
  for (int i = 0; i < 50; ++i)
    lm.model->forward(tokens_array({static_cast<int32_t>(3 + i % 7)}), cache, models::LogitsMode::last);
  EXPECT_EQ(cache.offset(), 12 + 50);
  auto& ring = dynamic_cast<models::RotatingKVCache&>(*cache.layers.at(2));
  EXPECT_EQ(ring.size(), window);
  EXPECT_EQ(ring.max_size(), window);
}

}  // namespace
}  // namespace loom::test
