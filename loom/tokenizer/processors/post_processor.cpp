// Post-processor factory: dispatches a tokenizer.json "post_processor" object on its "type".
#include <string>

#include "loom/common/error.h"
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

std::unique_ptr<PostProcessor> make_post_processor(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = string_field(j, "type", "post_processor");
  if (type == "TemplateProcessing") return make_template_processing(j);
  if (type == "ByteLevel") return make_byte_level_processor(j);
  if (type == "RobertaProcessing") return make_roberta_processing(j);
  if (type == "BertProcessing") return make_bert_processing(j);
  if (type == "Sequence") return make_sequence_processor(j);
  throw NotSupportedError(format_error("tokenizer", "unknown post_processor type '" + type + "'"));
}

int32_t special_pair_id(const Json& j, const char* key, const char* where) {
  const Json& p = field(j, key, where);
  if (!p.is_array() || p.size() != 2 || !p[1].is_number_integer()) {
    throw ValueError(format_error("tokenizer", std::string(where) + ": '" + key + "' must be [token, id]"));
  }
  return p[1].get<int32_t>();
}

}  // namespace loom::tokenizer::detail
