// `loom random-model`: writes a random-weight checkpoint at the real dimensions of a known model
// (config.json + model*.safetensors + index), so benchmarks need no download. With --q-bits the
// checkpoint is written directly in MLX's affine quantized layout (random packed weights, scales and
// biases that dequantize to the same uniform range as the dense weights, `quantization` in
// config.json as mlx_lm.convert writes it), so a large model never exists in bf16 on disk.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/core/thread_pool.h"
#include "loom/io/config.h"
#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "loom/nn/layers.h"
#include "tools/cli/commands.h"

namespace loom::cli {
namespace {
namespace fs = std::filesystem;

// Real configs (transformers key names) of the shapes the benchmarks use.
const std::map<std::string, std::string>& presets() {
  static const std::map<std::string, std::string> p = {
      {"llama-3.2-1b", R"({"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}, "tie_word_embeddings": true})"},
      {"llama-3.1-8b", R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}, "tie_word_embeddings": false})"},
      {"qwen3-0.6b", R"({"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 151936, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": true})"},
      // Qwen/Qwen3-30B-A3B's config.json: 48 layers, 128 experts of which 8 are routed, no shared
      // expert, every layer sparse.
      {"qwen3-30b-a3b", R"({"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936, "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": false})"},
      // Not a released model: Qwen3-30B-A3B's layout scaled down to ~1.45 B total / ~0.4 B active
      // parameters, for CPU benchmarks.
      {"qwen3-moe-small", R"({"model_type": "qwen3_moe", "hidden_size": 1024, "intermediate_size": 3072,
        "moe_intermediate_size": 384, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4,
        "head_dim": 128, "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": true,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936, "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true})"},
  };
  return p;
}

std::string preset_names() {
  std::vector<std::string> names;
  for (const auto& [k, v] : presets()) names.push_back(k);
  return join(names, " | ");
}

// xorshift64 stream of block `s` of a tensor: the same (seed, offset) always gives the same values,
// whatever the thread count.
uint64_t stream_start(uint64_t seed, int64_t s) {
  return seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(s) * 0xBF58476D1CE4E5B9ull + 1;
}

// Fills an array with uniform values in [-a, a] (a = 1/sqrt(fan_in)); norm weights get 1.
void fill_random(Array& arr, float amp, uint64_t seed) {
  int64_t n = arr.size();
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    std::vector<float> tmp(std::min<int64_t>(e - b, 4096));
    for (int64_t s = b; s < e; s += static_cast<int64_t>(tmp.size())) {
      int64_t m = std::min<int64_t>(tmp.size(), e - s);
      uint64_t x = stream_start(seed, s);
      for (int64_t i = 0; i < m; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        tmp[i] = amp * (static_cast<float>(x >> 40) / static_cast<float>(1ull << 24) * 2.0f - 1.0f);
      }
      convert_span(tmp.data(), Dtype::f32, static_cast<uint8_t*>(arr.raw_data()) + s * arr.itemsize(), arr.dtype(), m);
    }
  });
}

// Fills a uint32 array with random bits: every bit pattern is a valid packed affine weight.
void fill_random_bits(Array& arr, uint64_t seed) {
  auto* out = arr.data<uint32_t>();
  parallel_for(arr.size(), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; s += 4096) {
      uint64_t x = stream_start(seed, s);
      for (int64_t i = s, m = std::min<int64_t>(e, s + 4096); i < m; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        out[i] = static_cast<uint32_t>(x >> 16);
      }
    }
  });
}

void fill_constant(Array& arr, float v) {
  std::vector<float> vals(arr.size(), v);
  convert_span(vals.data(), Dtype::f32, arr.raw_data(), arr.dtype(), arr.size());
}

// One tensor to write and how to fill it.
struct Plan {
  enum Kind { kDense, kOnes, kBits, kConst } kind;
  std::string name;
  Shape shape;
  Dtype dtype;
  float value = 0;  // amplitude (kDense) or the constant (kConst)
  uint64_t seed = 0;
};

