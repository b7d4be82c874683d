#include "loom/generate/session.h"

#include "loom/hub/hub.h"

#include <filesystem>

#include "loom/common/error.h"
#include "loom/generate/stopping.h"
#include "loom/io/config.h"

namespace loom::generate {
namespace {

// ChatML, for --use-default-chat-template on a folder without a template.
constexpr const char* kChatML =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

}  // namespace

ModelSession load_session(const std::string& model, const SessionOptions& options) {
  // A local folder, or a Hub repo id downloaded (or found) in the Hugging Face cache.
  const std::string model_dir = hub::resolve_model_path(model);
  models::CacheOptions cache_options;
  if (options.max_kv_size) {
    if (*options.max_kv_size <= cache_options.keep)
      throw ValueError(format_error("max-kv-size", std::to_string(*options.max_kv_size) + " must be greater than the " +
                                                       std::to_string(cache_options.keep) +
                                                       " first tokens the rotating KV cache always keeps"));
    cache_options.max_kv_size = options.max_kv_size;
  }
  models::LoadOptions lo;
  lo.dtype = options.dtype;
  lo.device = options.device;
  ModelSession s{models::load_model(model_dir, lo), tokenizer::Tokenizer::from_folder(model_dir), {}, {}};
  s.cache_options = cache_options;
  s.chat = chat::ChatTemplateConfig::from_model_dir(model_dir);
  if (s.chat.templates.empty() && options.use_default_chat_template) s.chat.templates["default"] = kChatML;
  EosSources eos;
  if (s.loaded.config.has("eos_token_id")) eos.config_ids = s.loaded.config.get_int_list("eos_token_id");
  eos.generation_config_ids = io::load_generation_config(model_dir).eos_token_ids;
  eos.tokenizer_ids = s.tokenizer.eos_token_ids();
  for (const auto& text : options.extra_eos_tokens) {
    auto id = s.tokenizer.token_to_id(text);
    if (!id) {
      auto ids = s.tokenizer.encode(text);
      if (ids.size() != 1)
        throw ValueError(format_error("extra-eos-token", "'" + text + "' is not a single token of this tokenizer"));
      id = ids[0];
    }
    eos.extra_ids.push_back(*id);
  }
  s.eos_ids = merge_eos_ids(eos);
  return s;
}

std::string render_chat(const ModelSession& session, const nlohmann::ordered_json& messages,
                        bool continue_final_message, const nlohmann::ordered_json& kwargs) {
  chat::ChatRequest req;
  req.messages = messages;
  req.continue_final_message = continue_final_message;
  req.add_generation_prompt = !continue_final_message;
  req.kwargs = kwargs.is_null() ? nlohmann::ordered_json::object() : kwargs;  // `{}` at a call site is null
  return chat::apply_chat_template(session.chat, req);
}

std::vector<int32_t> build_prompt(const ModelSession& session, const PromptSpec& spec) {
  if (spec.ignore_chat_template || !session.has_chat_template())
    return session.tokenizer.encode(spec.prompt, /*add_special_tokens=*/true);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (spec.system_prompt) messages.push_back({{"role", "system"}, {"content", *spec.system_prompt}});
  messages.push_back({{"role", "user"}, {"content", spec.prompt}});
  bool prefill = spec.prefill_response.has_value();
  if (prefill) messages.push_back({{"role", "assistant"}, {"content", *spec.prefill_response}});
  std::string text = render_chat(session, messages, prefill, spec.template_kwargs);
  if (spec.suffix_only) {
    // The cached prefix ends where the user message starts: render once more with a marker.
    auto marked = messages;
    marked.back()["content"] = "<query>";  // as mlx_lm.generate does
    std::string test = render_chat(session, marked, prefill, spec.template_kwargs);
    size_t at = test.find("<query>");
    if (at != std::string::npos && at <= text.size()) text = text.substr(at);
  }
  return session.tokenizer.encode(text, /*add_special_tokens=*/false);
}

}  // namespace loom::generate
