// Qwen3: the standard decoder with per-head RMSNorm on queries and keys before RoPE, no biases
// by default. mlx-lm: models/qwen3.py. transformers: Qwen3ForCausalLM.
#include "loom/io/config.h"
#include "loom/models/transformer.h"

namespace loom::models::qwen3 {

DecoderArgs model_args(const io::Config& c) {
  DecoderArgs a = parse_decoder_args(c);
  a.qk_norm = true;
  a.rope_theta = c.get_float("rope_theta", 1000000.0);
  apply_qwen_sliding_window(a, c);
  return a;
}

ModelRegistration registration() {
  return {"qwen3", {}, [](const io::Config& c) { return std::make_unique<DecoderLM>(model_args(c)); }};
}

}  // namespace loom::models::qwen3
