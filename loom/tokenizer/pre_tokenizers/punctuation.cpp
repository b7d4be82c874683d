// Punctuation pre-tokenizer: splits on ASCII or Unicode (P*) punctuation with a split behaviour.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

bool is_bert_punctuation(char32_t c) {
  bool ascii = c < 0x80 && ((c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~'));
  return ascii || unicode::is_punctuation(c);
}

namespace {
class Punctuation final : public PreTokenizer {
 public:
  explicit Punctuation(SplitBehavior b) : behavior_(b) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces_by_char(pieces, behavior_, is_bert_punctuation);
  }

 private:
  SplitBehavior behavior_;
};
}  // namespace

std::unique_ptr<PreTokenizer> make_punctuation(const Json& j) {
  std::string b = j.contains("behavior") && j["behavior"].is_string() ? j["behavior"].get<std::string>() : "Isolated";
  return std::make_unique<Punctuation>(parse_split_behavior(b));
}

}  // namespace loom::tokenizer::detail
