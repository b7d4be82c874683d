// ByteLevel pre-tokenizer (GPT-2): optional prefix space, optional split with GPT-2's regex, then
// every byte is replaced by its stand-in character of the byte-level alphabet.
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"
#include "loom/tokenizer/regex.h"

namespace loom::tokenizer::detail {

namespace {
const Regex& gpt2_regex() {
  static const Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return re;
}

class ByteLevel final : public PreTokenizer {
 public:
  explicit ByteLevel(const Json& j)
      : add_prefix_space_(bool_field(j, "add_prefix_space", true)), use_regex_(bool_field(j, "use_regex", true)) {}

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> split;
    split.reserve(pieces.size());
    for (Piece& p : pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (use_regex_) {
        split_piece(p, gpt2_regex().find_all(p.text), SplitBehavior::isolated, /*invert=*/false, split);
      } else if (!p.text.empty()) {
        split.push_back(std::move(p));
      }
    }
    for (Piece& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char b : p.text) mapped += byte_to_char(b);
      p.text = std::move(mapped);
    }
    pieces = std::move(split);
  }

 private:
  bool add_prefix_space_, use_regex_;
};
}  // namespace

std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(const Json& j) { return std::make_unique<ByteLevel>(j); }

}  // namespace loom::tokenizer::detail
