// apply_chat_template as transformers does it: pick the template (named templates, tool_use default),
// render it with {**special_tokens_map, **kwargs} plus messages/tools/documents/
// add_generation_prompt, and post-process continue_final_message.
#pragma once

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "loom/chat/template.h"

namespace loom::chat {

// The chat templates and special tokens of one model folder.
struct ChatTemplateConfig {
  // Named templates; a single template is stored as "default".
  std::map<std::string, std::string> templates;
  bool named = false;  // tokenizer_config held a list of named templates (or extra files exist)
  // special_tokens_map as transformers 5 builds it: bos/eos/unk/sep/pad/cls/mask_token (each when
  // set) plus the named extra_special_tokens.
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();

  // Reads tokenizer_config.json, then chat_template.jinja / chat_template.json and
  // additional_chat_templates/*.jinja, which override it as in transformers. Throws IoError.
  static ChatTemplateConfig from_model_dir(const std::string& dir);
  // From a parsed tokenizer_config.json alone.
  static ChatTemplateConfig from_tokenizer_config(const nlohmann::ordered_json& config);
};

struct ChatRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // one conversation
  std::optional<nlohmann::ordered_json> tools;      // list of JSON schemas
  std::optional<nlohmann::ordered_json> documents;  // list of {title, text}
  bool add_generation_prompt = false;
  bool continue_final_message = false;
  std::optional<std::string> template_name;          // a name of ChatTemplateConfig::templates
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();  // enable_thinking, ...
};

// Returns the template transformers would select for this request; throws ValueError.
const std::string& select_template(const ChatTemplateConfig& config, const ChatRequest& request);

// Renders the prompt exactly as tokenizer.apply_chat_template(..., tokenize=False).
std::string apply_chat_template(const ChatTemplateConfig& config, const ChatRequest& request,
                                const RenderOptions& options = {});

// transformers' continue_final_message post-processing of a rendered chat.
std::string continue_final_message_cut(const std::string& rendered, const nlohmann::ordered_json& messages);

}  // namespace loom::chat
