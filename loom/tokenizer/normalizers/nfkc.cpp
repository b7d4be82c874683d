// NFKC normalizer: Unicode normalization form NFKC (utf8proc).
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class NFKC final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    text = unicode::normalize(text, unicode::NormalForm::nfkc);
  }
};
}  // namespace

std::unique_ptr<Normalizer> make_nfkc(const Json&) { return std::make_unique<NFKC>(); }

}  // namespace loom::tokenizer::detail
