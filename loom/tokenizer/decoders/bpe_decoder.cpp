// BPEDecoder: the end-of-word suffix (e.g. </w>) becomes a space, or nothing in the last token.
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
class BpeDecoder final : public Decoder {
 public:
  explicit BpeDecoder(const Json& j) {
    suffix_ = j.contains("suffix") && j["suffix"].is_string() ? j["suffix"].get<std::string>() : "</w>";
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      std::string_view rep = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      size_t prev = 0;
      for (auto [b, e] : find_literal(t, suffix_)) {
        out.append(t, prev, b - prev);
        out += rep;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string suffix_;
};
}  // namespace

std::unique_ptr<Decoder> make_bpe_decoder(const Json& j) { return std::make_unique<BpeDecoder>(j); }

}  // namespace loom::tokenizer::detail
