// Lowercase normalizer: Rust's per-character char::to_lowercase (no final-sigma context).
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class Lowercase final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    text = map_chars(text, [](std::string& out, char32_t c, std::string_view) { unicode::append_lowercase(out, c); });
  }
};
}  // namespace

std::unique_ptr<Normalizer> make_lowercase(const Json&) { return std::make_unique<Lowercase>(); }

}  // namespace loom::tokenizer::detail
