// Metaspace decoder: the replacement character (▁) becomes a space; in the first token every ▁ is
// dropped instead (unless prepend_scheme is "never"), as HF does.
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
class MetaspaceDecoder final : public Decoder {
 public:
  explicit MetaspaceDecoder(const Json& j) {
    replacement_ = j.contains("replacement") && j["replacement"].is_string() ? j["replacement"].get<std::string>() : "\xE2\x96\x81";
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      never_ = j["prepend_scheme"].get<std::string>() == "never";
    } else {
      never_ = !bool_field(j, "add_prefix_space", true);
    }
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      std::string out;
      out.reserve(t.size());
      size_t len = 0;
      for (size_t k = 0; k < t.size(); k += len) {
        len = unicode::lead_len(static_cast<unsigned char>(t[k]));
        if (t.compare(k, len, replacement_) == 0 && len == replacement_.size()) {
          if (i != 0 || never_) out.push_back(' ');
        } else {
          out.append(t, k, len);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool never_ = false;
};
}  // namespace

std::unique_ptr<Decoder> make_metaspace_decoder(const Json& j) { return std::make_unique<MetaspaceDecoder>(j); }

}  // namespace loom::tokenizer::detail
