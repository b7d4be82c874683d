// Hugging Face quantization_config formats (loom/models/hf_quant.h) against independent vectors:
// tools/refgen/make_hf_quant_vectors.py packs each on-disk format with numpy from its reference packer's rules
// and writes the format's own dequantization (float32) next to it; tools/refgen/make_mxfp4_oracle.py writes
// transformers' dequantization of gpt-oss mxfp4 blocks. Repacked layers are dequantized with loom's
// dequantize op and dequantized layers are loaded in float32, and both must equal the expected matrix bit for
// bit: the formats' (q - zero) * scale with f16/bf16 scales is exact in f32 (and so is MLX's scale * q + bias
// with bias = -zero * scale), and FP8 is one f32 product on both sides. Also: tiny llama checkpoints stored
// as AutoAWQ and GPTQ give the logits of their dequantized float32 twin, and malformed checkpoints fail
// naming the tensor and its file.
#include "loom/models/hf_quant.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "loom/common/error.h"
#include "loom/io/npy.h"
#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "loom/nn/layers.h"
#include "loom/ops/quantized.h"
#include "tests/models/fixture_util.h"
#include "tests/nan_max.h"

namespace loom::test {
namespace {

using models::convert_hf_quantization;
using models::HfQuantSummary;
using models::WeightMap;

std::string vec_dir() { return fixture_dir("hf_quant"); }

struct Case {
  io::Config config;
  WeightMap w;
  io::WeightStore store;
  std::string expect;  // "affine BITS GROUP", "float" or "mxfp4"
  std::string prefix = "layer";
  Array expected;
  std::function<std::string(const std::string&)> file_of() const {
    return [this](const std::string& k) {
      return store.contains(k) ? store.file_of(k) : std::string("(made by the test)");
    };
  }
};

// Loads <name>.{json,safetensors,npy} from the vectors folder; fails (never skips) when a file is missing.
Case load_case(const std::string& name) {
  std::string base = vec_dir() + "/" + name;
  std::ifstream in(base + ".json");
  if (!in)
    throw std::runtime_error("missing test vector " + base + ".json (run tools/refgen/make_hf_quant_vectors.py)");
  nlohmann::json j = nlohmann::json::parse(in);
  nlohmann::json cfg = {{"model_type", "llama"}, {"quantization_config", j["quantization_config"]}};
  Case c{io::Config::parse(cfg.dump(), name + ".json"),
         {},
         io::WeightStore::open_files({base + ".safetensors"}),
         j["expect"].get<std::string>()};
  if (j.contains("prefix")) c.prefix = j["prefix"].get<std::string>();
  for (const auto& k : c.store.names()) c.w.emplace(k, c.store.load(k));
  c.expected = io::load_npy(base + ".npy");
  return c;
}

std::set<std::string> keys(const WeightMap& w) {
  std::set<std::string> s;
  for (const auto& [k, v] : w) s.insert(k);
  return s;
}

// Bitwise equality of two float32 arrays of one shape, reporting the first difference.
void expect_equal(const Array& got, const Array& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  auto g = got.astype(Dtype::f32).to_float_vector(), e = want.to_float_vector();
  size_t bad = 0, first = g.size();
  for (size_t i = 0; i < g.size(); ++i)
    if (!(g[i] == e[i])) bad++, first = std::min(first, i);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << g.size() << " differ; first at " << first << ": got "
                     << (first < g.size() ? g[first] : 0) << ", expected " << (first < g.size() ? e[first] : 0);
}

// Converts one vector case (dequantized layers in float32) and checks the result against its expectation.
void check_case(const std::string& name) {
  SCOPED_TRACE(name);
  Case c = load_case(name);
  std::optional<HfQuantSummary> s = convert_hf_quantization(c.config, c.w, c.file_of(), {Dtype::f32});
  ASSERT_TRUE(s.has_value());
  const std::string& p = c.prefix;
  if (c.expect == "float") {
    EXPECT_EQ(s->dequantized, 1);
    EXPECT_EQ(s->repacked, 0);
    EXPECT_EQ(keys(c.w), std::set<std::string>{p + ".weight"});  // packed tensors, zeros, g_idx, act. scales gone
    EXPECT_EQ(c.w.at(p + ".weight").dtype(), Dtype::f32);
    expect_equal(c.w.at(p + ".weight"), c.expected, name);
    // Every layer dequantized: no quantization object is left for the loader to apply.
    EXPECT_FALSE(c.config.has("quantization_config"));
    EXPECT_FALSE(c.config.has("quantization"));
    return;
  }
  QuantSpec spec = default_quant_spec(QuantMode::mxfp4);
  if (c.expect != "mxfp4") {
    int bits = 0, group = 0;
    ASSERT_EQ(std::sscanf(c.expect.c_str(), "affine %d %d", &bits, &group), 2) << c.expect;
    spec = QuantSpec{QuantMode::affine, bits, group};
  }
  EXPECT_EQ(s->repacked, 1);
  EXPECT_EQ(s->dequantized, 0);
  ASSERT_TRUE(s->layers.count(p));
  EXPECT_EQ(s->layers.at(p), spec) << quant_spec_str(s->layers.at(p));
  ASSERT_TRUE(s->spec.has_value());
  EXPECT_EQ(*s->spec, spec);
  std::set<std::string> want = {p + ".weight", p + ".scales"};
  if (spec.mode == QuantMode::affine) want.insert(p + ".biases");
  EXPECT_EQ(keys(c.w), want);
  const Array& wq = c.w.at(p + ".weight");
  EXPECT_EQ(wq.dtype(), Dtype::u32);
  Array biases = spec.mode == QuantMode::affine ? c.w.at(p + ".biases") : Array();
  expect_equal(dequantize(wq, c.w.at(p + ".scales"), biases, spec, Dtype::f32), c.expected, name);
  // The config now carries MLX's object, which the loader's apply_quantization reads.
  ASSERT_TRUE(c.config.is_object("quantization"));
  std::optional<QuantSpec> cq = models::config_quantization(c.config);
  ASSERT_TRUE(cq.has_value());
  EXPECT_EQ(*cq, spec);
}

TEST(HfQuant, AwqGemmRepacksToAffine) { check_case("awq_g64"); }
TEST(HfQuant, GptqV1RepacksToAffine) { check_case("gptq4_g32"); }
TEST(HfQuant, GptqActOrderIsDequantized) { check_case("gptq4_actorder"); }
TEST(HfQuant, Gptq8BitPerChannelUsesGroups128) { check_case("gptq8_channel"); }
TEST(HfQuant, GptqV2TwoBit) { check_case("gptq2_v2"); }
TEST(HfQuant, CompressedTensorsInt4Symmetric) { check_case("ct_int4_sym_g32"); }
TEST(HfQuant, CompressedTensorsInt4Asymmetric) { check_case("ct_int4_asym_g64"); }
TEST(HfQuant, CompressedTensorsActOrderIsDequantized) { check_case("ct_int4_actorder"); }
TEST(HfQuant, CompressedTensorsInt8PerChannel) { check_case("ct_int8_channel"); }
TEST(HfQuant, CompressedTensorsFp8PerChannel) { check_case("ct_fp8_channel"); }
TEST(HfQuant, CompressedTensorsFp8PerTensor) { check_case("ct_fp8_tensor"); }
TEST(HfQuant, Fp8BlockScaledWithPartialEdges) { check_case("fp8_block"); }
TEST(HfQuant, Fp8PerTensorScaleInv) { check_case("fp8_tensor"); }
TEST(HfQuant, GptOssMxfp4IsRepackedWithoutArithmetic) { check_case("mxfp4"); }

// Without an explicit dtype, dequantized layers take the config's torch_dtype, else bfloat16 (as mlx-lm's
// deepseek_v3 dequant): the f32 product rounded once.
TEST(HfQuant, DequantizedDtypeFollowsConfig) {
  Case c = load_case("fp8_block");
  ASSERT_TRUE(convert_hf_quantization(c.config, c.w, c.file_of()).has_value());
  EXPECT_EQ(c.w.at("layer.weight").dtype(), Dtype::bf16);
  expect_equal(c.w.at("layer.weight"), c.expected.astype(Dtype::bf16).astype(Dtype::f32), "bf16");
  Case h = load_case("fp8_block");
  h.config.set_json("torch_dtype", "\"float16\"");
  ASSERT_TRUE(convert_hf_quantization(h.config, h.w, h.file_of()).has_value());
  EXPECT_EQ(h.w.at("layer.weight").dtype(), Dtype::f16);
}

// transformers' own mxfp4 dequantization (convert_moe_packed_tensors, via make_mxfp4_oracle.py on the GPU
// machine) of gpt-oss blocks, against loom's repack + dequantize.
TEST(HfQuant, Mxfp4MatchesTransformers) {
  std::string dir = fixture_dir("hf_mxfp4");
  ASSERT_TRUE(std::filesystem::exists(dir + "/weights.safetensors"))
      << "missing " << dir << " (tools/refgen/make_mxfp4_oracle.py output)";
  io::WeightStore store = io::WeightStore::open_files({dir + "/weights.safetensors"});
  WeightMap w;
  for (const auto& k : store.names()) w.emplace(k, store.load(k));
  io::Config config =
      io::Config::parse(R"({"model_type": "gpt_oss", "quantization_config": {"quant_method": "mxfp4"}})");
  auto s = convert_hf_quantization(config, w, [&](const std::string& k) { return store.file_of(k); });
  ASSERT_TRUE(s.has_value());
  const std::string p = "model.layers.0.mlp.experts.down_proj";
  ASSERT_TRUE(w.count(p + ".weight") && w.count(p + ".scales"));
  expect_equal(
      dequantize(w.at(p + ".weight"), w.at(p + ".scales"), {}, default_quant_spec(QuantMode::mxfp4), Dtype::f32),
      io::load_npy(dir + "/expected.npy"), "transformers mxfp4");
}

// ---------------------------------------------------------------------------------------- whole models

Array logits_of(models::LanguageModel& m, const std::vector<int32_t>& ids) {
  models::Cache c = m.make_cache();
  Array l = m.forward(tokens_array(ids), c, models::LogitsMode::all);
  return reshape(l, {l.shape(1), l.shape(2)});
}

int quantized_layers(models::LanguageModel& m) {
  int n = 0;
  for (auto& [path, mod] : m.modules())
    if (auto* q = dynamic_cast<nn::Quantizable*>(mod); q && q->quantized()) ++n;
  return n;
}

// tests/fixtures/llama quantized (4-bit, group 32) and stored as AutoAWQ / GPTQ v1 must give the logits of the
// float32 twin holding the same weights dequantized: the quantized matmul equals dequantize + matmul up to f32
// summation order in the exact tier (loom/ops/quantized.h), so 1e-5 relative is ample and any wrong code, zero or scale
// fails it.
TEST(HfQuant, AwqAndGptqLlamaEqualTheirDequantizedTwin) {
  ScopedQmmPrecision exact(QmmPrecision::exact);  // the int8-activation fast tier is not the reference
  Reference ref = load_reference("llama");
  models::LoadedModel twin = models::load_model(vec_dir() + "/llama_twin");
  EXPECT_EQ(quantized_layers(*twin.model), 0);
  for (const char* name : {"llama_awq", "llama_gptq"}) {
    SCOPED_TRACE(name);
    models::LoadedModel q = models::load_model(vec_dir() + "/" + name);
    EXPECT_EQ(quantized_layers(*q.model), 14);  // 2 layers x (q, k, v, o, gate, up, down)
    ASSERT_TRUE(q.config.is_object("quantization"));
    EXPECT_EQ(models::config_quantization(q.config), (QuantSpec{QuantMode::affine, 4, 32}));
    for (const auto& ids : ref.prompts) {
      Array a = logits_of(*q.model, ids), b = logits_of(*twin.model, ids);
      auto x = a.to_float_vector(), y = b.to_float_vector();
      double md = 0, mr = 0;
      for (size_t i = 0; i < x.size(); ++i)
        md = nan_max(md, double(std::abs(x[i] - y[i]))), mr = std::max(mr, double(std::abs(y[i])));
      EXPECT_LT(md / mr, 1e-5);
      EXPECT_GT(mr, 0.1);  // the logits are not degenerate
    }
  }
}

// ---------------------------------------------------------------------------------------- malformed

template <typename E>
void expect_error(Case& c, const std::vector<std::string>& parts) {
  try {
    convert_hf_quantization(c.config, c.w, c.file_of(), {Dtype::f32});
    ADD_FAILURE() << "no error";
  } catch (const E& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\n  lacks: " << p;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong error type: " << e.what();
  }
}

TEST(HfQuantErrors, ShapeMismatchNamesTensorAndFile) {
  Case c = load_case("awq_g64");
  c.w["layer.scales"] = reshape(c.w.at("layer.scales"), {1, -1});  // [2, 16] -> [1, 32]
  expect_error<IoError>(c, {"'layer.scales'", "awq_g64.safetensors", "[1, 32]", "expected [2, 16]"});
  Case g = load_case("gptq4_g32");
  g.w["layer.qzeros"] = reshape(g.w.at("layer.qzeros"), {-1});
  expect_error<IoError>(g, {"'layer.qzeros'", "gptq4_g32.safetensors", "expected [2, 2]"});
  Case t = load_case("ct_int4_sym_g32");
  t.w["layer.weight_shape"] = Array::from(std::vector<int64_t>{9, 64}, {2}, Dtype::i64);
  expect_error<IoError>(t, {"'layer.weight_shape'", "ct_int4_sym_g32.safetensors"});
  Case f = load_case("fp8_block");
  f.w["layer.weight_scale_inv"] = reshape(f.w.at("layer.weight_scale_inv"), {1, 9});
  expect_error<IoError>(f, {"'layer.weight_scale_inv'", "fp8_block.safetensors", "[1, 9]"});
  Case m = load_case("mxfp4");
  m.w["layer.experts.down_proj_scales"] = reshape(m.w.at("layer.experts.down_proj_scales"), {2, 8});
  expect_error<IoError>(m, {"'layer.experts.down_proj_scales'", "mxfp4.safetensors", "expected [2, 4, 2]"});
}

// An act-order map entry outside [0, groups) names the key, the position and the range, for GPTQ and
// compressed-tensors alike (one reader serves both).
TEST(HfQuantErrors, ActOrderIndexOutOfRange) {
  for (const auto& [name, key] : std::vector<std::pair<std::string, std::string>>{
           {"gptq4_actorder", "layer.g_idx"}, {"ct_int4_actorder", "layer.weight_g_idx"}}) {
    SCOPED_TRACE(name);
    Case c = load_case(name);
    std::vector<int32_t> g = c.w.at(key).to_vector<int32_t>();
    ASSERT_GT(g.size(), 3u);
    g[3] = 1000;
    c.w[key] = Array::from(g, {static_cast<int64_t>(g.size())}, Dtype::i32);
    expect_error<IoError>(c, {"'" + key + "'", name + ".safetensors", "entry 3 = 1000 is outside [0, "});
  }
}

TEST(HfQuantErrors, MissingCompanionTensors) {
  Case a = load_case("awq_g64");
  a.w.erase("layer.qzeros");
  expect_error<IoError>(a, {"missing 'layer.qzeros'", "'layer.qweight'", "awq_g64.safetensors"});
  Case b = load_case("gptq4_g32");
  b.w.erase("layer.scales");
  expect_error<IoError>(b, {"missing 'layer.scales'", "'layer.qweight'"});
  Case f = load_case("fp8_block");
  f.w.erase("layer.weight_scale_inv");
  expect_error<IoError>(f, {"'layer.weight'", "fp8_block.safetensors", "no 'layer.weight_scale_inv'"});
  Case m = load_case("mxfp4");
  m.w.erase("layer.experts.down_proj_scales");
  expect_error<IoError>(m, {"missing 'layer.experts.down_proj_scales'"});
  Case t = load_case("ct_int4_sym_g32");
  t.w.erase("layer.weight_scale");
  expect_error<IoError>(t, {"missing 'layer.weight_scale'", "'layer.weight_packed'"});
}

TEST(HfQuantErrors, UnsupportedBitsGroupsAndMethods) {
  Case g = load_case("gptq4_g32");
  g.config.set_json("quantization_config", R"({"quant_method": "gptq", "bits": 3, "group_size": 32})");
  expect_error<NotSupportedError>(g, {"bits=3", "supported: 2, 4, 8"});
  Case a = load_case("awq_g64");
  a.config.set_json("quantization_config", R"({"quant_method": "awq", "bits": 4, "group_size": 48})");
  expect_error<IoError>(a, {"'layer.qweight'", "not a multiple of group_size 48"});
  Case v = load_case("awq_g64");
  v.config.set_json("quantization_config",
                    R"({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemv"})");
  expect_error<NotSupportedError>(v, {"version 'gemv'"});
  Case u = load_case("awq_g64");
  u.config.set_json("quantization_config", R"({"quant_method": "bitsandbytes", "load_in_4bit": true})");
  expect_error<NotSupportedError>(u, {"'bitsandbytes'", "supported: awq, gptq, compressed-tensors, fp8, mxfp4"});
  Case n = load_case("ct_int4_sym_g32");
  n.config.set_json("quantization_config",
                    R"({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"})");
  expect_error<NotSupportedError>(n, {"'nvfp4-pack-quantized'", "supported: pack-quantized"});
}

