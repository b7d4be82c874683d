// NFC normalizer: Unicode normalization form NFC (utf8proc).
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class NFC final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    text = unicode::normalize(text, unicode::NormalForm::nfc);
  }
};
}  // namespace

std::unique_ptr<Normalizer> make_nfc(const Json&) { return std::make_unique<NFC>(); }

}  // namespace loom::tokenizer::detail
