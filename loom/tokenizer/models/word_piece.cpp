// WordPiece model (BERT): greedy longest-match-first; pieces after the first carry the
// continuing_subword_prefix (##); a word with no full segmentation, or longer than
// max_input_chars_per_word characters, becomes a single unk.
#include "loom/common/error.h"
#include "loom/tokenizer/models/models.h"

namespace loom::tokenizer::detail {

namespace {
class WordPiece final : public Model {
 public:
  explicit WordPiece(const Json& j) {
    read_vocab_object(field(j, "vocab", "WordPiece"), vocab_, inverse_, present_, "WordPiece");
    unk_ = j.contains("unk_token") && j["unk_token"].is_string() ? j["unk_token"].get<std::string>() : "[UNK]";
    prefix_ = j.contains("continuing_subword_prefix") && j["continuing_subword_prefix"].is_string()
                  ? j["continuing_subword_prefix"].get<std::string>()
                  : "##";
    if (j.contains("max_input_chars_per_word") && j["max_input_chars_per_word"].is_number_unsigned()) {
      max_chars_ = j["max_input_chars_per_word"].get<size_t>();
    }
  }

  void tokenize(std::string_view w, std::vector<int32_t>& ids) const override {
    size_t chars = 0, len = 0;
    std::vector<size_t> bounds;  // char boundaries
    for (size_t i = 0; i < w.size(); i += len) {
      len = unicode::lead_len(static_cast<unsigned char>(w[i]));
      bounds.push_back(i);
      ++chars;
    }
    bounds.push_back(w.size());
    if (chars > max_chars_) return push_unk(ids);
    std::vector<int32_t> out;
    std::string cand;
    size_t start = 0;  // index into bounds
    while (start + 1 < bounds.size()) {
      int32_t found = -1;
      size_t end = bounds.size() - 1;
      for (; end > start; --end) {
        cand.clear();
        if (start > 0) cand += prefix_;
        cand.append(w.substr(bounds[start], bounds[end] - bounds[start]));
        found = lookup(vocab_, cand);
        if (found >= 0) break;
      }
      if (found < 0) return push_unk(ids);
      out.push_back(found);
      start = end;
    }
    ids.insert(ids.end(), out.begin(), out.end());
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int32_t id = lookup(vocab_, token);
    return id < 0 ? std::nullopt : std::optional<int32_t>(id);
  }
  std::optional<std::string_view> id_to_token(int32_t id) const override { return inverse_lookup(inverse_, present_, id); }
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  void push_unk(std::vector<int32_t>& ids) const {
    int32_t id = lookup(vocab_, unk_);
    if (id < 0) throw ValueError(format_error("tokenizer", "WordPiece: unk_token '" + unk_ + "' is not in the vocabulary"));
    ids.push_back(id);
  }

  VocabMap vocab_;
  std::vector<std::string> inverse_;
  std::vector<bool> present_;
  std::string unk_, prefix_;
  size_t max_chars_ = 100;
};
}  // namespace

std::unique_ptr<Model> make_word_piece(const Json& j) { return std::make_unique<WordPiece>(j); }

}  // namespace loom::tokenizer::detail
