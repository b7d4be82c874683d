// NFKD normalizer: Unicode normalization form NFKD (utf8proc).
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class NFKD final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    text = unicode::normalize(text, unicode::NormalForm::nfkd);
  }
};
}  // namespace

std::unique_ptr<Normalizer> make_nfkd(const Json&) { return std::make_unique<NFKD>(); }

}  // namespace loom::tokenizer::detail
