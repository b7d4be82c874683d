// Mistral 3 (mistral3: the vision-language checkpoint, run on text; ministral3: the Ministral 3 text
// model alone). A mistral3 checkpoint's text model is its `text_config`: either a Mistral (the Llama
// decoder, sliding window on every layer when set) or a Ministral 3, which is the same decoder plus
// Llama-4-style attention temperature: after RoPE (yarn in the real checkpoints) the queries are
// scaled by 1 + llama_4_scaling_beta * log(1 + floor(position / original_max_position_embeddings)),
// both read from rope_parameters. The Pixtral vision tower and the multi-modal projector are dropped
// by sanitize. mlx-lm: models/mistral3.py, models/ministral3.py. transformers:
// Mistral3ForConditionalGeneration, Ministral3ForCausalLM (modeling_ministral3.py).
#include "loom/common/error.h"
#include "loom/io/config.h"
#include "loom/models/transformer.h"

namespace loom::models::mistral3 {

// The text model's DecoderArgs from its own config (model_type mistral, ministral3 or llama).
DecoderArgs text_args(const io::Config& c) {
  DecoderArgs a = parse_decoder_args(c);
  const std::string type = c.get_string("model_type", "mistral");
  // loom: transformers' Mistral and Ministral3 apply `sliding_window` to every layer when set (no
  // layer_types given); mlx-lm's llama.py ignores it and its ministral3.py slides only the layers
  // layer_types names. transformers' semantics win.
  if ((type == "mistral" || type == "ministral3") && a.sliding_window > 0 && !c.has("layer_types"))
    a.sliding.assign(a.num_layers, true);
  if (type == "ministral3") {
    // llama_4_scaling_beta lives in rope_parameters (transformers 5) or rope_scaling (v4 name).
    const char* block = c.is_object("rope_parameters") ? "rope_parameters" : "rope_scaling";
    if (c.is_object(block)) {
      io::Config r = c.sub(block);
      const double beta = r.get_float("llama_4_scaling_beta", 0.0);
      if (beta != 0.0) {
        const int64_t original = r.get_int("original_max_position_embeddings", 0);
        if (original < 1)
          throw ConfigError(
              format_error("config", std::string("llama_4_scaling_beta needs original_max_position_embeddings") +
                                         " >= 1 in " + block + " of " + c.source()));
        a.query_temperature.assign(a.num_layers, true);
        a.temperature = {.beta = beta, .floor_scale = original, .shift = 0};
      }
    }
  }
  return a;
}

ModelRegistration registration() {
  return {"mistral3", {"ministral3"}, [](const io::Config& c) -> std::unique_ptr<LanguageModel> {
            if (!c.is_object("text_config")) return std::make_unique<DecoderLM>(text_args(c));
            // The vision-language checkpoint: mlx-lm's mistral3 wrapper unties the head unless the
            // text config says otherwise (transformers' per-text-model default is also untied).
            io::Config text = c.sub("text_config");
            if (!text.has("model_type")) text.set_json("model_type", "\"mistral\"");
            if (!text.has("tie_word_embeddings")) text.set_json("tie_word_embeddings", "false");
            return std::make_unique<VisionLanguageWrapper>(
                std::make_unique<DecoderLM>(text_args(text)),
                std::vector<std::string>{"vision_tower", "multi_modal_projector"});
          }};
}

}  // namespace loom::models::mistral3
