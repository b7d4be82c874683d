// Prepend normalizer: puts a fixed string in front of any non-empty text.
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string p) : prepend_(std::move(p)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};
}  // namespace

std::unique_ptr<Normalizer> make_prepend(const Json& j) {
  return std::make_unique<Prepend>(string_field(j, "prepend", "Prepend"));
}

}  // namespace loom::tokenizer::detail
