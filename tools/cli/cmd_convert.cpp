// `loom convert`: mlx_lm.convert in C++. Loads a model folder, optionally casts (--dtype), quantizes
// (-q; each layer's format from the model's quant predicate, as mlx-lm's) or dequantizes (--dequantize)
// it, and writes an MLX folder as mlx-lm's save() does: shards of at most 5 GiB named model.safetensors /
// model-0000i-of-0000n.safetensors with metadata {"format": "mlx"}, model.safetensors.index.json (sorted
// weight_map, indent 4), config.json with sorted keys and `quantization` == `quantization_config`,
// tokenizer and generation files copied. Everything is written into a temporary sibling folder renamed
// at the end, so a failure leaves no half-written destination; the source folder is never written.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "loom/common/error.h"
#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "loom/nn/layers.h"
#include "loom/ops/ops.h"
#include "tools/cli/commands.h"

namespace loom::cli {
namespace {
namespace fs = std::filesystem;

struct ConvertOpts {
  std::string hf_path, mlx_path, q_mode = "affine", dtype;
  int q_bits = 0, q_group_size = 0;
  bool quantize = false, dequantize = false;
};

QuantMode parse_mode(const std::string& m) {
  for (QuantMode q : {QuantMode::affine, QuantMode::mxfp4, QuantMode::nvfp4, QuantMode::mxfp8})
    if (m == quant_mode_name(q)) return q;
  throw ValueError(format_error("convert", "unknown --q-mode '" + m + "' (affine, mxfp4, nvfp4, mxfp8)"));
}

nlohmann::json spec_json(const QuantSpec& q) {
  return {{"group_size", q.group_size}, {"bits", q.bits}, {"mode", std::string(quant_mode_name(q.mode))}};
}

std::vector<nn::Quantizable*> quantizable_layers(models::LanguageModel& m, std::vector<std::string>* paths) {
  std::vector<nn::Quantizable*> out;
  for (auto& [path, mod] : m.modules())
    if (auto* q = dynamic_cast<nn::Quantizable*>(mod)) {
      out.push_back(q);
      if (paths) paths->push_back(path);
    }
  return out;
}

// Writes weights (sorted by name) in shards <= 5 GiB plus the index, as mlx-lm's save_model.
void save_weights(const fs::path& dir, models::LanguageModel& model) {
  std::map<std::string, Array> weights;
  for (auto& p : model.parameters()) weights.emplace(p.path, *p.value);
  const uint64_t max_bytes = uint64_t{5} << 30;
  std::vector<std::vector<std::pair<std::string, Array>>> shards(1);
  uint64_t shard_size = 0, total = 0;
  for (auto& [k, v] : weights) {
    if (shard_size + v.nbytes() > max_bytes && !shards.back().empty()) shards.emplace_back(), shard_size = 0;
    shards.back().emplace_back(k, v);
    shard_size += v.nbytes();
    total += v.nbytes();
  }
  // total_parameters counts a quantized matrix by its dense size (mlx-lm's get_total_parameters).
  int64_t total_params = 0;
  for (auto& [k, v] : weights) total_params += v.size();
  std::vector<std::string> qpaths;
  for (auto* q : quantizable_layers(model, &qpaths))
    if (q->quantized()) {
      const auto& qw = *q->quantized();
      total_params += qw.w.size() * 32 / qw.spec.bits - qw.w.size() - qw.scales.size() - (qw.biases.valid() ? qw.biases.size() : 0);
    }
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}, {"total_parameters", total_params}};
  index["weight_map"] = nlohmann::json::object();
  size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    if (n > 1) std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    else std::snprintf(name, sizeof name, "model.safetensors");
    io::save_safetensors((dir / name).string(), shards[i], {{"format", "mlx"}});
    for (auto& [k, v] : shards[i]) index["weight_map"][k] = name;
    std::fprintf(stderr, "\r[convert] wrote shard %zu/%zu", i + 1, n);
  }
  std::fprintf(stderr, "\n");
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(4) << "\n";
}

