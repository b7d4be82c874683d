// Split pre-tokenizer: splits on a literal or regex pattern with one of HF's five behaviours,
// optionally inverting which parts count as delimiters.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"
#include "loom/tokenizer/regex.h"

namespace loom::tokenizer::detail {

namespace {
class Split final : public PreTokenizer {
 public:
  explicit Split(const Json& j)
      : behavior_(parse_split_behavior(string_field(j, "behavior", "Split"))), invert_(bool_field(j, "invert", false)) {
    auto [pattern, is_regex] = pattern_field(j, "Split");
    if (is_regex) {
      regex_ = std::make_unique<Regex>(pattern);
    } else {
      literal_ = pattern;
    }
  }

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const Piece& p : pieces) {
      auto matches = regex_ ? regex_->find_all(p.text) : find_literal(p.text, literal_);
      split_piece(p, matches, behavior_, invert_, out);
    }
    pieces = std::move(out);
  }

 private:
  SplitBehavior behavior_;
  bool invert_;
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};
}  // namespace

std::unique_ptr<PreTokenizer> make_split(const Json& j) { return std::make_unique<Split>(j); }

}  // namespace loom::tokenizer::detail
