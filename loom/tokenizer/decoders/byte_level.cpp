// ByteLevel decoder: maps byte-level alphabet characters back to bytes (a token holding any other
// character contributes its raw UTF-8), then decodes lossily (invalid UTF-8 -> U+FFFD).
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string tok_bytes;
    for (const std::string& t : tokens) {
      tok_bytes.clear();
      bool ok = true;
      size_t len = 0;
      for (size_t i = 0; i < t.size(); i += len) {
        int b = char_to_byte(unicode::decode(t, i, &len));
        if (b < 0) {
          ok = false;
          break;
        }
        tok_bytes.push_back(char(b));
      }
      bytes += ok ? tok_bytes : t;
    }
    tokens.assign(1, unicode::from_utf8_lossy(bytes));
  }
};
}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder(const Json&) { return std::make_unique<ByteLevelDecoder>(); }

}  // namespace loom::tokenizer::detail
