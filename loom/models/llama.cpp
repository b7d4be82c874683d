// Llama family (llama, and mistral as an alias): the standard decoder of transformer.h.
// mlx-lm: models/llama.py. transformers: LlamaForCausalLM, MistralForCausalLM.
#include "loom/io/config.h"
#include "loom/models/transformer.h"

namespace loom::models::llama {

DecoderArgs model_args(const io::Config& c) {
  DecoderArgs a = parse_decoder_args(c);
  // loom: transformers' Mistral applies `sliding_window` to every layer when no layer_types are
  // given; mlx-lm's llama.py ignores it. transformers' semantics win.
  if (c.get_string("model_type", "llama") == "mistral" && a.sliding_window > 0 && !c.has("layer_types"))
    a.sliding.assign(a.num_layers, true);
  return a;
}

ModelRegistration registration() {
  return {"llama", {"mistral"}, [](const io::Config& c) { return std::make_unique<DecoderLM>(model_args(c)); }};
}

}  // namespace loom::models::llama
