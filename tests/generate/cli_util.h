// Shared by the generation tests: a tiny random llama with the real Qwen3 tokenizer (fetched by the
// tokenizer_data fixture), a greedy oracle by full recompute, and a runner for the loom binary.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "loom/generate/session.h"
#include "loom/io/config.h"
#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "loom/ops/ops.h"

namespace loom::gentest {

namespace fs = std::filesystem;

// ctest -j runs each test in its own process: scratch paths carry the pid so processes never share them.
inline std::string scratch(const std::string& name) {
  return std::string(LOOM_BINARY_DIR) + "/" + name + "_" + std::to_string(::getpid());
}

inline const std::string kTokDir = std::string(LOOM_SOURCE_DIR) + "/.cache/tokenizers/qwen3";

// Writes (once per head dim) a 2-layer llama with random f32 weights, the Qwen3 tokenizer beside it.
// The default head dim 16 is below every KV-cache group size (32/64/128): --kv-bits tests use 64.
inline std::string tiny_model(int head_dim = 16) {
  static std::map<int, std::string> dirs;
  if (auto it = dirs.find(head_dim); it != dirs.end()) return it->second;
  std::string dir = [head_dim] {
    if (!fs::exists(kTokDir + "/tokenizer.json"))
      std::system(("'" + std::string(LOOM_SOURCE_DIR) + "/scripts/fetch-test-tokenizers.sh' '" +
                   std::string(LOOM_SOURCE_DIR) + "/.cache/tokenizers' >/dev/null 2>&1").c_str());
    auto tok = tokenizer::Tokenizer::from_folder(kTokDir);
    std::string d = scratch("test_generate_tiny_llama" + (head_dim == 16 ? std::string() : std::to_string(head_dim)));
    fs::remove_all(d);
    fs::create_directories(d);
    std::string cfg_text = R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": )" +
                           std::to_string(head_dim) + R"(, "vocab_size": )" + std::to_string(tok.vocab_size()) +
                           R"(, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
      "tie_word_embeddings": true})";
    io::Config cfg = io::Config::parse(cfg_text);
    auto model = models::create_model(cfg);
    std::vector<std::pair<std::string, Array>> tensors;
    uint64_t x = 88172645463325252ull;
    for (auto& p : model->parameters()) {
      std::vector<float> v(shape_size(p.shape), 1.0f);
      if (p.path.find("norm") == std::string::npos)
        for (auto& f : v) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          f = (static_cast<float>(x >> 40) / 16777216.0f * 2 - 1) * (p.path.find("embed") != std::string::npos ? 1.0f : 0.4f);
        }
      tensors.emplace_back(p.path, Array::from(v, p.shape));
    }
    io::save_safetensors(d + "/model.safetensors", tensors);
    std::ofstream(d + "/config.json") << cfg.dump(2);
    for (auto& f : fs::directory_iterator(kTokDir)) fs::copy_file(f.path(), d + "/" + f.path().filename().string());
    return d;
  }();
  dirs[head_dim] = dir;
  return dir;
}

// Greedy continuation by full recompute: each step runs the whole sequence from an empty cache.
inline std::vector<int32_t> oracle_greedy(models::LanguageModel& m, std::vector<int32_t> seq, int n,
                                   const std::set<int32_t>& eos) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    models::Cache c = m.make_cache();
    int64_t L = static_cast<int64_t>(seq.size());
    Array logits = m.forward(Array::from(seq, {1, L}), c, models::LogitsMode::all);
    auto v = slice_axis(reshape(logits, {L, logits.shape(-1)}), 0, L - 1, L).to_float_vector();
    std::vector<float> sorted = v;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    EXPECT_GT(sorted[0] - sorted[1], 1e-3f) << "top-1/top-2 margin too small for a stable greedy oracle";
    int32_t id = static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
    if (eos.count(id)) break;
    out.push_back(id);
    seq.push_back(id);
  }
  return out;
}

struct CliRun {
  int rc;
  std::string out, err;
};
// Runs the loom binary with `args`; `env` ("NAME=value ... ") prefixes the command.
inline CliRun run_cli(const std::string& args, const std::string& env = "") {
  std::string base = scratch("test_generate_cli");
  int rc = std::system((env + std::string(LOOM_CLI_PATH) + " " + args + " >" + base + ".out 2>" + base + ".err").c_str());
  auto slurp = [](const std::string& p) {
    std::stringstream ss;
    ss << std::ifstream(p, std::ios::binary).rdbuf();
    return ss.str();
  };
  return {rc, slurp(base + ".out"), slurp(base + ".err")};
}

inline generate::ModelSession& session() {
  static generate::ModelSession s = generate::load_session(tiny_model(), {});
  return s;
}

}  // namespace loom::gentest
