// RobertaProcessing: <s> $A </s> for a single sequence; its offset trimming does not change ids, so
// it is the same cls/sep wrapper as BertProcessing.
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

std::unique_ptr<PostProcessor> make_roberta_processing(const Json& j) {
  return make_cls_sep_processing(j, "RobertaProcessing");
}

}  // namespace loom::tokenizer::detail
