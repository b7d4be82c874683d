// Sequence normalizer: applies its normalizers in order.
#include "loom/common/error.h"
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(const Json& j) {
    const Json& list = field(j, "normalizers", "Sequence normalizer");
    if (!list.is_array()) throw ValueError(format_error("tokenizer", "Sequence: 'normalizers' must be a list"));
    for (const Json& n : list) {
      if (auto p = make_normalizer(n)) steps_.push_back(std::move(p));
    }
  }
  void normalize(std::string& text) const override {
    for (const auto& s : steps_) s->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};
}  // namespace

std::unique_ptr<Normalizer> make_sequence_normalizer(const Json& j) {
  return std::make_unique<SequenceNormalizer>(j);
}

}  // namespace loom::tokenizer::detail
