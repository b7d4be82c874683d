// BertProcessing: [CLS] $A [SEP] for a single sequence.
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

namespace {
class BertProcessing final : public PostProcessor {
 public:
  explicit BertProcessing(const Json& j)
      : cls_(special_pair_id(j, "cls", "BertProcessing")), sep_(special_pair_id(j, "sep", "BertProcessing")) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }

 private:
  int32_t cls_, sep_;
};
}  // namespace

std::unique_ptr<PostProcessor> make_bert_processing(const Json& j) { return std::make_unique<BertProcessing>(j); }

}  // namespace loom::tokenizer::detail
