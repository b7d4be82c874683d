// Replace normalizer: every match of a literal or regex pattern becomes `content`.
#include "loom/tokenizer/normalizers/normalizers.h"
#include "loom/tokenizer/regex.h"

namespace loom::tokenizer::detail {

namespace {
class Replace final : public Normalizer {
 public:
  explicit Replace(const Json& j) : content_(string_field(j, "content", "Replace")) {
    auto [pattern, is_regex] = pattern_field(j, "Replace");
    if (is_regex) {
      regex_ = std::make_unique<Regex>(pattern);
    } else {
      literal_ = pattern;
    }
  }
  void normalize(std::string& text) const override {
    auto matches = regex_ ? regex_->find_all(text) : find_literal(text, literal_);
    if (matches.empty()) return;
    std::string out;
    size_t prev = 0;
    for (auto [s, e] : matches) {
      out.append(text, prev, s - prev);
      out += content_;
      prev = e;
    }
    out.append(text, prev, std::string::npos);
    text = std::move(out);
  }

 private:
  std::string content_;
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};
}  // namespace

std::unique_ptr<Normalizer> make_replace(const Json& j) { return std::make_unique<Replace>(j); }

}  // namespace loom::tokenizer::detail
