// `loom generate`: mlx_lm.generate's command line. Streams the answer to stdout as it is generated
// and prints prompt/generation tokens per second and peak memory to stderr at the end.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>

#include "loom/common/error.h"
#include "loom/core/device.h"
#include "loom/core/thread_pool.h"
#include "loom/generate/generate.h"
#include "loom/generate/prompt_cache.h"
#include "loom/generate/session.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace loom::cli {
namespace {

struct GenerateOpts {
  std::string model = kDefaultModel, adapter_path, prompt = "hello", prompt_cache_file, dtype = "auto", device = "auto";
  std::optional<std::string> system_prompt, prefill_response, chat_template_config;
  int max_tokens = 100, top_k = 0, min_tokens_to_keep = 1, threads = 0, prefill_step_size = 2048;
  float temp = 0.0f, top_p = 1.0f, min_p = 0.0f, xtc_probability = 0.0f, xtc_threshold = 0.0f;
  std::optional<uint64_t> seed;
  std::optional<int> max_kv_size, kv_bits;
  int kv_group_size = 64, quantized_kv_start = 5000;
  bool ignore_chat_template = false, use_default_chat_template = false, verbose = false;
  std::vector<std::string> extra_eos_token;
};

// "\n" and "\t" typed on the command line become real newlines/tabs, as in mlx_lm.generate.
std::string unescape(std::string s) {
  for (auto [from, to] : {std::pair{"\\n", "\n"}, std::pair{"\\t", "\t"}})
    for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += 1) s.replace(at, 2, to);
  return s;
}

