// Constructors of the post-processors, one per JSON "type" (each defined in its own file).
#pragma once

#include <nlohmann/json.hpp>

#include "loom/tokenizer/components.h"

namespace loom::tokenizer::detail {

std::unique_ptr<PostProcessor> make_template_processing(const Json& j);
std::unique_ptr<PostProcessor> make_byte_level_processor(const Json& j);
std::unique_ptr<PostProcessor> make_roberta_processing(const Json& j);
std::unique_ptr<PostProcessor> make_bert_processing(const Json& j);
std::unique_ptr<PostProcessor> make_sequence_processor(const Json& j);

// Reads a ["token", id] pair (Bert/Roberta "cls" and "sep") and returns the id.
int32_t special_pair_id(const Json& j, const char* key, const char* where);
// `cls` $A `sep` for a single sequence: BertProcessing and RobertaProcessing (whose offset trimming
// does not change ids) share it.
std::unique_ptr<PostProcessor> make_cls_sep_processing(const Json& j, const char* type);

}  // namespace loom::tokenizer::detail
