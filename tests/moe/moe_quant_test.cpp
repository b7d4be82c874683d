// Quantized mixture-of-experts models. The oracle is the model's own dequantized twin (DESIGN.md's exact
// tier: f32 activations through the quantized kernels equal dequantize + the dense kernels up to f32
// summation order, so logits agree within 1e-5 relative) and mlx-lm's format rules:
//  - each MoE fixture quantized in memory (models::quantize_model, the model's quant predicate) at 4-bit
//    g32/g64 and 8-bit gives its dequantized twin's logits and the same routing decisions;
//  - widened random-weight versions of the same architectures (every layer's input divisible by 64, so
//    every expert projection is quantized at g64 too) likewise, with the stacked experts checked quantized;
//  - `loom convert -q` writes a folder that loads back to the in-memory quantized model exactly, with the
//    router gates as mlx-lm's predicates say (qwen3_moe: `mlp.gate` at 8 bits, recorded per layer as
//    {"group_size", "bits"}; mixtral/qwen2_moe/olmoe/phimoe: no predicate, the gates at the model's bits);
//  - a quantized checkpoint with per-expert tensors and no `quantization` config loads (formats inferred
//    from `.scales`) to the same model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "loom/common/strings.h"
#include "loom/io/safetensors.h"
#include "loom/models/transformer.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/quantized.h"
#include "tests/models/fixture_util.h"
#include "tests/nan_max.h"

