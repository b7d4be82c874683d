// Qwen2: the standard decoder with biases on q/k/v (not o), optional sliding window on the layers
// from max_window_layers on. mlx-lm: models/qwen2.py. transformers: Qwen2ForCausalLM.
#include "loom/io/config.h"
#include "loom/models/transformer.h"

namespace loom::models::qwen2 {

DecoderArgs model_args(const io::Config& c) {
  DecoderArgs a = parse_decoder_args(c);
  a.qkv_bias = true;
  a.o_bias = false;
  a.rope_theta = c.get_float("rope_theta", 1000000.0);
  apply_qwen_sliding_window(a, c);
  return a;
}

ModelRegistration registration() {
  return {"qwen2", {}, [](const io::Config& c) { return std::make_unique<DecoderLM>(model_args(c)); }};
}

}  // namespace loom::models::qwen2
