// Replace decoder: replaces a literal or regex pattern inside each token.
#include "loom/tokenizer/decoders/decoders.h"
#include "loom/tokenizer/regex.h"

namespace loom::tokenizer::detail {

namespace {
class ReplaceDecoder final : public Decoder {
 public:
  explicit ReplaceDecoder(const Json& j) : content_(string_field(j, "content", "Replace decoder")) {
    auto [pattern, is_regex] = pattern_field(j, "Replace decoder");
    if (is_regex) {
      regex_ = std::make_unique<Regex>(pattern);
    } else {
      literal_ = pattern;
    }
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      auto matches = regex_ ? regex_->find_all(t) : find_literal(t, literal_);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (auto [s, e] : matches) {
        out.append(t, prev, s - prev);
        out += content_;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string content_, literal_;
  std::unique_ptr<Regex> regex_;
};
}  // namespace

std::unique_ptr<Decoder> make_replace_decoder(const Json& j) { return std::make_unique<ReplaceDecoder>(j); }

}  // namespace loom::tokenizer::detail
