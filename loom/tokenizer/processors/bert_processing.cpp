// BertProcessing: [CLS] $A [SEP] for a single sequence (the cls/sep wrapper RobertaProcessing shares).
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

namespace {
class ClsSepProcessing final : public PostProcessor {
 public:
  ClsSepProcessing(const Json& j, const char* type)
      : cls_(special_pair_id(j, "cls", type)), sep_(special_pair_id(j, "sep", type)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }

 private:
  int32_t cls_, sep_;
};
}  // namespace

std::unique_ptr<PostProcessor> make_cls_sep_processing(const Json& j, const char* type) {
  return std::make_unique<ClsSepProcessing>(j, type);
}

std::unique_ptr<PostProcessor> make_bert_processing(const Json& j) { return make_cls_sep_processing(j, "BertProcessing"); }

}  // namespace loom::tokenizer::detail
