// `loom cache-prompt`: prefill a prompt and save the KV cache in mlx-lm's prompt-cache format, for
// `loom generate --prompt-cache-file` (mlx_lm.cache_prompt).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/generate/prompt_cache.h"
#include "loom/generate/session.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace loom::cli {

void add_cache_prompt_command(CLI::App& app) {
  struct Opts {
    std::string model, prompt, out, dtype = "auto", device = "auto";
    int prefill_step_size = 2048, threads = 0;
    bool ignore_chat_template = false, use_default_chat_template = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("cache-prompt", "Prefill a prompt and save its KV cache (mlx_lm.cache_prompt)");
  cmd->add_option("--model", o->model, "Local model folder")->required();
  cmd->add_option("-p,--prompt", o->prompt, "Prompt to cache ('-' reads stdin)")->required();
  cmd->add_option("--prompt-cache-file", o->out, "Output .safetensors file")->required();
  cmd->add_flag("--ignore-chat-template", o->ignore_chat_template, "Cache the raw prompt");
  cmd->add_flag("--use-default-chat-template", o->use_default_chat_template, "Use ChatML when the model has no template");
  cmd->add_option("--prefill-step-size", o->prefill_step_size, "Prompt tokens per prefill step");
  cmd->add_option("--dtype", o->dtype, kDtypeHelp);
  cmd->add_option("--device", o->device, kDeviceHelp);
  add_qmm_option(cmd);
  cmd->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  cmd->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    if (o->prefill_step_size < 1) throw ValueError(format_error("cache-prompt", "--prefill-step-size must be >= 1"));
    generate::SessionOptions so;
    so.device = resolve_device(o->device);
    so.dtype = resolve_dtype(o->dtype, so.device);
    so.use_default_chat_template = o->use_default_chat_template;
    generate::ModelSession s = generate::load_session(o->model, so);
    std::string prompt = o->prompt;
    if (prompt == "-") prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
    std::vector<int32_t> ids;
    if (!o->ignore_chat_template && s.has_chat_template()) {
      // As mlx_lm.cache_prompt: the user message rendered with continue_final_message, so that
      // `generate --prompt-cache-file` continues the same message with its query.
      nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
      msgs.push_back({{"role", "user"}, {"content", prompt}});
      std::string text = generate::render_chat(s, msgs, /*continue_final_message=*/true, {});
      ids = s.tokenizer.encode(text, /*add_special_tokens=*/false);
    } else {
      ids = s.tokenizer.encode(prompt, /*add_special_tokens=*/true);
    }
    models::Cache cache = s.loaded.model->make_cache();
    auto t0 = std::chrono::steady_clock::now();
    const int64_t n = static_cast<int64_t>(ids.size());
    for (int64_t b = 0; b < n; b += o->prefill_step_size) {
      int64_t len = std::min<int64_t>(o->prefill_step_size, n - b);
      std::vector<int32_t> chunk(ids.begin() + b, ids.begin() + b + len);
      s.loaded.model->forward(Array::from(chunk, {1, len}), cache, models::LogitsMode::none);
    }
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    generate::save_prompt_cache(o->out, cache, {{"model", o->model}, {"tokenizer_config", "{}"}});
    std::fprintf(stderr, "Processed %lld tokens (%.3f tokens-per-sec); saved %s\n", static_cast<long long>(n),
                 dt > 0 ? n / dt : 0.0, o->out.c_str());
  });
}

}  // namespace loom::cli
