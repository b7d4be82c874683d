// WordPiece decoder: tokens after the first lose their "##" prefix or gain a leading space; the
// optional cleanup undoes BERT's spacing around punctuation and English contractions.
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : find_literal(s, from)) {
    out.append(s, prev, b - prev);
    out += to;
    prev = e;
  }
  out.append(s, prev, std::string::npos);
  s = std::move(out);
}

class WordPieceDecoder final : public Decoder {
 public:
  explicit WordPieceDecoder(const Json& j) : cleanup_(bool_field(j, "cleanup", true)) {
    prefix_ = j.contains("prefix") && j["prefix"].is_string() ? j["prefix"].get<std::string>() : "##";
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0) {
          t.erase(0, prefix_.size());
        } else {
          t.insert(0, " ");
        }
      }
      if (cleanup_) {
        static const std::pair<std::string_view, std::string_view> rules[] = {
            {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
            {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
        for (auto [from, to] : rules) replace_all(t, from, to);
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};
}  // namespace

std::unique_ptr<Decoder> make_word_piece_decoder(const Json& j) { return std::make_unique<WordPieceDecoder>(j); }

}  // namespace loom::tokenizer::detail
