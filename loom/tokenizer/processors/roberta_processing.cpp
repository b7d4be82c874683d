// RobertaProcessing: <s> $A </s> for a single sequence (offset trimming does not change ids).
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

namespace {
class RobertaProcessing final : public PostProcessor {
 public:
  explicit RobertaProcessing(const Json& j)
      : cls_(special_pair_id(j, "cls", "RobertaProcessing")), sep_(special_pair_id(j, "sep", "RobertaProcessing")) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }

 private:
  int32_t cls_, sep_;
};
}  // namespace

std::unique_ptr<PostProcessor> make_roberta_processing(const Json& j) { return std::make_unique<RobertaProcessing>(j); }

}  // namespace loom::tokenizer::detail
