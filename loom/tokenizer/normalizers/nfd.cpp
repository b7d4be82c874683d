// NFD normalizer: Unicode normalization form NFD (utf8proc).
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class NFD final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    text = unicode::normalize(text, unicode::NormalForm::nfd);
  }
};
}  // namespace

std::unique_ptr<Normalizer> make_nfd(const Json&) { return std::make_unique<NFD>(); }

}  // namespace loom::tokenizer::detail
