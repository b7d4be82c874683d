// The state-space and hybrid architectures against transformers on their tiny fixtures
// (tools/refgen/make_ssm_fixtures.py): mamba, falcon_mamba (B/C/dt RMSNorms), mamba2 (8 heads over 2
// B/C groups, chunk 5 shorter than both prompts, dt clipped at both ends) and jamba (attention and
// Mamba layers, MoE and dense feed-forwards, every pairing present). Per fixture: full-pass logits;
// token-by-token and chunked (5) decode through the recurrent caches == transformers' full pass; a
// left-padded batch == each prompt alone (and two decode steps); greedy tokens; bf16 compute; a
// prompt-cache round trip that continues identically; mlx-lm's checkpoint layouts. Jamba also: its
// router's decisions exactly. Plus the cache types each model makes, mlx-lm's prompt-cache names for
// ArraysCache and CacheList, and --max-kv-size / --kv-bits on purely recurrent models.
// Built twice: here for the CPU, and in tests/cuda (test_cuda_ssm) with LOOM_TEST_DEVICE="cuda".
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <typeinfo>

#include "loom/common/error.h"
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

// A scratch folder of this process (ctest -j runs the tests of one fixture in parallel processes).
fs::path ssm_scratch(const std::string& what) {
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "ssm_fixtures" / (what + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

// A copy of fixture `name` whose tensors are rewritten by `rewrite` (name, tensor -> entries out).
std::string weights_variant(
    const std::string& name, const std::string& what,
    const std::function<void(const std::string&, const Array&, std::vector<std::pair<std::string, Array>>&)>& rewrite) {
  io::WeightStore store = io::WeightStore::open_folder(fixture_dir(name));
  std::vector<std::pair<std::string, Array>> out;
  for (const std::string& n : store.names()) rewrite(n, store.load(n), out);
  fs::path dir = ssm_scratch(name + "_" + what);
  fs::copy_file(fs::path(fixture_dir(name)) / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  io::save_safetensors((dir / "model.safetensors").string(), out);
  return dir.string();
}

// Row slice [start, stop) of logits [T, V].
Array rows(const Array& l, int64_t start, int64_t stop) { return slice_axis(l, 0, start, stop); }

class SsmFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
    ref = load_reference(GetParam());
    lm = load_on_device(fixture_dir(GetParam()));
  }
  Reference ref;
  models::LoadedModel lm;
};

TEST_P(SsmFixture, FullPassMatchesTransformers) {
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    expect_logits_near(run_chunked(*lm.model, ref.prompts[i], 1 << 20), ref.logits[i], kF32,
                       "prompt " + std::to_string(i));
}

// The recurrent caches carry the conv window and the SSM state across calls: feeding the prompt one
// token at a time, or 5 at a time (calls that end mid-way through a Mamba-2 chunk of 5 and a conv
// window of 4), must give transformers' full-pass logits.
TEST_P(SsmFixture, TokenByTokenAndChunkedDecodeMatchFullPass) {
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    for (int64_t chunk : {1, 5})
      expect_logits_near(run_chunked(*lm.model, ref.prompts[i], chunk), ref.logits[i], kF32,
                         "prompt " + std::to_string(i) + " chunk " + std::to_string(chunk));
}

TEST_P(SsmFixture, LeftPaddedBatchMatchesEachAlone) {
  // Row 0: prompt 0; row 1: prompt 1 left-padded to the same length with token 0. The padding must
  // leave row 1's conv window and SSM state as if its sequence began at its first real token.
  expect_left_padded_batch_matches_each_alone(*lm.model, ref, 2);
}

TEST_P(SsmFixture, GreedyTokensMatchTransformers) {
  EXPECT_EQ(greedy_tokens(*lm.model, ref.prompts[0], ref.greedy.size()), ref.greedy);
}

TEST_P(SsmFixture, Bf16ComputeWithinBf16Tolerance) {
  models::LoadedModel m = load_on_device(fixture_dir(GetParam()), Dtype::bf16);
  Array got = run_chunked(*m.model, ref.prompts[0], 1 << 20);
  EXPECT_EQ(got.dtype(), Dtype::bf16);
  EXPECT_EQ(got.device(), kDevice);
  ASSERT_GT(ref.hf_bf16_mean_rel, 0) << "reference.json lacks hf_bf16 (run tools/refgen/bf16_baseline.py)";
  expect_logits_near(got, ref.logits[0], bf16_tolerance(ref), "bf16 compute");
  // Token by token in bf16 (the states stay f32) stays within the same row.
  expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1), ref.logits[0], bf16_tolerance(ref), "bf16 decode");
}

