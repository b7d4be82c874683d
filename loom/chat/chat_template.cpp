// apply_chat_template following transformers' tokenization_utils_base.py / chat_template_utils.py.
#include "loom/chat/chat_template.h"

#include <filesystem>

#include "loom/chat/unicode.h"
#include "loom/common/strings.h"

namespace loom::chat {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// An AddedToken is stored either as a string or as {"content": ...}.
std::optional<std::string> token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

void read_templates(ChatTemplateConfig& cfg, const json& ct) {
  if (ct.is_string()) {
    cfg.templates["default"] = ct.get<std::string>();
  } else if (ct.is_array()) {
    cfg.named = true;
    for (const auto& t : ct) {
      if (!t.is_object() || !t.contains("name") || !t.contains("template"))
        throw loom::IoError(loom::format_error("chat", "chat_template list entries need 'name' and 'template'"));
      cfg.templates[t["name"].get<std::string>()] = t["template"].get<std::string>();
    }
  }
}

std::string strip_py(std::string_view s, bool left, bool right) {
  auto c = utf8::decode(s);
  std::size_t b = 0, e = c.size();
  if (left)
    while (b < e && utf8::is_space(c[b])) ++b;
  if (right)
    while (e > b && utf8::is_space(c[e - 1])) --e;
  return utf8::encode(std::vector<char32_t>(c.begin() + static_cast<std::ptrdiff_t>(b), c.begin() + static_cast<std::ptrdiff_t>(e)));
}

}  // namespace

ChatTemplateConfig ChatTemplateConfig::from_tokenizer_config(const json& config) {
  ChatTemplateConfig cfg;
  if (config.contains("chat_template")) read_templates(cfg, config["chat_template"]);
  for (const char* name : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (!config.contains(name)) continue;
    auto t = token_text(config[name]);
    if (t && !t->empty()) cfg.special_tokens[name] = *t;
  }
  // transformers 5 also exposes named extra special tokens (gemma3's boi_token, image_token, ...);
  // additional_special_tokens is no longer part of the map.
  if (config.contains("extra_special_tokens") && config["extra_special_tokens"].is_object()) {
    for (auto it = config["extra_special_tokens"].begin(); it != config["extra_special_tokens"].end(); ++it) {
      auto t = token_text(it.value());
      if (t && !t->empty()) cfg.special_tokens[it.key()] = *t;
    }
  }
  return cfg;
}

ChatTemplateConfig ChatTemplateConfig::from_model_dir(const std::string& dir) {
  fs::path root(dir);
  ChatTemplateConfig cfg;
  fs::path tc = root / "tokenizer_config.json";
  if (fs::exists(tc)) {
    json config;
    try {
      config = json::parse(loom::read_file(tc.string()));
    } catch (const json::exception& e) {
      throw loom::IoError(loom::format_error("chat", tc.string() + ": " + e.what()));
    }
    cfg = from_tokenizer_config(config);
  }
  // chat_template.json (processors) and chat_template.jinja override tokenizer_config.json.
  fs::path cj = root / "chat_template.json";
  if (fs::exists(cj)) {
    json j = json::parse(loom::read_file(cj.string()), nullptr, false);
    if (j.is_object() && j.contains("chat_template")) {
      cfg.templates.clear();
      cfg.named = false;
      read_templates(cfg, j["chat_template"]);
    }
  }
  fs::path jinja = root / "chat_template.jinja";
  if (fs::exists(jinja)) {
    if (cfg.named) cfg.templates.clear();
    cfg.named = false;
    cfg.templates["default"] = loom::read_file(jinja.string());
  }
  fs::path extra = root / "additional_chat_templates";
  if (fs::is_directory(extra)) {
    for (const auto& e : fs::directory_iterator(extra)) {
      if (e.path().extension() != ".jinja") continue;
      cfg.templates[e.path().stem().string()] = loom::read_file(e.path().string());
      cfg.named = true;
    }
  }
  if (cfg.templates.empty())
    throw loom::IoError(loom::format_error("chat", "no chat template in " + dir +
                                                       " (tokenizer_config.json, chat_template.jinja)"));
  return cfg;
}

