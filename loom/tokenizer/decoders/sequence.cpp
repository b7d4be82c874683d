// Sequence decoder: applies its decoders' chains in order.
#include "loom/common/error.h"
#include "loom/tokenizer/decoders/decoders.h"

namespace loom::tokenizer::detail {

namespace {
class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(const Json& j) {
    const Json& list = field(j, "decoders", "Sequence decoder");
    if (!list.is_array()) throw ValueError(format_error("tokenizer", "Sequence: 'decoders' must be a list"));
    for (const Json& d : list) {
      if (auto step = make_decoder(d)) steps_.push_back(std::move(step));
    }
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};
}  // namespace

std::unique_ptr<Decoder> make_sequence_decoder(const Json& j) { return std::make_unique<SequenceDecoder>(j); }

}  // namespace loom::tokenizer::detail