namespace loom::test {
namespace {
namespace fs = std::filesystem;

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

const char* const kMoEFixtures[] = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe"};

Array logits_of(models::LanguageModel& m, const std::vector<int32_t>& ids) {
  models::Cache c = m.make_cache();
  Array l = m.forward(tokens_array(ids), c, models::LogitsMode::all);
  return reshape(l, {l.shape(1), l.shape(2)});
}

double max_rel(const Array& a, const Array& b) {
  auto x = a.to_float_vector(), y = b.to_float_vector();
  double md = 0, mr = 0;
  for (size_t i = 0; i < x.size(); ++i)
    md = nan_max(md, double(std::abs(x[i] - y[i]))), mr = std::max(mr, double(std::abs(y[i])));
  return md / mr;
}

// The experts each MoE layer chose on the model's last forward, by module path.
std::map<std::string, std::vector<int64_t>> routing_of(models::LanguageModel& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (auto& [path, mod] : m.modules())
    if (auto* ff = dynamic_cast<models::FeedForward*>(mod); ff && ff->last_routing.valid())
      out[path] = ff->last_routing.to_vector<int64_t>();
  return out;
}

void dequantize_all(models::LanguageModel& m) {
  for (auto& [p, mod] : m.modules())
    if (auto* l = dynamic_cast<nn::Quantizable*>(mod)) l->to_dense(Dtype::f32);
}

// Counts the quantized stacked-expert layers and checks every quantized layer's format.
int quantized_switch_layers(models::LanguageModel& m) {
  int n = 0;
  for (auto& [p, mod] : m.modules())
    if (auto* s = dynamic_cast<nn::SwitchLinear*>(mod); s && s->quantized()) ++n;
  return n;
}

// `model` (quantized) and its dequantized twin give the same logits (1e-5) and routing on `prompts`.
void expect_twin_equal(models::LanguageModel& q, models::LanguageModel& twin,
                       const std::vector<std::vector<int32_t>>& prompts, const std::string& what) {
  for (const auto& p : prompts) {
    Array a = logits_of(q, p);
    auto ra = routing_of(q);
    Array b = logits_of(twin, p);
    auto rb = routing_of(twin);
    EXPECT_LT(max_rel(a, b), 1e-5) << what;
    EXPECT_FALSE(ra.empty()) << what << ": no MoE layer recorded its routing";
    EXPECT_EQ(ra, rb) << what << ": routing decisions differ";
  }
}

std::vector<QuantSpec> specs() {
  return {{QuantMode::affine, 4, 32}, {QuantMode::affine, 4, 64}, {QuantMode::affine, 8, 32}};
}

TEST(QuantizedMoE, FixturesEqualTheirDequantizedTwins) {
  for (const char* name : kMoEFixtures) {
    Reference ref = load_reference(name);
    for (const QuantSpec& spec : specs()) {
      std::string what = std::string(name) + " " + quant_spec_str(spec);
      auto q = models::load_model(fixture_dir(name));
      auto special = models::quantize_model(*q.model, spec);
      // The fixtures' expert inputs are the hidden size (32) and the expert widths (12-24): at g32 the
      // gate/up stacks are quantized (every fixture), at g64 none is.
      EXPECT_EQ(quantized_switch_layers(*q.model) > 0, spec.group_size == 32) << what;
      auto twin = models::load_model(fixture_dir(name));
      models::quantize_model(*twin.model, spec);
      dequantize_all(*twin.model);
      EXPECT_EQ(quantized_switch_layers(*twin.model), 0);
      expect_twin_equal(*q.model, *twin.model, ref.prompts, what);
    }
  }
}

// The fixture's config widened so every layer's input is a multiple of 64, with random weights.
std::string wide_folder(const std::string& name) {
  std::ifstream in(fixture_dir(name) + "/config.json");
  nlohmann::json c = nlohmann::json::parse(in);
  c["hidden_size"] = 64;
  c["head_dim"] = 16;
  c["intermediate_size"] = 128;
  if (c.contains("moe_intermediate_size")) c["moe_intermediate_size"] = 64;
  if (c.contains("shared_expert_intermediate_size")) c["shared_expert_intermediate_size"] = 128;
  if (name == "olmoe" || name == "phimoe") c.erase("head_dim");  // head_dim = hidden / heads there
  auto model = models::create_model(io::Config::parse(c.dump(), name + " (wide)"));
  std::mt19937 g(7);
  std::normal_distribution<float> d;
  std::vector<std::pair<std::string, Array>> tensors;
  for (auto& p : model->parameters()) {
    std::vector<float> v(shape_size(p.shape));
    bool norm = p.path.find("norm") != std::string::npos && ends_with(p.path, "weight");
    for (auto& x : v) x = norm ? 1.0f + 0.2f * d(g) : 0.15f * d(g);
    tensors.emplace_back(p.path, Array::from(v, p.shape));
  }
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "moe_quant" / (name + "_wide_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  io::save_safetensors((dir / "model.safetensors").string(), tensors);
  std::ofstream(dir / "config.json") << c.dump(2);
  return dir.string();
}

TEST(QuantizedMoE, WideModelsQuantizeEveryExpertAndEqualTheirTwins) {
  std::vector<std::vector<int32_t>> prompts = {{5, 17, 99, 3, 64, 12, 7, 120, 33, 2, 90, 41}, {8, 1, 77}};
  for (const char* name : kMoEFixtures) {
    std::string dir = wide_folder(name);
    for (const QuantSpec& spec : {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 8, 64},
                                  default_quant_spec(QuantMode::mxfp4)}) {
      std::string what = std::string(name) + " wide " + quant_spec_str(spec);
      auto q = models::load_model(dir);
      models::quantize_model(*q.model, spec);
      int stacks = 0;
      for (auto& [p, mod] : q.model->modules())
        if (auto* s = dynamic_cast<nn::SwitchLinear*>(mod)) {
          ++stacks;
          EXPECT_TRUE(s->quantized().has_value()) << what << ": " << p;
        }
      EXPECT_EQ(stacks, 3 * 2) << what << ": gate/up/down of two MoE layers";
      auto twin = models::load_model(dir);
      models::quantize_model(*twin.model, spec);
      dequantize_all(*twin.model);
      expect_twin_equal(*q.model, *twin.model, prompts, what);
    }
  }
}

// The format the layer at `path` of a loaded model has, or nullopt when it is dense.
std::optional<QuantSpec> layer_format(models::LanguageModel& m, const std::string& path) {
  for (auto& [p, mod] : m.modules())
    if (p == path)
      if (auto* l = dynamic_cast<nn::Quantizable*>(mod))
        return l->quantized() ? std::optional(l->quantized()->spec) : std::nullopt;
  ADD_FAILURE() << "no quantizable layer " << path;
  return std::nullopt;
}

fs::path tmp_dir(const std::string& name) {
  return fs::path(LOOM_BINARY_DIR) / "moe_quant" / (name + "_" + std::to_string(::getpid()));
}

TEST(QuantizedMoE, ConvertLoadsBackToTheInMemoryModelWithMlxGateFormats) {
  // Fixtures (gate input 32: qwen3_moe's 8-bit gates take group size 32) and one wide model (gate input
  // 64: exactly mlx-lm's {"group_size": 64, "bits": 8}).
  struct Case {
    std::string name, src;
    QuantSpec spec;
  };
  std::vector<Case> cases;
  for (const char* n : kMoEFixtures) cases.push_back({n, fixture_dir(n), {QuantMode::affine, 4, 32}});
  cases.push_back({"qwen3_moe", wide_folder("qwen3_moe"), {QuantMode::affine, 4, 64}});
  cases.push_back({"qwen3_moe", wide_folder("qwen3_moe"), default_quant_spec(QuantMode::mxfp4)});
  for (const Case& c : cases) {
    std::string what = c.name + " " + quant_spec_str(c.spec) + " from " + c.src;
    fs::path out = tmp_dir("convert_" + c.name);
    fs::remove_all(out);
    CliResult r = run_loom("convert --hf-path " + c.src + " --mlx-path " + out.string() + " -q --q-bits " +
                           std::to_string(c.spec.bits) + " --q-group-size " + std::to_string(c.spec.group_size) +
                           " --q-mode " + std::string(quant_mode_name(c.spec.mode)));
    ASSERT_EQ(r.status, 0) << what << "\n" << r.output;
    auto mem = models::load_model(c.src);
    models::quantize_model(*mem.model, c.spec);
    auto loaded = models::load_model(out.string());
    for (const auto& p : std::vector<std::vector<int32_t>>{{4, 90, 23, 61, 7, 100, 3}, {1, 2}}) {
      EXPECT_EQ(max_rel(logits_of(*loaded.model, p), logits_of(*mem.model, p)), 0.0) << what;
      EXPECT_EQ(routing_of(*loaded.model), routing_of(*mem.model)) << what;
    }
    std::ifstream cj(out / "config.json");
    nlohmann::json config = nlohmann::json::parse(cj);
    const nlohmann::json& qc = config["quantization"];
    std::ifstream ij(out / "model.safetensors.index.json");
    nlohmann::json index = nlohmann::json::parse(ij);
    std::string block = c.name == "mixtral" || c.name == "phimoe" ? "block_sparse_moe" : "mlp";
    std::string gate = "model.layers.0." + block + ".gate";
    // mlx-lm's stacked expert keys, quantized.
    EXPECT_TRUE(index["weight_map"].contains("model.layers.1." + block + ".switch_mlp.up_proj.scales")) << what;
    if (c.name == "qwen3_moe") {
      int64_t hidden = config["hidden_size"].get<int64_t>();
      QuantSpec gate_spec{QuantMode::affine, 8, hidden % 64 == 0 ? 64 : 32};
      for (const std::string& layer : {gate, std::string("model.layers.1.mlp.gate")}) {
        EXPECT_EQ(qc[layer], (nlohmann::json{{"group_size", gate_spec.group_size}, {"bits", 8}}))
            << what << " " << layer;
        EXPECT_EQ(layer_format(*loaded.model, layer), gate_spec) << what << " " << layer;
      }
      EXPECT_EQ(layer_format(*loaded.model, "model.layers.0.self_attn.q_proj"), c.spec) << what;
    } else {
      // No quant predicate in mlx-lm: no per-layer entries, the gates at the model's format.
      for (auto& [k, v] : qc.items()) EXPECT_FALSE(v.is_object()) << what << ": unexpected entry " << k;
      EXPECT_EQ(layer_format(*loaded.model, gate), c.spec) << what;
    }
    EXPECT_EQ(qc, config["quantization_config"]);
  }
}

TEST(QuantizedMoE, PerExpertQuantizedCheckpointWithoutConfigLoads) {
  // A converted mixtral written back as per-expert tensors (experts.{e}.w1.weight/scales/biases) without
  // config["quantization"]: sanitize stacks the packed tensors and the loader infers 4-bit g32 from them.
  fs::path conv = tmp_dir("perexpert_src"), dst = tmp_dir("perexpert");
  fs::remove_all(conv);
  CliResult r = run_loom("convert --hf-path " + fixture_dir("mixtral") + " --mlx-path " + conv.string() +
                         " -q --q-bits 4 --q-group-size 32");
  ASSERT_EQ(r.status, 0) << r.output;
  io::WeightStore store = io::WeightStore::open_folder(conv.string());
  std::vector<std::pair<std::string, Array>> out;
  const std::map<std::string, std::string> hf = {{"gate_proj", "w1"}, {"down_proj", "w2"}, {"up_proj", "w3"}};
  for (const auto& n : store.names()) {
    Array a = store.load(n);
    auto p = n.find(".switch_mlp.");
    if (p == std::string::npos) {
      out.emplace_back(n, a);
      continue;
    }
    std::string rest = n.substr(p + 12);  // "<proj>.<suffix>"
    std::string proj = rest.substr(0, rest.find('.')), suffix = rest.substr(rest.find('.') + 1);
    for (int64_t e = 0; e < a.shape(0); ++e)
      out.emplace_back(n.substr(0, p) + ".experts." + std::to_string(e) + "." + hf.at(proj) + "." + suffix,
                       contiguous(reshape(slice_axis(a, 0, e, e + 1), Shape(a.shape().begin() + 1, a.shape().end()))));
  }
  fs::remove_all(dst);
  fs::create_directories(dst);
  io::save_safetensors((dst / "model.safetensors").string(), out);
  std::ifstream in(fixture_dir("mixtral") + "/config.json");
  std::ofstream(dst / "config.json") << in.rdbuf();
  auto loaded = models::load_model(dst.string());
  EXPECT_EQ(layer_format(*loaded.model, "model.layers.0.block_sparse_moe.switch_mlp.gate_proj"),
            (QuantSpec{QuantMode::affine, 4, 32}));
  auto mem = models::load_model(fixture_dir("mixtral"));
  models::quantize_model(*mem.model, {QuantMode::affine, 4, 32});
  Reference ref = load_reference("mixtral");
  for (const auto& p : ref.prompts) EXPECT_EQ(max_rel(logits_of(*loaded.model, p), logits_of(*mem.model, p)), 0.0);
  // The logical parameter count is the dense model's.
  auto dense = models::load_model(fixture_dir("mixtral"));
  EXPECT_EQ(nn::logical_parameters(*loaded.model), dense.model->num_parameters());
}

}  // namespace
}  // namespace loom::test
