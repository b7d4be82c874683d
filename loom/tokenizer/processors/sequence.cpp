// Sequence post-processor: applies its processors in order.
#include "loom/common/error.h"
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

namespace {
class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(const Json& j) {
    const Json& list = field(j, "processors", "Sequence post_processor");
    if (!list.is_array()) throw ValueError(format_error("tokenizer", "Sequence: 'processors' must be a list"));
    for (const Json& p : list) {
      if (auto step = make_post_processor(p)) steps_.push_back(std::move(step));
    }
  }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& s : steps_) s->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};
}  // namespace

std::unique_ptr<PostProcessor> make_sequence_processor(const Json& j) { return std::make_unique<SequenceProcessor>(j); }

}  // namespace loom::tokenizer::detail