// Prefill 8 tokens, save the cache in mlx-lm's layout, load it into a fresh cache and continue with
// the last 4 prompt tokens: the logits equal continuing the original cache (bit for bit: the same
// f32 states) and transformers' logits of those positions.
TEST_P(SsmFixture, PromptCacheRoundTripContinuesIdentically) {
  const auto& p = ref.prompts[0];
  const int64_t T = static_cast<int64_t>(p.size()), split = 8;
  std::vector<int32_t> head(p.begin(), p.begin() + split), tail(p.begin() + split, p.end());
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(head), cache, models::LogitsMode::none);
  std::string file = (ssm_scratch(GetParam() + "_prompt_cache") / "cache.safetensors").string();
  generate::save_prompt_cache(file, cache, {{"model", GetParam()}});

  // mlx-lm's names: per recurrent layer "<l>.0.<i>" (conv, SSM state), "<l>.1", "<l>.2" (empty
  // left_padding/lengths), meta "0.<l>" = "", class "2.<l>" = "ArraysCache".
  auto f = io::SafetensorsFile::open(file);
  for (size_t l = 0; l < cache.layers.size(); ++l) {
    std::string ls = std::to_string(l);
    if (dynamic_cast<models::ArraysCache*>(cache.layers[l].get())) {
      EXPECT_EQ(f->metadata().at("2." + ls), "ArraysCache");
      EXPECT_EQ(f->metadata().at("0." + ls), "");
      ASSERT_NE(f->find(ls + ".0.0"), nullptr);
      ASSERT_NE(f->find(ls + ".0.1"), nullptr);
      EXPECT_EQ(f->find(ls + ".0.2"), nullptr);
      EXPECT_EQ(shape_size(f->find(ls + ".1")->shape), 0);
      EXPECT_EQ(shape_size(f->find(ls + ".2")->shape), 0);
      EXPECT_EQ(f->find(ls + ".0.1")->dtype, Dtype::f32) << "the SSM state is kept in f32";
    } else {
      EXPECT_EQ(f->metadata().at("2." + ls), "KVCache");
    }
  }
  EXPECT_EQ(f->metadata().at("1.model"), GetParam());

  std::map<std::string, std::string> meta;
  models::Cache loaded = generate::load_prompt_cache(file, *lm.model, &meta);
  EXPECT_EQ(meta.at("model"), GetParam());
  ASSERT_EQ(loaded.layers.size(), cache.layers.size());
  for (size_t l = 0; l < cache.layers.size(); ++l)
    EXPECT_EQ(typeid(*loaded.layers[l]), typeid(*cache.layers[l])) << "layer " << l;
  Array want = lm.model->forward(tokens_array(tail), cache, models::LogitsMode::all);
  Array got = lm.model->forward(tokens_array(tail), loaded, models::LogitsMode::all);
  EXPECT_EQ(got.to_float_vector(), want.to_float_vector());
  int64_t V = got.shape(-1);
  expect_logits_near(reshape(got, {T - split, V}), rows(ref.logits[0], split, T), kF32, "continued from the file");
}

