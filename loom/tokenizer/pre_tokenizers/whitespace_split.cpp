// WhitespaceSplit pre-tokenizer: splits on White_Space characters, which are removed.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

namespace {
class WhitespaceSplit final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces_by_char(pieces, SplitBehavior::removed, [](char32_t c) { return unicode::is_whitespace(c); });
  }
};
}  // namespace

std::unique_ptr<PreTokenizer> make_whitespace_split(const Json&) { return std::make_unique<WhitespaceSplit>(); }

}  // namespace loom::tokenizer::detail
