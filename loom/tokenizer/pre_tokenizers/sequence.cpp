// Sequence pre-tokenizer: applies its pre-tokenizers in order.
#include "loom/common/error.h"
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

namespace {
class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(const Json& j) {
    const Json& list = field(j, "pretokenizers", "Sequence pre_tokenizer");
    if (!list.is_array()) throw ValueError(format_error("tokenizer", "Sequence: 'pretokenizers' must be a list"));
    for (const Json& p : list) {
      if (auto step = make_pre_tokenizer(p)) steps_.push_back(std::move(step));
    }
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& s : steps_) s->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};
}  // namespace

std::unique_ptr<PreTokenizer> make_sequence_pre_tokenizer(const Json& j) {
  return std::make_unique<SequencePreTokenizer>(j);
}

}  // namespace loom::tokenizer::detail
