// Metaspace pre-tokenizer (SentencePiece style): spaces become the replacement character (▁),
// which is also prepended per prepend_scheme (always / first / never); optionally splits so each
// ▁ starts a new piece.
#include "loom/common/error.h"
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

namespace {
class Metaspace final : public PreTokenizer {
 public:
  explicit Metaspace(const Json& j) : split_(bool_field(j, "split", true)) {
    replacement_ = j.contains("replacement") && j["replacement"].is_string() ? j["replacement"].get<std::string>() : "\xE2\x96\x81";
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      std::string s = j["prepend_scheme"].get<std::string>();
      scheme_ = s == "always" ? 0 : s == "first" ? 1 : s == "never" ? 2 : -1;
      if (scheme_ < 0) throw ValueError(format_error("tokenizer", "Metaspace: unknown prepend_scheme '" + s + "'"));
    } else {
      scheme_ = bool_field(j, "add_prefix_space", true) ? 0 : 2;  // legacy field
    }
  }

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (Piece& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') {
          t += replacement_;
        } else {
          t.push_back(c);
        }
      }
      bool starts = t.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == 0 || (scheme_ == 1 && p.at_start))) t.insert(0, replacement_);
      p.text = std::move(t);
      if (split_) {
        split_piece(p, find_literal(p.text, replacement_), SplitBehavior::merged_with_next, /*invert=*/false, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  int scheme_ = 0;  // 0 always, 1 first, 2 never
  bool split_;
};
}  // namespace

std::unique_ptr<PreTokenizer> make_metaspace_pre_tokenizer(const Json& j) { return std::make_unique<Metaspace>(j); }

}  // namespace loom::tokenizer::detail
