// BertPreTokenizer: splits on whitespace (removed), then isolates each punctuation character.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

bool is_bert_punctuation(char32_t c);  // punctuation.cpp

namespace {
class BertPreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces_by_char(pieces, SplitBehavior::removed, [](char32_t c) { return unicode::is_whitespace(c); });
    split_pieces_by_char(pieces, SplitBehavior::isolated, is_bert_punctuation);
  }
};
}  // namespace

std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer(const Json&) { return std::make_unique<BertPreTokenizer>(); }

}  // namespace loom::tokenizer::detail
