// Quantized models: the llama fixture quantized at test time equals its dequantized twin; mlx-style
// quantized folders (config defaults, per-layer overrides, shape-inferred formats) load; `loom
// convert` output loads back to the in-memory quantized model; malformed checkpoints fail clearly.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "loom/common/error.h"
#include "loom/io/safetensors.h"
#include "loom/nn/layers.h"
#include "loom/ops/quantized.h"
#include "tests/models/fixture_util.h"
#include "tests/nan_max.h"

namespace loom::test {
namespace {
namespace fs = std::filesystem;

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

Array run_logits(models::LanguageModel& m, const std::vector<int32_t>& ids) {
  models::Cache c = m.make_cache();
  Array l = m.forward(tokens_array(ids), c, models::LogitsMode::all);
  return reshape(l, {l.shape(1), l.shape(2)});
}

// Max |a - b| / max |b|.
double max_rel(const Array& a, const Array& b) {
  auto x = a.to_float_vector(), y = b.to_float_vector();
  double md = 0, mr = 0;
  for (size_t i = 0; i < x.size(); ++i)
    md = nan_max(md, double(std::abs(x[i] - y[i]))), mr = std::max(mr, double(std::abs(y[i])));
  return md / mr;
}

nn::QuantPredicate all_with(const QuantSpec& spec) {
  return [spec](const std::string&, nn::Quantizable& l) -> std::optional<QuantSpec> {
    if (l.quant_axis_size() % spec.group_size) return std::nullopt;
    return spec;
  };
}

TEST(QuantModel, QuantizedFixtureEqualsDequantizedTwin) {
  Reference ref = load_reference("llama");
  for (QuantSpec spec : {QuantSpec{QuantMode::affine, 4, 32}, QuantSpec{QuantMode::affine, 3, 32}, QuantSpec{QuantMode::affine, 8, 32},
                         default_quant_spec(QuantMode::mxfp4), default_quant_spec(QuantMode::nvfp4),
                         default_quant_spec(QuantMode::mxfp8)}) {
    auto q = models::load_model(fixture_dir("llama"));
    int n = nn::quantize_module(*q.model, all_with(spec));
    EXPECT_EQ(n, 2 * 7 + 2) << "every projection, the embedding and the head";
    auto twin = models::load_model(fixture_dir("llama"));
    nn::quantize_module(*twin.model, all_with(spec));
    for (auto& [p, m] : twin.model->modules())
      if (auto* l = dynamic_cast<nn::Quantizable*>(m)) l->to_dense(Dtype::f32);
    for (const auto& prompt : ref.prompts) {
      Array a = run_logits(*q.model, prompt), b = run_logits(*twin.model, prompt);
      EXPECT_LT(max_rel(a, b), 1e-5) << quant_spec_str(spec);
      // And it is still the model: 8-bit affine stays close to transformers' f32 logits.
      if (spec == QuantSpec{QuantMode::affine, 8, 32})
        EXPECT_LT(max_rel(a, ref.logits[&prompt - ref.prompts.data()]), 0.1) << quant_spec_str(spec);
    }
  }
}

// Writes the parameters of `m` and a config (the fixture's plus `quant_json` entries) to `dir`.
void write_folder(models::LanguageModel& m, const fs::path& dir, const std::string& quant_json,
                  const std::function<void(std::vector<std::pair<std::string, Array>>&)>& edit = {}) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::pair<std::string, Array>> t;
  for (auto& p : m.parameters()) t.emplace_back(p.path, *p.value);
  if (edit) edit(t);
  io::save_safetensors((dir / "model.safetensors").string(), t, {{"format", "mlx"}});
  std::ifstream in(fixture_dir("llama") + "/config.json");
  nlohmann::json c = nlohmann::json::parse(in);
  if (!quant_json.empty()) c["quantization"] = nlohmann::json::parse(quant_json);
  std::ofstream(dir / "config.json") << c.dump(2);
}

// Per process, so parallel ctest processes never share a scratch folder.
fs::path tmp_dir(const std::string& name) {
  return fs::path(LOOM_BINARY_DIR) / ("quant_test_" + name + "_" + std::to_string(::getpid()));
}

TEST(QuantModel, LoadsMlxFolderWithPerLayerOverrides) {
  Reference ref = load_reference("llama");
  auto q = models::load_model(fixture_dir("llama"));
  // Default 4-bit g32; layer 0's down_proj at 8 bits; lm_head left dense (false); the embedding in mxfp4.
  nn::quantize_module(*q.model, [](const std::string& p, nn::Quantizable&) -> std::optional<QuantSpec> {
    if (p == "lm_head") return std::nullopt;
    if (p == "model.layers.0.mlp.down_proj") return QuantSpec{QuantMode::affine, 8, 32};
    if (p == "model.embed_tokens") return default_quant_spec(QuantMode::mxfp4);
    return QuantSpec{QuantMode::affine, 4, 32};
  });
  fs::path dir = tmp_dir("overrides");
  write_folder(*q.model, dir,
               R"({"group_size": 32, "bits": 4, "mode": "affine", "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
                  "lm_head": false, "model.embed_tokens": {"group_size": 32, "bits": 4, "mode": "mxfp4"}})");
  auto loaded = models::load_model(dir.string());
  for (const auto& prompt : ref.prompts) EXPECT_EQ(max_rel(run_logits(*loaded.model, prompt), run_logits(*q.model, prompt)), 0.0);
  // Without a quantization config the formats are inferred from the packed shapes and biases.
  fs::path dir2 = tmp_dir("inferred");
  write_folder(*q.model, dir2, "");
  auto inferred = models::load_model(dir2.string());
  for (const auto& prompt : ref.prompts) EXPECT_EQ(max_rel(run_logits(*inferred.model, prompt), run_logits(*q.model, prompt)), 0.0);
}