const std::string& select_template(const ChatTemplateConfig& config, const ChatRequest& request) {
  const auto& t = config.templates;
  if (request.template_name) {
    auto it = t.find(*request.template_name);
    if (it == t.end()) {
      std::string names;
      for (const auto& [n, _] : t) names += (names.empty() ? "" : ", ") + n;
      throw loom::ValueError(loom::format_error("chat", "no chat template named '" + *request.template_name +
                                                            "' (available: " + names + ")"));
    }
    return it->second;
  }
  if (config.named) {
    if (request.tools && t.count("tool_use")) return t.at("tool_use");
    if (t.count("default")) return t.at("default");
    throw loom::ValueError(loom::format_error(
        "chat", "This model has multiple chat templates with no default specified; pass a template name"));
  }
  auto it = t.find("default");
  if (it == t.end())
    throw loom::ValueError(loom::format_error("chat", "Cannot use chat template functions because no chat template is set"));
  return it->second;
}

std::string continue_final_message_cut(const std::string& rendered, const json& messages) {
  if (!messages.is_array() || messages.empty())
    throw loom::ValueError(loom::format_error("chat", "continue_final_message needs at least one message"));
  const json& content = messages.back().contains("content") ? messages.back()["content"] : json();
  std::string final_message;
  if (content.is_array()) {
    bool found = false;
    for (auto it = content.rbegin(); it != content.rend(); ++it) {
      if (it->is_object() && it->contains("text") && (*it)["text"].is_string()) {
        final_message = (*it)["text"].get<std::string>();
        found = true;
        break;
      }
    }
    if (!found)
      throw loom::ValueError(loom::format_error(
          "chat", "continue_final_message is set but we could not find any text to continue in the final message!"));
  } else if (content.is_string()) {
    final_message = content.get<std::string>();
  } else {
    throw loom::ValueError(loom::format_error("chat", "continue_final_message: the final message has no string content"));
  }
  std::string stripped = strip_py(final_message, true, true);
  auto loc = rendered.rfind(stripped);
  if (loc == std::string::npos)
    throw loom::ValueError(loom::format_error(
        "chat", "continue_final_message is set but the final message does not appear in the chat after applying the chat template!"));
  std::string lstripped = strip_py(final_message, true, false);
  // The template kept the message's trailing spacing (or it had none): cut right after it.
  if (rendered.substr(loc, lstripped.size()) == final_message) return rendered.substr(0, loc + lstripped.size());
  // The template trimmed trailing spacing: cut after the stripped text.
  return rendered.substr(0, loc + stripped.size());
}

std::string apply_chat_template(const ChatTemplateConfig& config, const ChatRequest& request,
                                const RenderOptions& options) {
  if (request.continue_final_message && request.add_generation_prompt)
    throw loom::ValueError(loom::format_error(
        "chat", "continue_final_message and add_generation_prompt are not compatible"));
  if (!request.messages.is_array())
    throw loom::ValueError(loom::format_error("chat", "messages must be a JSON array of message objects"));
  if (request.tools) {
    if (!request.tools->is_array())
      throw loom::ValueError(loom::format_error("chat", "tools must be a JSON array of tool schemas"));
    for (const auto& tool : *request.tools)
      if (!tool.is_object())
        throw loom::ValueError(loom::format_error(
            "chat", "Tools should either be a JSON schema, or a callable function with type hints and a docstring"));
  }
  if (request.documents) {
    for (const auto& d : *request.documents)
      if (!d.is_object())
        throw loom::ValueError(loom::format_error("chat", "Documents should be a list of dicts with 'title' and 'text' keys!"));
  }
  if (!request.kwargs.is_object()) throw loom::ValueError(loom::format_error("chat", "kwargs must be a JSON object"));
  for (const char* reserved : {"messages", "tools", "documents", "add_generation_prompt"})
    if (request.kwargs.contains(reserved))
      throw loom::ValueError(loom::format_error("chat", std::string("render() got multiple values for keyword argument '") + reserved + "'"));

  Template tmpl(select_template(config, request));
  Value ctx = Value::dict();
  auto& d = ctx.dict_data();
  d.set(Value::string("messages"), Value::from_json(request.messages));
  d.set(Value::string("tools"), request.tools ? Value::from_json(*request.tools) : Value::none());
  d.set(Value::string("documents"), request.documents ? Value::from_json(*request.documents) : Value::none());
  d.set(Value::string("add_generation_prompt"), Value::boolean(request.add_generation_prompt));
  for (auto it = config.special_tokens.begin(); it != config.special_tokens.end(); ++it)
    if (!request.kwargs.contains(it.key())) d.set(Value::string(it.key()), Value::from_json(it.value()));
  for (auto it = request.kwargs.begin(); it != request.kwargs.end(); ++it)
    d.set(Value::string(it.key()), Value::from_json(it.value()));
  std::string rendered = tmpl.render(ctx, options);
  if (request.continue_final_message) rendered = continue_final_message_cut(rendered, request.messages);
  return rendered;
}

}  // namespace loom::chat
