// `loom chat`: an interactive chat REPL (mlx_lm.chat). The KV cache is kept across turns, so each
// turn only prefills the new user message. Commands: `q` quits, `r` resets the conversation, `h`
// prints help. Reads lines from stdin, so it works from a pipe as well as a terminal. Ctrl-C while an
// answer streams stops that answer (the conversation and its cache go on from what was printed);
// Ctrl-C at the prompt ends the program, as in mlx_lm.chat.
#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include <unistd.h>

#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/generate/generate.h"
#include "loom/generate/session.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace loom::cli {
namespace {

// Set by SIGINT; read by the streaming callback between tokens.
std::atomic<bool> g_interrupted{false};
// True while the REPL waits for a line of input.
std::atomic<bool> g_at_prompt{false};

// Ctrl-C at the prompt ends the session at once (nothing is in flight; only async-signal-safe calls
// here); during an answer it raises the flag the streaming callback reads between tokens. The kernel
// may run this on any thread, so it relies on no thread state.
void on_sigint(int) {
  if (g_at_prompt.load()) {
    const char nl = '\n';
    (void)!write(STDOUT_FILENO, &nl, 1);
    _exit(0);
  }
  g_interrupted.store(true);
}

void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
}

void print_help() {
  std::printf("The command list:\n- 'q' to exit\n- 'r' to reset the chat\n- 'h' to display these commands\n");
}

}  // namespace

void add_chat_command(CLI::App& app) {
  struct Opts {
    std::string model, dtype = "auto", device = "auto";
    std::optional<std::string> system_prompt;
    float temp = 0.0f, top_p = 1.0f, min_p = 0.0f, xtc_probability = 0.0f, xtc_threshold = 0.0f;
    int top_k = 0, min_tokens_to_keep = 1, max_tokens = 256, threads = 0;
    std::optional<uint64_t> seed;
    std::optional<int> max_kv_size, kv_bits;
    int kv_group_size = 64, quantized_kv_start = 5000;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model in a REPL (mlx_lm.chat)");
  cmd->add_option("--model", o->model, "Local model folder or Hugging Face repo id")->required();
  cmd->add_option("--system-prompt", o->system_prompt, "System prompt");
  cmd->add_option("--temp", o->temp, "Sampling temperature (0 = greedy)");
  cmd->add_option("--top-p", o->top_p, "Sampling top-p");
  cmd->add_option("--top-k", o->top_k, "Sampling top-k");
  cmd->add_option("--min-p", o->min_p, "Sampling min-p");
  cmd->add_option("--min-tokens-to-keep", o->min_tokens_to_keep, "Minimum tokens kept by min-p");
  cmd->add_option("--xtc-probability", o->xtc_probability, "Probability of XTC sampling");
  cmd->add_option("--xtc-threshold", o->xtc_threshold, "Threshold of XTC sampling");
  cmd->add_option("--seed", o->seed, "PRNG seed");
  cmd->add_option("-m,--max-tokens", o->max_tokens, "Maximum tokens per answer");
  cmd->add_option("--max-kv-size", o->max_kv_size, "Rotating KV cache size: keep the first 4 and the newest tokens");
  cmd->add_option("--kv-bits", o->kv_bits, "Quantize the KV cache to this many bits (2-6 or 8; default: not quantized)");
  cmd->add_option("--kv-group-size", o->kv_group_size, "Group size of the KV cache quantization");
  cmd->add_option("--quantized-kv-start", o->quantized_kv_start,
                  "Cache size (positions) from which the KV cache is quantized (with --kv-bits)");
  cmd->add_option("--dtype", o->dtype, kDtypeHelp);
  cmd->add_option("--device", o->device, kDeviceHelp);
  add_qmm_option(cmd);
  cmd->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  cmd->callback([o] {
    std::optional<models::KVQuantization> kv_quantization;
    if (o->kv_bits) {
      if (o->max_kv_size)
        throw NotSupportedError(format_error("kv-bits", "--kv-bits with --max-kv-size (the rotating KV cache) is not "
                                                        "supported (as in mlx-lm)"));
      kv_quantization = models::KVQuantization{*o->kv_bits, o->kv_group_size, o->quantized_kv_start};
      models::validate(*kv_quantization);
    }
    if (o->threads > 0) set_num_threads(o->threads);
    generate::SessionOptions so;
    so.device = resolve_device(o->device);
    so.dtype = resolve_dtype(o->dtype, so.device);
    if (o->max_kv_size) so.max_kv_size = *o->max_kv_size;
    generate::ModelSession s = generate::load_session(o->model, so);
    if (!s.has_chat_template())
      throw ValueError(format_error("chat", "the model folder has no chat template"));
    const bool tty = isatty(STDIN_FILENO);
    generate::StreamOptions opt;
    opt.eos_ids = s.eos_ids;
    opt.generate.max_tokens = o->max_tokens;
    opt.generate.seed = o->seed.value_or(0);
    opt.generate.sampler = {.temp = o->temp, .top_p = o->top_p, .min_p = o->min_p,
                            .min_tokens_to_keep = o->min_tokens_to_keep, .top_k = o->top_k,
                            .xtc_probability = o->xtc_probability, .xtc_threshold = o->xtc_threshold};
    opt.generate.kv_quantization = kv_quantization;
    models::Cache cache = s.make_cache();
    install_sigint_handler();
    bool first_turn = true;
    std::printf("[INFO] Starting chat session with %s.\n", o->model.c_str());
    print_help();
    std::string line;
    while (true) {
      g_at_prompt.store(true);  // before the prompt shows: a Ctrl-C once it is visible always ends the session
      std::printf(">> ");
      std::fflush(stdout);
      bool got = static_cast<bool>(std::getline(std::cin, line));
      g_at_prompt.store(false);
      if (!got) break;
      if (!tty) std::printf("%s\n", line.c_str());
      if (line == "q") break;
      if (line == "r") {
        cache = s.make_cache();
        first_turn = true;
        continue;
      }
      if (line == "h") {
        print_help();
        continue;
      }
      nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
      if (first_turn && o->system_prompt) msgs.push_back({{"role", "system"}, {"content", *o->system_prompt}});
      msgs.push_back({{"role", "user"}, {"content", line}});
      std::string text = generate::render_chat(s, msgs, /*continue_final_message=*/false, {});
      std::vector<int32_t> ids = s.tokenizer.encode(text, /*add_special_tokens=*/false);
      g_interrupted.store(false);
      generate::stream_generate(*s.loaded.model, s.tokenizer, cache, ids, opt, [](const generate::GenerationResponse& r) {
        std::fwrite(r.text.data(), 1, r.text.size(), stdout);
        std::fflush(stdout);
        if (r.finish_reason == "context") std::printf("\n[INFO] the context window is full; 'r' resets the chat");
        return !g_interrupted.load();
      });
      if (g_interrupted.exchange(false)) std::printf("\n[INFO] answer interrupted");
      std::printf("\n");
      first_turn = false;
    }
  });
}

}  // namespace loom::cli
