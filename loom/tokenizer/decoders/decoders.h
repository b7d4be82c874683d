// Constructors of the decoders, one per JSON "type" (each defined in its own file).
#pragma once

#include <nlohmann/json.hpp>

#include "loom/tokenizer/components.h"

namespace loom::tokenizer::detail {

std::unique_ptr<Decoder> make_byte_level_decoder(const Json& j);
std::unique_ptr<Decoder> make_metaspace_decoder(const Json& j);
std::unique_ptr<Decoder> make_replace_decoder(const Json& j);
std::unique_ptr<Decoder> make_byte_fallback(const Json& j);
std::unique_ptr<Decoder> make_fuse(const Json& j);
std::unique_ptr<Decoder> make_strip_decoder(const Json& j);
std::unique_ptr<Decoder> make_word_piece_decoder(const Json& j);
std::unique_ptr<Decoder> make_bpe_decoder(const Json& j);
std::unique_ptr<Decoder> make_sequence_decoder(const Json& j);

}  // namespace loom::tokenizer::detail
