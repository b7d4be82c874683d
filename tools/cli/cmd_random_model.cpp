// `loom random-model`: writes a random-weight checkpoint at the real dimensions of a known model
// (config.json + model.safetensors), so benchmarks need no download.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/io/config.h"
#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "tools/cli/commands.h"

namespace loom::cli {
namespace {

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
  };
  return p;
}

// Fills an array with uniform values in [-a, a] (a = 1/sqrt(fan_in)); norm weights get 1.
void fill_random(Array& arr, float amp, uint64_t seed) {
  int64_t n = arr.size();
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    std::vector<float> tmp(std::min<int64_t>(e - b, 4096));
    for (int64_t s = b; s < e; s += static_cast<int64_t>(tmp.size())) {
      int64_t m = std::min<int64_t>(tmp.size(), e - s);
      uint64_t x = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(s) * 0xBF58476D1CE4E5B9ull + 1;
      for (int64_t i = 0; i < m; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        tmp[i] = amp * (static_cast<float>(x >> 40) / static_cast<float>(1ull << 24) * 2.0f - 1.0f);
      }
      convert_span(tmp.data(), Dtype::f32, static_cast<uint8_t*>(arr.raw_data()) + s * arr.itemsize(), arr.dtype(), m);
    }
  });
}

}  // namespace

void add_random_model_command(CLI::App& app) {
  struct Opts {
    std::string preset = "llama-3.2-1b", out, dtype = "bfloat16";
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("random-model", "Write a random-weight model at the dimensions of a known model");
  cmd->add_option("--preset", o->preset, "llama-3.2-1b | llama-3.1-8b | qwen3-0.6b");
  cmd->add_option("--out", o->out, "Output folder (must not exist)")->required();
  cmd->add_option("--dtype", o->dtype, "Weight dtype: bfloat16 (default), float16, float32");
  cmd->add_flag("--force", o->force, "Replace an existing output folder written by this command");
  cmd->callback([o] {
    auto it = presets().find(o->preset);
    if (it == presets().end()) throw ValueError(format_error("random-model", "unknown preset '" + o->preset + "'"));
    namespace fs = std::filesystem;
    if (fs::exists(o->out) && !o->force)
      throw IoError(format_error("random-model", "'" + o->out + "' exists; pass --force to replace it"));
    Dtype dt = dtype_from_name(o->dtype);
    io::Config cfg = io::Config::parse(it->second, o->preset);
    auto model = models::create_model(cfg);
    std::vector<std::pair<std::string, Array>> tensors;
    uint64_t seed = 1;
    for (auto& p : model->parameters()) {
      Array a = Array::empty(p.shape, dt);
      bool norm = p.path.find("norm") != std::string::npos;
      if (norm) {
        std::vector<float> ones(a.size(), 1.0f);
        convert_span(ones.data(), Dtype::f32, a.raw_data(), dt, a.size());
      } else {
        fill_random(a, 1.0f / std::sqrt(static_cast<float>(p.shape.back())), seed++);
      }
      tensors.emplace_back(p.path, a);
    }
    fs::create_directories(o->out);
    io::save_safetensors(o->out + "/model.safetensors", tensors, {{"format", "pt"}});
    std::ofstream(o->out + "/config.json") << cfg.dump(2) << "\n";
    std::printf("wrote %s (%s, %s)\n", o->out.c_str(), o->preset.c_str(), o->dtype.c_str());
  });
}

}  // namespace loom::cli