// mlx-lm checkpoints: conv1d weights already [C, K, 1] (told apart by the last axis of 1) and, for
// Jamba, the experts already stacked in switch_mlp: the same model.
TEST_P(SsmFixture, MlxLayoutLoadsTheSameModel) {
  std::string dir = weights_variant(GetParam(), "mlx_layout", [](const std::string& n, const Array& a, auto& out) {
    if (n.find("conv1d.weight") != std::string::npos) {
      ASSERT_EQ(a.ndim(), 3);
      ASSERT_EQ(a.shape(1), 1) << n << " is not in HF's [C, 1, K] layout";
      out.emplace_back(n, contiguous(moveaxis(a, 2, 1)));
      return;
    }
    out.emplace_back(n, a);
  });
  if (GetParam() == "jamba") {
    // Stack the per-expert tensors into mlx-lm's switch_mlp names.
    io::WeightStore store = io::WeightStore::open_folder(dir);
    std::vector<std::pair<std::string, Array>> out;
    std::map<std::string, std::vector<Array>> stacks;
    for (const std::string& n : store.names()) {
      auto pos = n.find(".experts.");
      if (pos == std::string::npos) {
        out.emplace_back(n, store.load(n));
        continue;
      }
      std::string rest = n.substr(pos + 9);                // "<e>.<proj>.weight"
      std::string proj = rest.substr(rest.find('.') + 1);  // "<proj>.weight"
      int e = std::stoi(rest.substr(0, rest.find('.')));
      auto& v = stacks[n.substr(0, pos) + ".switch_mlp." + proj];
      if (static_cast<int>(v.size()) <= e) v.resize(e + 1);
      v[e] = store.load(n);
    }
    ASSERT_FALSE(stacks.empty());
    for (auto& [n, v] : stacks) out.emplace_back(n, stack(v, 0));
    io::save_safetensors(dir + "/model.safetensors", out);
  }
  models::LoadedModel m = load_on_device(dir);
  expect_logits_near(run_chunked(*m.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, "mlx layout");
}

// --max-kv-size and --kv-bits: mlx-lm's make_cache of these models takes no KV-size bound (a recurrent
// state has a fixed size) and its maybe_quantize_kv_cache converts only caches with to_quantized, so
// the recurrent layers stay ArraysCache while Jamba's attention layers become rotating / quantized.
TEST_P(SsmFixture, KvSizeBoundAndKvBitsTouchOnlyAttentionLayers) {
  models::CacheOptions opt;
  opt.max_kv_size = 6;
  models::Cache cache = lm.model->make_cache(opt);
  models::Cache plain = lm.model->make_cache();
  ASSERT_EQ(cache.layers.size(), plain.layers.size());
  for (size_t l = 0; l < cache.layers.size(); ++l) {
    bool recurrent = dynamic_cast<models::ArraysCache*>(plain.layers[l].get()) != nullptr;
    if (recurrent)
      EXPECT_NE(dynamic_cast<models::ArraysCache*>(cache.layers[l].get()), nullptr) << "layer " << l;
    else
      EXPECT_NE(dynamic_cast<models::RotatingKVCache*>(cache.layers[l].get()), nullptr) << "layer " << l;
  }
  // A purely recurrent model: the bounded cache is the same cache, so the logits are the full pass's.
  bool pure = true;
  for (auto& l : plain.layers) pure = pure && dynamic_cast<models::ArraysCache*>(l.get()) != nullptr;
  if (pure) {
    Array got = lm.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::all);
    expect_logits_near(reshape(got, ref.logits[0].shape()), ref.logits[0], kF32, "max_kv_size on a recurrent model");
  }
  // --kv-bits on a purely recurrent model: nothing to quantize, the cache is left as it is. (Jamba's
  // attention layers would convert, but its fixture's head_dim of 8 is below MLX's smallest group.)
  if (pure) {
    models::Cache q = lm.model->make_cache();
    lm.model->forward(tokens_array(ref.prompts[0]), q, models::LogitsMode::none);
    EXPECT_FALSE(models::maybe_quantize_kv_cache(q, models::KVQuantization{8, 32, 0}));
    for (size_t l = 0; l < q.layers.size(); ++l)
      EXPECT_NE(dynamic_cast<models::ArraysCache*>(q.layers[l].get()), nullptr) << "layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(StateSpace, SsmFixture, ::testing::Values("mamba", "falcon_mamba", "mamba2", "jamba"));

// Jamba's router (softmax over all experts, top 2 kept as they are) picks exactly transformers'
// experts at every token of both prompts (reference.json's routing, recorded with a margin).
TEST(Jamba, RoutingDecisionsMatchTransformers) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  nlohmann::json raw = raw_reference("jamba");
  auto moe_layers = raw["moe_layers"].get<std::vector<int>>();
  ASSERT_EQ(moe_layers, (std::vector<int>{1, 3}));
  auto types = raw["layer_types"].get<std::vector<std::string>>();
  ASSERT_EQ(types, (std::vector<std::string>{"attention", "mamba", "mamba", "attention"}));
  models::LoadedModel lm = load_on_device(fixture_dir("jamba"));
  std::map<std::string, nn::Module*> mods;
  for (auto& [path, mod] : lm.model->modules()) mods[path] = mod;
  // The layer types and feed-forward kinds the config asks for (period/offset as transformers reads them).
  for (int l = 0; l < 4; ++l) {
    std::string p = "model.layers." + std::to_string(l);
    EXPECT_EQ(mods.count(p + ".self_attn"), types[l] == "attention" ? 1u : 0u) << p;
    EXPECT_EQ(mods.count(p + ".mamba"), types[l] == "mamba" ? 1u : 0u) << p;
    bool moe = l == 1 || l == 3;
    EXPECT_EQ(mods.count(p + ".feed_forward.router"), moe ? 1u : 0u) << p;
  }
  auto prompts = raw["prompts"].get<std::vector<std::vector<int32_t>>>();
  for (size_t i = 0; i < prompts.size(); ++i) {
    models::Cache cache = lm.model->make_cache();
    lm.model->forward(tokens_array(prompts[i]), cache, models::LogitsMode::all);
    for (size_t j = 0; j < moe_layers.size(); ++j) {
      auto* ff = dynamic_cast<models::FeedForward*>(
          mods.at("model.layers." + std::to_string(moe_layers[j]) + ".feed_forward"));
      ASSERT_NE(ff, nullptr);
      ASSERT_TRUE(ff->last_routing.valid());
      Array inds = to_device(astype(ff->last_routing, Dtype::i32), Device::cpu());  // [1, T, k]
      auto want = raw["routing"][i][j].get<std::vector<std::vector<int64_t>>>();
      int64_t k = inds.shape(-1);
      std::vector<float> got = inds.to_float_vector();
      for (size_t t = 0; t < want.size(); ++t) {
        std::vector<int64_t> g;
        for (int64_t e = 0; e < k; ++e) g.push_back(static_cast<int64_t>(got[t * k + e]));
        std::sort(g.begin(), g.end());
        EXPECT_EQ(g, want[t]) << "prompt " << i << " layer " << moe_layers[j] << " token " << t;
      }
    }
  }
}

// mlx-lm's jamba.py quant_predicate: quantizing the model keeps the routers at 8 bits (the group
// size the router's 32 inputs allow); everything else gets the base format. The quantized model runs.
TEST(Jamba, QuantizationKeepsRoutersAt8Bits) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  models::LoadedModel lm = models::load_model(fixture_dir("jamba"));
  std::map<std::string, QuantSpec> special = models::quantize_model(*lm.model, QuantSpec{QuantMode::affine, 4, 32});
  std::map<std::string, QuantSpec> want{{"model.layers.1.feed_forward.router", QuantSpec{QuantMode::affine, 8, 32}},
                                        {"model.layers.3.feed_forward.router", QuantSpec{QuantMode::affine, 8, 32}}};
  EXPECT_EQ(special, want);
  Reference ref = load_reference("jamba");
  Array got = run_chunked(*lm.model, ref.prompts[0], 1 << 20);
  EXPECT_EQ(got.shape(), ref.logits[0].shape());
  for (float v : got.to_float_vector()) ASSERT_TRUE(std::isfinite(v));
}

