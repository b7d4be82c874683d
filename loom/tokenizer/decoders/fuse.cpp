// Fuse decoder: joins all tokens into one.
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
class Fuse final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};
}  // namespace

std::unique_ptr<Decoder> make_fuse(const Json&) { return std::make_unique<Fuse>(); }

}  // namespace loom::tokenizer::detail
