// A small JSON scanner for the two big members of a BPE tokenizer.json ("model.vocab" and
// "model.merges", most of a 10-30 MB file): parsing them straight into the model's tables is
// several times faster than building an nlohmann DOM first. Everything else goes through
// nlohmann. Any surprise makes the caller fall back to plain nlohmann parsing.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom::tokenizer::detail {

class JsonScanner {
 public:
  explicit JsonScanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  // Each returns false (and leaves the scanner unusable) on malformed input.
  bool skip_ws();
  bool expect(char c);
  bool peek(char c);
  bool parse_string(std::string& out);
  bool parse_int(long long& out);
  // Skips one value; sets span to its raw text.
  bool skip_value(std::string_view& span);

 private:
  bool skip_string();
  const char* p_;
  const char* end_;
};

// The raw text of each member of a JSON object, in order. False when text is not an object.
bool split_object(std::string_view text, std::vector<std::pair<std::string, std::string_view>>& members);

}  // namespace loom::tokenizer::detail
