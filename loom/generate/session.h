// What the generate/chat/cache-prompt/perplexity commands share: a model folder loaded with its
// tokenizer, chat templates and merged eos ids, and mlx_lm.generate's way of turning a prompt into
// ids (chat template unless told otherwise).
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.h"
#include "loom/models/loader.h"
#include "loom/tokenizer/tokenizer.h"

namespace loom::generate {

struct ModelSession {
  models::LoadedModel loaded;
  tokenizer::Tokenizer tokenizer;
  chat::ChatTemplateConfig chat;
  std::set<int32_t> eos_ids;
  models::CacheOptions cache_options;  // from SessionOptions::max_kv_size
  bool has_chat_template() const { return !chat.templates.empty(); }
  // A fresh cache as the options say (a RotatingKVCache per layer with --max-kv-size).
  models::Cache make_cache() const { return loaded.model->make_cache(cache_options); }
};

struct SessionOptions {
  Dtype dtype = Dtype::f32;
  Device device = Device::cpu();
  std::vector<std::string> extra_eos_tokens;  // token texts; each must be a single id
  bool use_default_chat_template = false;     // ChatML when the folder has no template
  // --max-kv-size: a RotatingKVCache of this many positions per layer keeping the first 4 tokens
  // (mlx-lm's make_prompt_cache); must exceed 4.
  std::optional<int64_t> max_kv_size;
};

// Loads model + tokenizer from a local folder, or from a Hub repo id ("org/name"), downloaded into the
// Hugging Face cache (loom/hub) when not there yet.
ModelSession load_session(const std::string& model_dir, const SessionOptions& options);

struct PromptSpec {
  std::string prompt;
  std::optional<std::string> system_prompt;
  std::optional<std::string> prefill_response;
  bool ignore_chat_template = false;
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();
  // With a prompt cache holding the conversation prefix: keep only the text from the user
  // message on (mlx_lm.generate's "<query>" trick).
  bool suffix_only = false;
};

// The prompt ids as mlx_lm.generate builds them.
std::vector<int32_t> build_prompt(const ModelSession& session, const PromptSpec& spec);
// Renders messages with the chat template (add_generation_prompt unless continue_final_message).
std::string render_chat(const ModelSession& session, const nlohmann::ordered_json& messages,
                        bool continue_final_message, const nlohmann::ordered_json& kwargs);

}  // namespace loom::generate