// A model whose layers each hold a CacheList(ArraysCache(2), KVCache) (mlx-lm's composite layer
// cache): the prompt-cache file uses mlx-lm's tree_flatten names and loads back exactly.
class CacheListModel : public models::LanguageModel {
 public:
  Array forward(const Array&, models::Cache&, models::LogitsMode) override {
    throw NotSupportedError("[test] no forward");
  }
  models::Cache make_cache(const models::CacheOptions&) const override {
    models::Cache c;
    for (int i = 0; i < 2; ++i) {
      auto list = std::make_unique<models::CacheList>();
      list->caches.push_back(std::make_unique<models::ArraysCache>(2));
      list->caches.push_back(std::make_unique<models::KVCache>());
      c.layers.push_back(std::move(list));
    }
    return c;
  }
  using models::LanguageModel::make_cache;
  int num_layers() const override { return 2; }
  int64_t vocab_size() const override { return 8; }

 protected:
  void members(nn::Members&) override {}
};

Array iota(const Shape& shape, double start) {
  return reshape(arange(start, start + static_cast<double>(shape_size(shape)), 1.0, Dtype::f32), shape);
}

TEST(PromptCacheFile, CacheListUsesMlxLmNamesAndRoundTrips) {
  CacheListModel model;
  models::Cache cache = model.make_cache();
  for (int l = 0; l < 2; ++l) {
    auto& list = cache.at<models::CacheList>(l);
    auto& rec = list.at<models::ArraysCache>(0);
    rec[0] = iota({1, 3, 4}, 100 * l);
    rec[1] = iota({1, 4, 2}, 100 * l + 50);
    rec.advance(5);
    list.at<models::KVCache>(1).update_and_fetch(iota({1, 2, 5, 4}, 1000 * l), iota({1, 2, 5, 4}, 1000 * l + 500));
  }
  std::string file = (ssm_scratch("cachelist") / "cache.safetensors").string();
  generate::save_prompt_cache(file, cache, {{"k", "v"}});
  auto f = io::SafetensorsFile::open(file);
  const auto& meta = f->metadata();
  // tree_flatten of [CacheList.state] = [[(cache list, left_padding, lengths), (keys, values)]] and of
  // [([class names], [meta states])].
  for (std::string l : {"0", "1"}) {
    EXPECT_EQ(meta.at("2." + l), "CacheList");
    EXPECT_EQ(meta.at("0." + l + ".0.0"), "ArraysCache");
    EXPECT_EQ(meta.at("0." + l + ".0.1"), "KVCache");
    EXPECT_EQ(meta.at("0." + l + ".1.0"), "");
    EXPECT_EQ(meta.at("0." + l + ".1.1"), "");
    for (std::string t : {".0.0.0", ".0.0.1", ".0.1", ".0.2", ".1.0", ".1.1"})
      EXPECT_NE(f->find(l + t), nullptr) << l + t;
  }
  EXPECT_EQ(f->find("0.1.0")->shape, (Shape{1, 2, 5, 4}));
  EXPECT_EQ(meta.at("1.k"), "v");

  models::Cache loaded = generate::load_prompt_cache(file, model);
  for (int l = 0; l < 2; ++l) {
    auto& list = loaded.at<models::CacheList>(l);
    ASSERT_EQ(list.caches.size(), 2u);
    auto& rec = list.at<models::ArraysCache>(0);
    EXPECT_EQ(rec[0].to_float_vector(), iota({1, 3, 4}, 100 * l).to_float_vector());
    EXPECT_EQ(rec[1].to_float_vector(), iota({1, 4, 2}, 100 * l + 50).to_float_vector());
    // The recurrent child takes the attention cache's offset (mlx-lm's ArraysCache counts none).
    EXPECT_EQ(rec.offset(), 5);
    EXPECT_EQ(list.offset(), 5);
    auto [k, v] = list.at<models::KVCache>(1).state();
    EXPECT_EQ(k.to_float_vector(), iota({1, 2, 5, 4}, 1000 * l).to_float_vector());
    EXPECT_EQ(v.to_float_vector(), iota({1, 2, 5, 4}, 1000 * l + 500).to_float_vector());
  }
}

