// Tokenizer benchmark (not a test): encode throughput on ~1 MB of mixed text (the test corpus
// repeated, one encode per line, single thread) and tokenizer.json load time, per tokenizer.
// Mirrors the HF measurement in tools/refgen/tokenizer_ref.py (bench()).
//   tokenizer_bench --real DIR --corpus tests/tokenizer/corpus.jsonl [--only NAME]
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "loom/tokenizer/tokenizer.h"

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

int main(int argc, char** argv) {
  std::string real, corpus_path, only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--real")) real = argv[i + 1];
    if (!std::strcmp(argv[i], "--corpus")) corpus_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
  }
  if (real.empty() || corpus_path.empty()) {
    std::fprintf(stderr, "usage: tokenizer_bench --real DIR --corpus FILE [--only NAME]\n");
    return 2;
  }
  std::vector<std::string> lines;
  {
    std::ifstream f(corpus_path);
    std::string l;
    while (std::getline(f, l)) {
      if (!l.empty()) lines.push_back(nlohmann::json::parse(l)["text"].get<std::string>());
    }
  }
  std::vector<std::string> text;
  size_t bytes = 0;
  while (bytes < 1000000) {
    for (const auto& l : lines) {
      text.push_back(l);
      bytes += l.size() + 1;
    }
  }
  std::printf("{\"bytes\": %zu, \"lines\": %zu, \"loom\": {\n", bytes, text.size());
  const char* names[] = {"llama2", "llama3", "qwen3", "gemma3", "deepseek_v3", "gptoss"};
  bool first = true;
  try {
    for (const char* name : names) {
      if (!only.empty() && only != name) continue;
      std::vector<double> loads;
      loom::tokenizer::Tokenizer* keep = nullptr;
      for (int r = 0; r < 5; ++r) {
        double t0 = now_s();
        auto* tok = new loom::tokenizer::Tokenizer(loom::tokenizer::Tokenizer::from_folder(real + "/" + name));
        loads.push_back(now_s() - t0);
        delete keep;
        keep = tok;
      }
      std::sort(loads.begin(), loads.end());
      double best = 1e9;
      size_t ntok = 0;
      for (int r = 0; r < 3; ++r) {
        double t0 = now_s();
        ntok = 0;
        for (const auto& l : text) ntok += keep->encode(l, /*add_special_tokens=*/false).size();
        best = std::min(best, now_s() - t0);
      }
      std::printf("%s \"%s\": {\"load_ms_median\": %.1f, \"encode_s\": %.4f, \"MB_per_s\": %.3f, \"tokens\": %zu}",
                  first ? "" : ",\n", name, loads[2] * 1e3, best, bytes / best / 1e6, ntok);
      std::fflush(stdout);
      first = false;
      delete keep;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::printf("\n}}\n");
  return 0;
}
