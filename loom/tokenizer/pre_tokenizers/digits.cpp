// Digits pre-tokenizer: isolates numeric characters, each alone or as contiguous runs.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

namespace {
class Digits final : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces_by_char(pieces, individual_ ? SplitBehavior::isolated : SplitBehavior::contiguous,
                         [](char32_t c) { return unicode::is_numeric(c); });
  }

 private:
  bool individual_;
};
}  // namespace

std::unique_ptr<PreTokenizer> make_digits(const Json& j) {
  return std::make_unique<Digits>(bool_field(j, "individual_digits", false));
}

}  // namespace loom::tokenizer::detail
