// Whitespace pre-tokenizer: HF's regex \w+|[^\w\s]+ (runs of word characters, runs of other
// non-space characters), implemented as a character-class scan.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

namespace {
class Whitespace final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& p : pieces) {
      // 0 = space, 1 = word, 2 = other; a run of one class (1 or 2) is one piece.
      size_t len = 0, run_start = 0;
      int run_class = 0;
      for (size_t i = 0; i <= p.text.size(); i += len) {
        int cls = 0;
        if (i < p.text.size()) {
          char32_t c = unicode::decode(p.text, i, &len);
          cls = unicode::is_word(c) ? 1 : unicode::is_whitespace(c) ? 0 : 2;
        } else {
          len = 1;
        }
        if (cls != run_class || i == p.text.size()) {
          if (run_class != 0 && i > run_start) out.push_back(Piece{p.text.substr(run_start, i - run_start), p.at_start && run_start == 0});
          run_start = i;
          run_class = cls;
        }
      }
    }
    pieces = std::move(out);
  }
};
}  // namespace

std::unique_ptr<PreTokenizer> make_whitespace(const Json&) { return std::make_unique<Whitespace>(); }

}  // namespace loom::tokenizer::detail