// The affine layer's packed weight, scales and biases: q uniform over [0, 2^bits) dequantizes to
// scale * q + bias, uniform over [-amp, amp] like the dense weights (amp = 1/sqrt(in)).
void plan_quantized(std::vector<Plan>& out, const std::string& path, Shape rows, int64_t in, const QuantSpec& spec,
                    Dtype dt, uint64_t seed) {
  float amp = 1.0f / std::sqrt(static_cast<float>(in));
  float levels = static_cast<float>((1 << spec.bits) - 1);
  Shape w = rows, s = rows;
  w.push_back(in * spec.bits / 32);
  s.push_back(in / spec.group_size);
  out.push_back({Plan::kBits, path + ".weight", w, Dtype::u32, 0, seed});
  out.push_back({Plan::kConst, path + ".scales", s, dt, 2.0f * amp / levels, 0});
  out.push_back({Plan::kConst, path + ".biases", s, dt, -amp, 0});
}

nlohmann::json spec_json(const QuantSpec& q) {
  return {{"group_size", q.group_size}, {"bits", q.bits}, {"mode", std::string(quant_mode_name(q.mode))}};
}

// Writes the planned tensors in shards of at most 5 GiB (model.safetensors, or
// model-0000i-of-0000n.safetensors) plus model.safetensors.index.json, as mlx-lm's save does; each
// shard is filled, written and freed before the next, so memory stays at one shard.
void write_shards(const fs::path& dir, const std::vector<Plan>& plans, const std::string& format) {
  const uint64_t max_bytes = uint64_t{5} << 30;
  std::vector<std::vector<const Plan*>> shards(1);
  uint64_t shard_size = 0, total = 0;
  for (const Plan& p : plans) {
    uint64_t b = static_cast<uint64_t>(shape_size(p.shape)) * size_of(p.dtype);
    if (shard_size + b > max_bytes && !shards.back().empty()) shards.emplace_back(), shard_size = 0;
    shards.back().push_back(&p);
    shard_size += b;
    total += b;
  }
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::json::object();
  size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    if (n > 1)
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    else
      std::snprintf(name, sizeof name, "model.safetensors");
    std::vector<std::pair<std::string, Array>> tensors;
    for (const Plan* p : shards[i]) {
      Array a = Array::empty(p->shape, p->dtype);
      switch (p->kind) {
        case Plan::kDense:
          fill_random(a, p->value, p->seed);
          break;
        case Plan::kOnes:
          fill_constant(a, 1.0f);
          break;
        case Plan::kBits:
          fill_random_bits(a, p->seed);
          break;
        case Plan::kConst:
          fill_constant(a, p->value);
          break;
      }
      tensors.emplace_back(p->name, a);
      index["weight_map"][p->name] = name;
    }
    io::save_safetensors((dir / name).string(), tensors, {{"format", format}});
    std::fprintf(stderr, "\r[random-model] wrote shard %zu/%zu", i + 1, n);
  }
  std::fprintf(stderr, "\n");
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(4) << "\n";
}

}  // namespace

