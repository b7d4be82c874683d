// Strip normalizer: removes leading and/or trailing White_Space characters.
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size(), len = 0;
    if (left_) {
      while (begin < end && unicode::is_whitespace(unicode::decode(text, begin, &len))) begin += len;
    }
    if (right_) {
      while (end > begin) {
        size_t s = end - 1;
        while (s > begin && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        if (!unicode::is_whitespace(unicode::decode(text, s, &len))) break;
        end = s;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};
}  // namespace

std::unique_ptr<Normalizer> make_strip(const Json& j) {
  return std::make_unique<Strip>(bool_field(j, "strip_left", true), bool_field(j, "strip_right", true));
}

}  // namespace loom::tokenizer::detail