void run_generate(const GenerateOpts& o) {
  if (!o.adapter_path.empty())
    throw NotSupportedError(format_error("generate", "--adapter-path: LoRA adapters are not yet supported"));
  std::optional<models::KVQuantization> kv_quantization;
  if (o.kv_bits) {
    // mlx-lm fails on this pair only once the cache reaches --quantized-kv-start; refuse it up front.
    if (o.max_kv_size)
      throw NotSupportedError(format_error("kv-bits", "--kv-bits with --max-kv-size (the rotating KV cache) is not "
                                                      "supported (as in mlx-lm)"));
    kv_quantization = models::KVQuantization{*o.kv_bits, o.kv_group_size, o.quantized_kv_start};
    models::validate(*kv_quantization);
  }
  if (o.threads > 0) set_num_threads(o.threads);

  generate::SessionOptions so;
  so.device = resolve_device(o.device);
  so.dtype = resolve_dtype(o.dtype, so.device);
  so.extra_eos_tokens = o.extra_eos_token;
  so.use_default_chat_template = o.use_default_chat_template;
  if (o.max_kv_size) so.max_kv_size = *o.max_kv_size;
  generate::ModelSession s = generate::load_session(o.model, so);

  std::map<std::string, std::string> meta;
  models::Cache cache = o.prompt_cache_file.empty()
                            ? s.make_cache()
                            : generate::load_prompt_cache(o.prompt_cache_file, *s.loaded.model, &meta);
  if (!o.prompt_cache_file.empty() && o.max_kv_size) {
    // The prompt cache file decides the cache type (as in mlx-lm); a different --max-kv-size would
    // be silently ignored there, so it is an error here.
    auto* rot = cache.layers.empty() ? nullptr : dynamic_cast<models::RotatingKVCache*>(cache.layers[0].get());
    if (!rot || rot->max_size() != *o.max_kv_size)
      throw ValueError(format_error(
          "generate", "--max-kv-size " + std::to_string(*o.max_kv_size) + " does not match the prompt cache '" +
                          o.prompt_cache_file + "' (" +
                          (rot ? "a rotating cache of " + std::to_string(rot->max_size()) + " positions"
                               : std::string("a full KV cache")) +
                          "); omit --max-kv-size to use the file's cache as it is"));
  }
  if (!o.prompt_cache_file.empty() && meta.count("model") && meta["model"] != o.model)
    throw ValueError(format_error("generate", "Providing a different model (" + o.model +
                                                  ") than that used to create the prompt cache (" + meta["model"] +
                                                  ") is an error."));

  generate::PromptSpec ps;
  ps.prompt = unescape(o.prompt);
  if (ps.prompt == "-") ps.prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
  ps.system_prompt = o.system_prompt;
  ps.prefill_response = o.prefill_response;
  ps.ignore_chat_template = o.ignore_chat_template;
  if (o.chat_template_config) ps.template_kwargs = nlohmann::ordered_json::parse(*o.chat_template_config);
  ps.suffix_only = !o.prompt_cache_file.empty();
  std::vector<int32_t> prompt = generate::build_prompt(s, ps);

  generate::StreamOptions opt;
  opt.generate.max_tokens = o.max_tokens;
  opt.generate.prefill_step_size = o.prefill_step_size;
  opt.generate.kv_quantization = kv_quantization;
  opt.generate.seed = o.seed.value_or(0);
  opt.generate.sampler = {.temp = o.temp, .top_p = o.top_p, .min_p = o.min_p,
                          .min_tokens_to_keep = o.min_tokens_to_keep, .top_k = o.top_k,
                          .xtc_probability = o.xtc_probability, .xtc_threshold = o.xtc_threshold};
  // XTC never removes "\n" or eos (mlx_lm.generate's xtc_special_tokens).
  opt.generate.sampler.xtc_special_tokens = s.tokenizer.encode("\n");
  for (int32_t id : s.eos_ids) opt.generate.sampler.xtc_special_tokens.push_back(id);
  opt.eos_ids = s.eos_ids;

  if (o.verbose) std::fprintf(stderr, "==========\n");
  generate::GenerationResponse last;
  generate::stream_generate(*s.loaded.model, s.tokenizer, cache, prompt, opt, [&](const generate::GenerationResponse& r) {
    std::fwrite(r.text.data(), 1, r.text.size(), stdout);
    std::fflush(stdout);
    last = r;
    return true;
  });
  std::printf("\n");
  std::fflush(stdout);
  if (o.verbose) std::fprintf(stderr, "==========\n");
  if (last.finish_reason == "context")
    std::fprintf(stderr, "[generate] stopped: the context window (%lld tokens) is full\n",
                 static_cast<long long>(s.loaded.model->context_length()));
  std::fprintf(stderr, "Prompt: %lld tokens, %.3f tokens-per-sec\n", static_cast<long long>(last.prompt_tokens),
               last.prompt_tps);
  std::fprintf(stderr, "Generation: %lld tokens, %.3f tokens-per-sec\n",
               static_cast<long long>(last.generation_tokens), last.generation_tps);
  std::fprintf(stderr, "Peak memory: %.3f GB\n", last.peak_memory_gb);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOpts>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt (mlx_lm.generate)");
  cmd->add_option("--model", o->model,
                  "Model folder or Hugging Face repo id (default: " + std::string(kDefaultModel) + ", as mlx_lm.generate)");
  cmd->add_option("--adapter-path", o->adapter_path, "LoRA adapter folder (not yet supported)");
  cmd->add_option("-p,--prompt", o->prompt, "Message to the model ('-' reads stdin)");
  cmd->add_option("--system-prompt", o->system_prompt, "System prompt for the chat template");
  cmd->add_option("--prefill-response", o->prefill_response, "Start of the assistant's answer");
  cmd->add_option("-m,--max-tokens", o->max_tokens, "Maximum number of tokens to generate");
  cmd->add_option("--temp", o->temp, "Sampling temperature (0 = greedy)");
  cmd->add_option("--top-p", o->top_p, "Sampling top-p");
  cmd->add_option("--min-p", o->min_p, "Sampling min-p");
  cmd->add_option("--top-k", o->top_k, "Sampling top-k");
  cmd->add_option("--min-tokens-to-keep", o->min_tokens_to_keep, "Minimum tokens kept by min-p");
  cmd->add_option("--xtc-probability", o->xtc_probability, "Probability of XTC sampling");
  cmd->add_option("--xtc-threshold", o->xtc_threshold, "Threshold of XTC sampling");
  cmd->add_option("--seed", o->seed, "PRNG seed");
  cmd->add_flag("--ignore-chat-template", o->ignore_chat_template, "Use the raw prompt without the chat template");
  cmd->add_flag("--use-default-chat-template", o->use_default_chat_template, "Use ChatML when the model has no template");
  cmd->add_option("--chat-template-config", o->chat_template_config, "JSON object of extra chat template arguments");
  cmd->add_option("--extra-eos-token", o->extra_eos_token, "Further end-of-sequence tokens (text)")->expected(1, -1);
  cmd->add_option("--max-kv-size", o->max_kv_size, "Rotating KV cache size: keep the first 4 and the newest tokens");
  cmd->add_option("--prompt-cache-file", o->prompt_cache_file, "Prompt cache from `loom cache-prompt` to start from");
  cmd->add_option("--kv-bits", o->kv_bits,
                  "Quantize the KV cache to this many bits (2-6 or 8; default: not quantized)");
  cmd->add_option("--kv-group-size", o->kv_group_size, "Group size of the KV cache quantization");
  cmd->add_option("--quantized-kv-start", o->quantized_kv_start,
                  "Cache size (positions) from which the KV cache is quantized (with --kv-bits)");
  cmd->add_option("--prefill-step-size", o->prefill_step_size, "Prompt tokens per prefill step");
  cmd->add_flag("--verbose", o->verbose, "Print separators around the answer");
  cmd->add_option("--device", o->device, kDeviceHelp);
  add_qmm_option(cmd);
  cmd->add_option("--dtype", o->dtype, kDtypeHelp);
  cmd->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace loom::cli