void expect_load_error(const fs::path& dir, const std::string& needle) {
  try {
    models::load_model(dir.string());
    ADD_FAILURE() << "loading " << dir << " should fail with '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(QuantModel, MalformedCheckpointsGiveClearErrors) {
  auto q = models::load_model(fixture_dir("llama"));
  nn::quantize_module(*q.model, all_with({QuantMode::affine, 4, 32}));
  const std::string cfg = R"({"group_size": 32, "bits": 4, "mode": "affine"})";
  auto drop = [](const std::string& key) {
    return [key](std::vector<std::pair<std::string, Array>>& t) {
      std::erase_if(t, [&](auto& kv) { return kv.first == key; });
    };
  };
  auto replace = [](const std::string& key, Array v) {
    return [key, v](std::vector<std::pair<std::string, Array>>& t) {
      for (auto& kv : t)
        if (kv.first == key) kv.second = v;
    };
  };
  // Scales of the wrong shape (config says 4-bit g32: [64, 1] expected for q_proj).
  write_folder(*q.model, tmp_dir("bad_scales"), cfg, replace("model.layers.0.self_attn.q_proj.scales", zeros({64, 2})));
  expect_load_error(tmp_dir("bad_scales"), "model.layers.0.self_attn.q_proj.scales' in");
  // Missing biases with a config: the strict match names the key.
  write_folder(*q.model, tmp_dir("no_biases_cfg"), cfg, drop("model.layers.1.mlp.up_proj.biases"));
  expect_load_error(tmp_dir("no_biases_cfg"), "missing weight 'model.layers.1.mlp.up_proj.biases'");
  // Missing biases without a config: float scales say affine, which needs biases.
  write_folder(*q.model, tmp_dir("no_biases"), "", drop("model.layers.1.mlp.up_proj.biases"));
  expect_load_error(tmp_dir("no_biases"), "missing 'model.layers.1.mlp.up_proj.biases'");
  // Bits not inferable: 3 packed words for 32 inputs is 3 bits per 32/3 inputs... 96/32 = 3 bits
  // would be fine, so use 5 words for 64 inputs: 160/64 is not an integer.
  write_folder(*q.model, tmp_dir("bad_bits"), "",
               replace("model.layers.0.mlp.down_proj.weight", zeros({32, 5}, Dtype::u32)));
  expect_load_error(tmp_dir("bad_bits"), "bits not inferable");
  // Wrong scale dtype for an fp mode declared by the config.
  auto f = models::load_model(fixture_dir("llama"));
  nn::quantize_module(*f.model, all_with(default_quant_spec(QuantMode::mxfp4)));
  write_folder(*f.model, tmp_dir("fp_scales"), R"({"group_size": 32, "bits": 4, "mode": "mxfp4"})",
               replace("model.layers.0.mlp.up_proj.scales", zeros({64, 1}, Dtype::bf16)));
  expect_load_error(tmp_dir("fp_scales"), "expected uint8");
}


TEST(Convert, QuantizedFolderLoadsToTheInMemoryModel) {
  Reference ref = load_reference("llama");
  struct Case {
    std::string flags;
    QuantSpec spec;
  };
  for (const Case& c : {Case{"-q --q-bits 4 --q-group-size 32", {QuantMode::affine, 4, 32}},
                        Case{"-q --q-mode mxfp4", default_quant_spec(QuantMode::mxfp4)},
                        Case{"-q --q-bits 6 --q-group-size 64", {QuantMode::affine, 6, 64}}}) {
    SCOPED_TRACE(c.flags);
    fs::path out = tmp_dir("convert");
    fs::remove_all(out);
    CliResult r = run_loom("convert --hf-path " + fixture_dir("llama") + " --mlx-path " + out.string() + " " + c.flags);
    ASSERT_EQ(r.status, 0) << r.output;
    auto mem = models::load_model(fixture_dir("llama"));
    nn::quantize_module(*mem.model, all_with(c.spec));
    auto loaded = models::load_model(out.string());
    for (const auto& prompt : ref.prompts)
      EXPECT_EQ(max_rel(run_logits(*loaded.model, prompt), run_logits(*mem.model, prompt)), 0.0);
    // The logical parameter count is the dense model's, not the packed words + scales + biases.
    auto dense = models::load_model(fixture_dir("llama"));
    EXPECT_EQ(nn::logical_parameters(*loaded.model), dense.model->num_parameters());
    EXPECT_NE(loaded.model->num_parameters(), dense.model->num_parameters());
    // mlx-lm's layout: one shard with {"format": "mlx"}, a sorted index, sorted config keys with
    // quantization == quantization_config.
    auto st = io::SafetensorsFile::open((out / "model.safetensors").string());
    EXPECT_EQ(st->metadata().at("format"), "mlx");
    std::ifstream ij(out / "model.safetensors.index.json");
    nlohmann::json index = nlohmann::json::parse(ij);
    EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.down_proj.scales"], "model.safetensors");
    std::ifstream cj(out / "config.json");
    std::string text((std::istreambuf_iterator<char>(cj)), std::istreambuf_iterator<char>());
    nlohmann::json config = nlohmann::json::parse(text);
    EXPECT_EQ(config["quantization"], config["quantization_config"]);
    EXPECT_EQ(config["quantization"]["bits"], c.spec.bits);
    EXPECT_EQ(config["quantization"]["group_size"], c.spec.group_size);
    EXPECT_EQ(config["quantization"]["mode"], std::string(quant_mode_name(c.spec.mode)));
    EXPECT_LT(text.find("\"architectures\""), text.find("\"vocab_size\""));
    // The destination exists now: a second run refuses and leaves it alone.
    CliResult again = run_loom("convert --hf-path " + fixture_dir("llama") + " --mlx-path " + out.string() + " -q");
    EXPECT_NE(again.status, 0);
    EXPECT_NE(again.output.find("already exists"), std::string::npos) << again.output;
  }
}

TEST(Convert, DequantizeRoundTripAndNoPartialOutput) {
  Reference ref = load_reference("llama");
  fs::path q = tmp_dir("convert_q"), d = tmp_dir("convert_dq");
  fs::remove_all(q);
  fs::remove_all(d);
  ASSERT_EQ(run_loom("convert --hf-path " + fixture_dir("llama") + " --mlx-path " + q.string() + " -q --q-group-size 32").status, 0);
  CliResult r = run_loom("convert --hf-path " + q.string() + " --mlx-path " + d.string() + " --dequantize");
  ASSERT_EQ(r.status, 0) << r.output;
  auto twin = models::load_model(fixture_dir("llama"));
  nn::quantize_module(*twin.model, all_with({QuantMode::affine, 4, 32}));
  for (auto& [p, m] : twin.model->modules())
    if (auto* l = dynamic_cast<nn::Quantizable*>(m)) l->to_dense(Dtype::f32);
  auto dq = models::load_model(d.string());
  std::ifstream cj(d / "config.json");
  EXPECT_FALSE(nlohmann::json::parse(cj).contains("quantization"));
  for (const auto& prompt : ref.prompts) EXPECT_LT(max_rel(run_logits(*dq.model, prompt), run_logits(*twin.model, prompt)), 1e-6);
  // A failing conversion (unsupported bits) leaves neither the destination nor a temporary folder.
  fs::path bad = tmp_dir("convert_bad");
  fs::remove_all(bad);
  CliResult b = run_loom("convert --hf-path " + fixture_dir("llama") + " --mlx-path " + bad.string() + " -q --q-bits 7");
  EXPECT_NE(b.status, 0);
  EXPECT_FALSE(fs::exists(bad));
  for (auto& e : fs::directory_iterator(bad.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".quant_test_convert_bad.tmp"), std::string::npos) << e.path();
  // Writing into the source folder is refused.
  CliResult inside = run_loom("convert --hf-path " + q.string() + " --mlx-path " + (q / "sub").string() + " --dequantize");
  EXPECT_NE(inside.status, 0);
  EXPECT_FALSE(fs::exists(q / "sub"));
}

// A bare relative --mlx-path (no folder part) is written relative to the working directory.
TEST(Convert, BareRelativeDestination) {
  fs::path dir = tmp_dir("convert_rel");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string cmd = "cd '" + dir.string() + "' && " + std::string(LOOM_BINARY_DIR) + "/loom convert --hf-path " +
                    fixture_dir("llama") + " --mlx-path out -q --q-group-size 32 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ASSERT_EQ(WEXITSTATUS(pclose(p)), 0) << out;
  EXPECT_TRUE(fs::exists(dir / "out" / "config.json"));
  EXPECT_TRUE(fs::exists(dir / "out" / "model.safetensors"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace loom::test