void add_random_model_command(CLI::App& app) {
  struct Opts {
    std::string preset = "llama-3.2-1b", out, dtype = "bfloat16";
    int q_bits = 0, q_group_size = 64;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("random-model", "Write a random-weight model at the dimensions of a known model");
  cmd->add_option("--preset", o->preset, preset_names());
  cmd->add_option("--out", o->out, "Output folder (must not exist)")->required();
  cmd->add_option("--dtype", o->dtype,
                  "Weight dtype (quantized: of scales/biases): bfloat16 (default), float16, float32");
  cmd->add_option("--q-bits", o->q_bits, "Write MLX affine quantized weights with this many bits (2-6, 8; 0 = dense)");
  cmd->add_option("--q-group-size", o->q_group_size, "Group size of the quantized weights: 32, 64 (default), 128");
  cmd->add_flag("--force", o->force, "Replace an existing output folder written by this command");
  cmd->callback([o] {
    auto it = presets().find(o->preset);
    if (it == presets().end())
      throw ValueError(format_error("random-model", "unknown preset '" + o->preset + "' (" + preset_names() + ")"));
    if (fs::exists(o->out) && !o->force)
      throw IoError(format_error("random-model", "'" + o->out + "' exists; pass --force to replace it"));
    Dtype dt = dtype_from_name(o->dtype);
    io::Config cfg = io::Config::parse(it->second, o->preset);
    nlohmann::json config = nlohmann::json::parse(cfg.dump());
    auto model = models::create_model(cfg);

    // Which layers are quantized and how: as mlx_lm.convert (models::quantize_model applies the
    // model's quant predicate, e.g. qwen3_moe's router gates at 8 bits), with the per-layer formats
    // other than the base one recorded in config["quantization"] as convert records them.
    std::map<std::string, QuantSpec> qlayers;
    std::map<std::string, int64_t> input_size;
    if (o->q_bits) {
      QuantSpec spec{QuantMode::affine, o->q_bits, o->q_group_size};
      if (!quant_spec_valid(spec))
        throw ValueError(format_error("random-model", "unsupported quantization " + quant_spec_str(spec)));
      config["quantization"] = spec_json(spec);
      for (const auto& [path, s] : models::quantize_model(*model, spec)) {
        nlohmann::json j = {{"group_size", s.group_size}, {"bits", s.bits}};
        if (s.mode != QuantMode::affine)
          throw ValueError(format_error(
              "random-model", "'" + path + "' asks for " + quant_spec_str(s) + "; only affine layers can be written"));
        config["quantization"][path] = j;
      }
      config["quantization_config"] = config["quantization"];
      for (auto& [path, mod] : model->modules())
        if (auto* q = dynamic_cast<nn::Quantizable*>(mod); q && q->quantized()) {
          qlayers[path] = q->quantized()->spec;
          input_size[path] = q->quant_axis_size();
        }
    }

    std::vector<Plan> plans;
    uint64_t seed = 1;
    for (auto& p : model->parameters()) {
      std::string layer = p.path.substr(0, p.path.rfind('.'));
      std::string leaf = p.path.substr(p.path.rfind('.') + 1);
      auto q = qlayers.find(layer);
      if (q != qlayers.end() && (leaf == "weight" || leaf == "scales" || leaf == "biases")) {
        if (leaf != "weight") continue;  // planned with the weight
        Shape rows(p.shape.begin(), p.shape.end() - 1);
        plan_quantized(plans, layer, rows, input_size.at(layer), q->second, dt, seed++);
        continue;
      }
      if (p.path.find("norm") != std::string::npos) {
        plans.push_back({Plan::kOnes, p.path, p.shape, dt, 0, 0});
      } else {
        plans.push_back(
            {Plan::kDense, p.path, p.shape, dt, 1.0f / std::sqrt(static_cast<float>(p.shape.back())), seed++});
      }
    }

    if (fs::exists(o->out)) {
      if (!fs::exists(fs::path(o->out) / "config.json"))
        throw IoError(format_error("random-model", "'" + o->out + "' has no config.json; not replacing it"));
      fs::remove_all(o->out);
    }
    fs::create_directories(o->out);
    write_shards(o->out, plans, o->q_bits ? "mlx" : "pt");  // metadata as mlx-lm / transformers write it
    std::ofstream(fs::path(o->out) / "config.json") << config.dump(2) << "\n";
    std::string what = o->q_bits ? "affine " + std::to_string(o->q_bits) + "-bit g" + std::to_string(o->q_group_size) +
                                       ", " + o->dtype + " scales"
                                 : o->dtype;
    std::printf("wrote %s (%s, %s)\n", o->out.c_str(), o->preset.c_str(), what.c_str());
  });
}

}  // namespace loom::cli