// Layers of different formats in one checkpoint: the config's object holds the most common format (the first
// seen on a tie) plus a per-layer entry for the other, as MLX's fine-grained quantization objects do.
TEST(HfQuant, MixedFormatsGetPerLayerEntries) {
  Case a = load_case("ct_int4_sym_g32"), b = load_case("ct_int8_channel");
  WeightMap w;
  for (auto& [k, v] : a.w) w.emplace("a" + k.substr(5), v);  // "layer.x" -> "a.x"
  for (auto& [k, v] : b.w) w.emplace("b" + k.substr(5), v);
  auto s = convert_hf_quantization(a.config, w, [](const std::string&) { return std::string("(test)"); }, {Dtype::f32});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->repacked, 2);
  EXPECT_EQ(*s->spec, (QuantSpec{QuantMode::affine, 4, 32}));
  io::Config q = a.config.sub("quantization");
  EXPECT_EQ(q.get_int("bits"), 4);
  EXPECT_EQ(q.get_int("group_size"), 32);
  EXPECT_FALSE(q.has("a"));
  ASSERT_TRUE(q.is_object("b"));
  EXPECT_EQ(q.sub("b").get_int("bits"), 8);
  EXPECT_EQ(q.sub("b").get_int("group_size"), 64);
}

// MLX checkpoints (a `quantization` object, or quantization_config without quant_method) and float ones are
// left alone.
TEST(HfQuant, MlxAndFloatCheckpointsAreUntouched) {
  Case c = load_case("awq_g64");
  c.config.set_json("quantization", R"({"group_size": 64, "bits": 4})");
  size_t before = c.w.size();
  EXPECT_FALSE(convert_hf_quantization(c.config, c.w, c.file_of()).has_value());
  EXPECT_EQ(c.w.size(), before);
  io::Config plain = io::Config::parse(R"({"model_type": "llama"})");
  EXPECT_FALSE(convert_hf_quantization(plain, c.w, c.file_of()).has_value());
  io::Config mlx_style =
      io::Config::parse(R"({"model_type": "llama", "quantization_config": {"group_size": 64, "bits": 4}})");
  EXPECT_FALSE(convert_hf_quantization(mlx_style, c.w, c.file_of()).has_value());
}

}  // namespace
}  // namespace loom::test