void run_convert(const ConvertOpts& o) {
  if (o.quantize && o.dequantize) throw ValueError(format_error("convert", "choose either -q or --dequantize, not both"));
  fs::path src = o.hf_path, dst = o.mlx_path;
  if (!fs::is_directory(src)) throw IoError(format_error("convert", "'" + o.hf_path + "' is not a model folder"));
  if (fs::exists(dst))
    throw IoError(format_error("convert", "cannot save to '" + o.mlx_path + "': it already exists (delete it or pick a new path)"));
  fs::path src_abs = fs::weakly_canonical(fs::absolute(src)), dst_abs = fs::weakly_canonical(fs::absolute(dst));
  auto rel = dst_abs.lexically_relative(src_abs);
  if (!rel.empty() && *rel.begin() != "..")
    throw IoError(format_error("convert", "the destination '" + o.mlx_path + "' lies inside the source folder"));

  std::ifstream cin_(src / "config.json");
  if (!cin_) throw IoError(format_error("convert", "missing config.json in '" + o.hf_path + "'"));
  nlohmann::json config = nlohmann::json::parse(cin_, nullptr, /*allow_exceptions=*/true);

  models::LoadedModel lm = models::load_model(src.string());
  models::LanguageModel& model = *lm.model;
  // An HF quantization_config (AWQ, GPTQ, compressed-tensors, FP8, ...) was converted at load
  // (models/hf_quant.h): the folder written describes what was loaded, in MLX's terms.
  if (!config.contains("quantization") && config.contains("quantization_config") &&
      config["quantization_config"].is_object() && config["quantization_config"].contains("quant_method")) {
    config.erase("quantization_config");
    if (lm.config.is_object("quantization")) config["quantization"] = nlohmann::json::parse(lm.config.sub("quantization").dump());
  }

  // --dtype, else the config's torch_dtype (or v5 `dtype`) when it is one of the three.
  std::string dt = o.dtype;
  if (dt.empty()) dt = lm.config.get_string("torch_dtype", "");
  if (dt == "float16" || dt == "bfloat16" || dt == "float32") {
    Dtype d = dtype_from_name(dt);
    for (auto& p : model.parameters())
      if (is_floating(p.value->dtype())) *p.value = astype(*p.value, d);
    std::fprintf(stderr, "[convert] using dtype %s\n", dt.c_str());
  } else if (!o.dtype.empty()) {
    throw ValueError(format_error("convert", "--dtype must be float16, bfloat16 or float32, got '" + o.dtype + "'"));
  }

  if (o.quantize) {
    QuantSpec spec = default_quant_spec(parse_mode(o.q_mode));
    if (o.q_bits) spec.bits = o.q_bits;
    if (o.q_group_size) spec.group_size = o.q_group_size;
    if (!quant_spec_valid(spec)) throw ValueError(format_error("convert", "unsupported quantization " + quant_spec_str(spec)));
    bool fine_grained = config.contains("quantization");
    if (!fine_grained) config["quantization"] = spec_json(spec);
    // Layers already quantized keep their format; the model's quant predicate (mlx-lm's) decides the
    // others. As mlx-lm: the predicate's own formats are recorded per layer (its dict, {"group_size",
    // "bits"}, plus the mode when not affine); in a partly quantized source every newly quantized layer is.
    std::vector<std::string> paths;
    auto layers = quantizable_layers(model, &paths);
    std::vector<bool> before;
    for (auto* q : layers) before.push_back(q->quantized().has_value());
    std::map<std::string, QuantSpec> special = models::quantize_model(model, spec);
    int n = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      const std::string& path = paths[i];
      if (before[i] || !layers[i]->quantized()) continue;
      ++n;
      auto it = special.find(path);
      if (it != special.end()) {
        nlohmann::json j = {{"group_size", it->second.group_size}, {"bits", it->second.bits}};
        if (it->second.mode != QuantMode::affine) j["mode"] = std::string(quant_mode_name(it->second.mode));
        config["quantization"][path] = j;
      } else if (fine_grained) {
        config["quantization"][path] = spec_json(spec);
      }
    }
    std::fprintf(stderr, "[convert] quantized %d layers\n", n);
  }
  if (o.dequantize) {
    config.erase("quantization");
    config.erase("quantization_config");
    for (auto* q : quantizable_layers(model, nullptr))
      if (q->quantized()) {
        const auto& qw = *q->quantized();
        q->to_dense(qw.spec.mode == QuantMode::affine ? qw.scales.dtype() : Dtype::bf16);
      }
  }
  config.erase("_name_or_path");
  config.erase("vision_config");
  if (config.contains("quantization")) config["quantization_config"] = config["quantization"];

  // Write everything into a temporary sibling, then rename it into place.
  fs::path parent = dst_abs.parent_path();
  fs::create_directories(parent);
  fs::path tmp = parent / ("." + dst_abs.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  try {
    fs::create_directories(tmp);
    save_weights(tmp, model);
    std::ofstream(tmp / "config.json") << config.dump(4, ' ', /*ensure_ascii=*/true) << "\n";
    const char* extra[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                           "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                           "generation_config.json"};
    for (const char* f : extra)
      if (fs::exists(src / f)) fs::copy_file(src / f, tmp / f);
    for (auto& e : fs::directory_iterator(src))
      if (e.is_regular_file() && e.path().extension() == ".py") fs::copy_file(e.path(), tmp / e.path().filename());
    if (fs::exists(dst)) throw IoError(format_error("convert", "'" + o.mlx_path + "' appeared while converting"));
    fs::rename(tmp, dst_abs);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  std::printf("wrote %s\n", o.mlx_path.c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto o = std::make_shared<ConvertOpts>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a model folder to MLX format (mlx_lm.convert), optionally quantizing");
  cmd->add_option("--hf-path,--model", o->hf_path, "Source model folder")->required();
  cmd->add_option("--mlx-path", o->mlx_path, "Destination folder (must not exist)")->required();
  cmd->add_flag("-q,--quantize", o->quantize, "Quantize the model");
  cmd->add_option("--q-bits", o->q_bits, "Bits per weight (default by mode: affine 4, mxfp4 4, nvfp4 4, mxfp8 8)");
  cmd->add_option("--q-group-size", o->q_group_size, "Group size (default by mode: affine 64, mxfp4 32, nvfp4 16, mxfp8 32)");
  cmd->add_option("--q-mode", o->q_mode, "affine | mxfp4 | nvfp4 | mxfp8");
  cmd->add_option("--dtype", o->dtype, "float16 | bfloat16 | float32 for the non-quantized parameters");
  cmd->add_flag("-d,--dequantize", o->dequantize, "Dequantize a quantized model");
  cmd->callback([o] { run_convert(*o); });
}

}  // namespace loom::cli
