// WordLevel model: each pre-tokenized word is looked up whole; unknown words become unk.
#include "loom/common/error.h"
#include "loom/tokenizer/models/models.h"

namespace loom::tokenizer::detail {

namespace {
class WordLevel final : public Model {
 public:
  explicit WordLevel(const Json& j) {
    read_vocab_object(field(j, "vocab", "WordLevel"), vocab_, inverse_, present_, "WordLevel");
    unk_ = j.contains("unk_token") && j["unk_token"].is_string() ? j["unk_token"].get<std::string>() : "<unk>";
  }

  void tokenize(std::string_view w, std::vector<int32_t>& ids) const override {
    int32_t id = lookup(vocab_, w);
    if (id < 0) id = lookup(vocab_, unk_);
    if (id < 0) throw ValueError(format_error("tokenizer", "WordLevel: unk_token '" + unk_ + "' is not in the vocabulary"));
    ids.push_back(id);
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int32_t id = lookup(vocab_, token);
    return id < 0 ? std::nullopt : std::optional<int32_t>(id);
  }
  std::optional<std::string_view> id_to_token(int32_t id) const override { return inverse_lookup(inverse_, present_, id); }
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  VocabMap vocab_;
  std::vector<std::string> inverse_;
  std::vector<bool> present_;
  std::string unk_;
};
}  // namespace

std::unique_ptr<Model> make_word_level(const Json& j) { return std::make_unique<WordLevel>(j); }

}  // namespace loom::tokenizer::detail
