// Strip decoder: removes up to `start` leading and `stop` trailing `content` characters per token.
// loom: HF panics on an empty token when stop > 0; loom leaves it empty.
#include "loom/common/error.h"
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
class StripDecoder final : public Decoder {
 public:
  explicit StripDecoder(const Json& j) {
    std::string c = string_field(j, "content", "Strip decoder");
    size_t len = 0;
    if (c.empty() || (content_ = unicode::decode(c, 0, &len), len != c.size())) {
      throw ValueError(format_error("tokenizer", "Strip decoder: 'content' must be one character"));
    }
    start_ = j.contains("start") && j["start"].is_number_unsigned() ? j["start"].get<size_t>() : 0;
    stop_ = j.contains("stop") && j["stop"].is_number_unsigned() ? j["stop"].get<size_t>() : 0;
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // byte offset, code point
      size_t len = 0;
      for (size_t i = 0; i < t.size(); i += len) chars.emplace_back(i, unicode::decode(t, i, &len));
      size_t begin = 0, end = chars.size();
      for (size_t i = 0; i < std::min(start_, chars.size()) && chars[i].second == content_; ++i) begin = i + 1;
      for (size_t i = 0; i < std::min(stop_, chars.size()) && chars[chars.size() - 1 - i].second == content_; ++i) {
        end = chars.size() - 1 - i;
      }
      if (end < begin) end = begin;
      size_t b = begin < chars.size() ? chars[begin].first : t.size();
      size_t e = end < chars.size() ? chars[end].first : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_ = ' ';
  size_t start_ = 0, stop_ = 0;
};
}  // namespace

std::unique_ptr<Decoder> make_strip_decoder(const Json& j) { return std::make_unique<StripDecoder>(j); }

}  // namespace loom::tokenizer::detail
