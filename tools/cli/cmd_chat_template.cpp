// `loom chat-template`: renders a model's chat template over a messages file, exactly as
// transformers' tokenizer.apply_chat_template(..., tokenize=False) does, and prints the prompt
// byte for byte (no newline added).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.h"
#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "tools/cli/commands.h"

namespace loom::cli {
namespace {

struct ChatTemplateArgs {
  std::string model;
  std::string messages;
  std::string tools;
  std::string kwargs;
  std::string template_name;
  bool add_generation_prompt = false;
  bool continue_final_message = false;
};

nlohmann::ordered_json parse_json(const std::string& text, const std::string& what) {
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw loom::ValueError(loom::format_error("chat-template", what + " is not valid JSON: " + e.what()));
  }
}

void run(const ChatTemplateArgs& a) {
  auto config = loom::chat::ChatTemplateConfig::from_model_dir(a.model);
  loom::chat::ChatRequest req;
  req.messages = parse_json(loom::read_file(a.messages), a.messages);
  if (!req.messages.is_array())
    throw loom::ValueError(loom::format_error("chat-template", a.messages + " must hold a JSON array of messages"));
  if (!a.tools.empty()) req.tools = parse_json(loom::read_file(a.tools), a.tools);
  if (!a.kwargs.empty()) {
    req.kwargs = parse_json(a.kwargs, "--kwargs");
    if (!req.kwargs.is_object())
      throw loom::ValueError(loom::format_error("chat-template", "--kwargs must be a JSON object"));
  }
  if (!a.template_name.empty()) req.template_name = a.template_name;
  req.add_generation_prompt = a.add_generation_prompt;
  req.continue_final_message = a.continue_final_message;
  std::string prompt = loom::chat::apply_chat_template(config, req);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

void add_chat_template_command(CLI::App& app) {
  auto args = std::make_shared<ChatTemplateArgs>();
  CLI::App* cmd = app.add_subcommand("chat-template", "Render a model's chat template as transformers does");
  cmd->add_option("--model", args->model, "Model folder (tokenizer_config.json / chat_template.jinja)")->required();
  cmd->add_option("--messages", args->messages, "JSON file holding the messages array")->required();
  cmd->add_flag("--add-generation-prompt", args->add_generation_prompt, "Append the assistant header");
  cmd->add_option("--tools", args->tools, "JSON file holding a list of tool schemas");
  cmd->add_option("--kwargs", args->kwargs, "Extra template variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
  cmd->add_flag("--continue-final-message", args->continue_final_message,
                "Leave the final message open so the model continues it");
  cmd->add_option("--template-name", args->template_name, "Name of one of the model's named templates");
  cmd->callback([args]() { run(*args); });
}

}  // namespace loom::cli
