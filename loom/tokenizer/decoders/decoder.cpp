// Decoder factory: dispatches a tokenizer.json "decoder" object on its "type".
#include <string>

#include "loom/common/error.h"
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

std::unique_ptr<Decoder> make_decoder(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = string_field(j, "type", "decoder");
  if (type == "ByteLevel") return make_byte_level_decoder(j);
  if (type == "Metaspace") return make_metaspace_decoder(j);
  if (type == "Replace") return make_replace_decoder(j);
  if (type == "ByteFallback") return make_byte_fallback(j);
  if (type == "Fuse") return make_fuse(j);
  if (type == "Strip") return make_strip_decoder(j);
  if (type == "WordPiece") return make_word_piece_decoder(j);
  if (type == "BPEDecoder") return make_bpe_decoder(j);
  if (type == "Sequence") return make_sequence_decoder(j);
  throw NotSupportedError(format_error("tokenizer", "unknown decoder type '" + type + "'"));
}

}  // namespace loom::tokenizer::detail
