// BertNormalizer: BERT's cleanup (drop controls, map whitespace to ' '), spaces around CJK
// ideographs, accent stripping (NFD then drop Mn) and lowercasing, in HF's order.
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

class BertNormalizer final : public Normalizer {
 public:
  explicit BertNormalizer(const Json& j)
      : clean_text_(bool_field(j, "clean_text", true)),
        chinese_(bool_field(j, "handle_chinese_chars", true)),
        lowercase_(bool_field(j, "lowercase", true)),
        strip_accents_(bool_field(j, "strip_accents", lowercase_)) {}

  void normalize(std::string& text) const override {
    if (clean_text_) {
      text = map_chars(text, [](std::string& out, char32_t c, std::string_view raw) {
        // HF filters first (controls other than \t \n \r go, so U+0085 is dropped, not
        // turned into a space), then maps the remaining whitespace to ' '.
        bool tab_nl_cr = c == '\t' || c == '\n' || c == '\r';
        if (c == 0 || c == 0xFFFD || (!tab_nl_cr && unicode::is_other(c))) return;
        if (tab_nl_cr || unicode::is_whitespace(c)) {
          out.push_back(' ');
        } else {
          out += raw;
        }
      });
    }
    if (chinese_) {
      text = map_chars(text, [](std::string& out, char32_t c, std::string_view raw) {
        if (is_chinese_char(c)) {
          out.push_back(' ');
          out += raw;
          out.push_back(' ');
        } else {
          out += raw;
        }
      });
    }
    if (strip_accents_) {
      text = map_chars(unicode::normalize(text, unicode::NormalForm::nfd),
                       [](std::string& out, char32_t c, std::string_view raw) {
                         if (!unicode::is_mark_nonspacing(c)) out += raw;
                       });
    }
    if (lowercase_) {
      text = map_chars(text, [](std::string& out, char32_t c, std::string_view) { unicode::append_lowercase(out, c); });
    }
  }

 private:
  bool clean_text_, chinese_, lowercase_, strip_accents_;
};
}  // namespace

std::unique_ptr<Normalizer> make_bert_normalizer(const Json& j) { return std::make_unique<BertNormalizer>(j); }

}  // namespace loom::tokenizer::detail
