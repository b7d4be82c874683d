// Pre-tokenizer factory: dispatches a tokenizer.json "pre_tokenizer" object on its "type".
#include <string>

#include "loom/common/error.h"
#include "loom/tokenizer/pre_tokenizers/pre_tokenizers.h"

namespace loom::tokenizer::detail {

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = string_field(j, "type", "pre_tokenizer");
  if (type == "ByteLevel") return make_byte_level_pre_tokenizer(j);
  if (type == "Split") return make_split(j);
  if (type == "Metaspace") return make_metaspace_pre_tokenizer(j);
  if (type == "Whitespace") return make_whitespace(j);
  if (type == "WhitespaceSplit") return make_whitespace_split(j);
  if (type == "Punctuation") return make_punctuation(j);
  if (type == "Digits") return make_digits(j);
  if (type == "BertPreTokenizer") return make_bert_pre_tokenizer(j);
  if (type == "Sequence") return make_sequence_pre_tokenizer(j);
  throw NotSupportedError(format_error("tokenizer", "unknown pre_tokenizer type '" + type + "'"));
}

}  // namespace loom::tokenizer::detail
