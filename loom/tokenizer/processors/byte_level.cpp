// ByteLevel post-processor: only trims offsets in HF; ids are unchanged.
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

namespace {
class ByteLevelProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};
}  // namespace

std::unique_ptr<PostProcessor> make_byte_level_processor(const Json&) { return std::make_unique<ByteLevelProcessor>(); }

}  // namespace loom::tokenizer::detail
