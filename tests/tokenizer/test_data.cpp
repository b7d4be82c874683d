// Fixture locations and JSONL reading for the tokenizer tests.
#include "tests/tokenizer/test_data.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>

namespace loom::tokenizer::test {

std::string source_dir() { return std::string(LOOM_SOURCE_DIR) + "/tests/tokenizer"; }

std::string real_tokenizers_dir() {
  static std::once_flag once;
  static std::string dir;
  static std::string error;
  std::call_once(once, [] {
    const char* env = std::getenv("LOOM_TEST_TOKENIZERS");
    dir = env && *env ? env : std::string(LOOM_SOURCE_DIR) + "/.cache/tokenizers";
    bool complete = true;
    for (const auto& name : kRealTokenizers) {
      if (!std::filesystem::exists(dir + "/" + name + "/tokenizer.json")) complete = false;
    }
    if (complete) return;
    std::filesystem::create_directories(dir);
    std::string cmd = "flock '" + dir + "/.fetch.lock' '" + std::string(LOOM_SOURCE_DIR) +
                      "/scripts/fetch-test-tokenizers.sh' '" + dir + "' >/dev/null";
    if (std::system(cmd.c_str()) != 0) error = "fetching the test tokenizers failed: " + cmd;
  });
  if (!error.empty()) throw std::runtime_error(error);
  return dir;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(f);
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> v;
    for (const auto& j : read_jsonl(source_dir() + "/corpus.jsonl")) v.push_back(j.at("text").get<std::string>());
    return v;
  }();
  return lines;
}

}  // namespace loom::tokenizer::test
