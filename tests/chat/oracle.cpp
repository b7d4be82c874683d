#include "tests/chat/oracle.h"

#include <cstdlib>
#include <filesystem>

#include "loom/common/strings.h"

namespace loom::chat::testing {

std::string shared_templates_dir() { return std::string(LOOM_SOURCE_DIR) + "/../shared/chat-templates"; }

std::string tokenizers_dir() {
  if (const char* env = std::getenv("LOOM_TEST_TOKENIZERS")) return env;
  return std::string(LOOM_SOURCE_DIR) + "/.cache/tokenizers";
}

nlohmann::ordered_json load_oracle(const std::string& name) {
  std::string path = std::string(LOOM_BINARY_DIR) + "/tests/chat/" + name;
  if (!std::filesystem::exists(path))
    throw std::runtime_error(path + " is missing: run the tests through ctest (fixture chat_oracle), "
                             "which renders it with /usr/bin/python3 tests/chat/render_reference.py");
  return nlohmann::ordered_json::parse(loom::read_file(path));
}

std::tm fixed_now() {
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;  // July
  tm.tm_mday = 26;
  tm.tm_hour = 10;
  tm.tm_min = 30;
  tm.tm_sec = 0;
  tm.tm_wday = 5;    // Friday
  tm.tm_yday = 207;  // 31+29+31+30+31+30 days before July, plus 26, minus 1
  tm.tm_isdst = -1;
  return tm;
}

RenderOptions fixed_clock_options() {
  RenderOptions o;
  o.clock = fixed_now;
  return o;
}

std::string describe_diff(const std::string& expected, const std::string& actual) {
  std::size_t i = 0;
  while (i < expected.size() && i < actual.size() && expected[i] == actual[i]) ++i;
  auto excerpt = [&](const std::string& s) {
    std::size_t b = i >= 40 ? i - 40 : 0;
    return nlohmann::json(s.substr(b, 100)).dump();
  };
  return "first difference at byte " + std::to_string(i) + " (expected " + std::to_string(expected.size()) +
         " bytes, got " + std::to_string(actual.size()) + ")\n  expected: " + excerpt(expected) +
         "\n  actual:   " + excerpt(actual);
}

}  // namespace loom::chat::testing