// Files of mlx-lm releases before the ArraysCache state carried left_padding/lengths wrote the bare
// state list ("<layer>.<i>"): they load, and continue exactly as the current layout does.
TEST(PromptCacheFile, OlderMlxLmArraysCacheLayoutLoads) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  Reference ref = load_reference("mamba2");
  models::LoadedModel lm = load_on_device(fixture_dir("mamba2"));
  const auto& p = ref.prompts[0];
  std::vector<int32_t> head(p.begin(), p.begin() + 8), tail(p.begin() + 8, p.end());
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(head), cache, models::LogitsMode::none);
  fs::path dir = ssm_scratch("old_layout");
  generate::save_prompt_cache((dir / "new.safetensors").string(), cache);
  auto f = io::SafetensorsFile::open((dir / "new.safetensors").string());
  std::vector<std::pair<std::string, Array>> old;
  for (const auto& t : f->tensors()) {
    // "<l>.0.<i>" -> "<l>.<i>"; drop "<l>.1" / "<l>.2".
    auto dot = t.name.find('.');
    std::string rest = t.name.substr(dot + 1);
    if (rest.rfind("0.", 0) == 0) old.emplace_back(t.name.substr(0, dot) + "." + rest.substr(2), f->load(t.name));
  }
  ASSERT_EQ(old.size(), 4u);
  io::save_safetensors((dir / "old.safetensors").string(), old, f->metadata());
  models::Cache loaded = generate::load_prompt_cache((dir / "old.safetensors").string(), *lm.model);
  Array want = lm.model->forward(tokens_array(tail), cache, models::LogitsMode::all);
  Array got = lm.model->forward(tokens_array(tail), loaded, models::LogitsMode::all);
  EXPECT_EQ(got.to_float_vector(), want.to_float_vector());
}

// Loading a prompt cache into a model whose layers are of another kind fails with a clear error, and
// so does saving a recurrent cache that has seen no token.
TEST(PromptCacheFile, RecurrentFileForAttentionModelIsAnError) {
  if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
  models::LoadedModel mamba = load_on_device(fixture_dir("mamba"));
  models::LoadedModel llama = load_on_device(fixture_dir("llama"));  // 2 layers, as mamba
  ASSERT_EQ(mamba.model->num_layers(), llama.model->num_layers());
  models::Cache cache = mamba.model->make_cache();
  mamba.model->forward(tokens_array({1, 2, 3}), cache, models::LogitsMode::none);
  std::string file = (ssm_scratch("mismatch") / "cache.safetensors").string();
  generate::save_prompt_cache(file, cache);
  EXPECT_THROW(generate::load_prompt_cache(file, *llama.model), ValueError);
  models::Cache empty = mamba.model->make_cache();
  EXPECT_THROW(generate::save_prompt_cache(file, empty), ValueError);
}

}  // namespace
}  // namespace loom::test
