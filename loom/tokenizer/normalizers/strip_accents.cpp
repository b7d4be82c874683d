// StripAccents normalizer: drops combining marks (general category M*). Usually follows NFD.
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class StripAccents final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    text = map_chars(text, [](std::string& out, char32_t c, std::string_view raw) {
      if (!unicode::is_mark(c)) out += raw;
    });
  }
};
}  // namespace

std::unique_ptr<Normalizer> make_strip_accents(const Json&) { return std::make_unique<StripAccents>(); }

}  // namespace loom::tokenizer::detail
