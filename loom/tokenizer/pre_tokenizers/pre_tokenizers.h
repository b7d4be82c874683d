// Constructors of the pre-tokenizers, one per JSON "type" (each defined in its own file).
#pragma once

#include <nlohmann/json.hpp>

#include "loom/tokenizer/components.h"

namespace loom::tokenizer::detail {

std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(const Json& j);
std::unique_ptr<PreTokenizer> make_split(const Json& j);
std::unique_ptr<PreTokenizer> make_metaspace_pre_tokenizer(const Json& j);
std::unique_ptr<PreTokenizer> make_whitespace(const Json& j);
std::unique_ptr<PreTokenizer> make_whitespace_split(const Json& j);
std::unique_ptr<PreTokenizer> make_punctuation(const Json& j);
std::unique_ptr<PreTokenizer> make_digits(const Json& j);
std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer(const Json& j);
std::unique_ptr<PreTokenizer> make_sequence_pre_tokenizer(const Json& j);

}  // namespace loom::tokenizer::detail
