// The generation loop, as mlx-lm's generate_step / stream_generate: prefill the prompt through the
// cache in chunks of prefill_step_size (no LM head), run the last prompt token with
// LogitsMode::last, then decode one token at a time. Logits processors see prompt + generated
// tokens; the sampler sees log-probabilities. Step n+1 is computed before token n is handed back,
// so detokenizing overlaps the next step once the backend is asynchronous.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "loom/generate/logits_processors.h"
#include "loom/generate/sampling.h"
#include "loom/models/model.h"
#include "loom/tokenizer/tokenizer.h"

namespace loom::generate {

struct GenerateOptions {
  int max_tokens = 256;  // -1: no limit (until eos, a stop string or the context window)
  int prefill_step_size = 2048;
  SamplerSpec sampler;
  uint64_t seed = 0;
  LogitsProcessorSpec processors;
  // Context window: generation stops (finish reason "context") when the cache reaches it; a prompt
  // that does not fit is an error. 0 = the model's context_length() (0 there = unlimited).
  int64_t max_context = 0;
  // --kv-bits/--kv-group-size/--quantized-kv-start: after every model call the cache's KVCache
  // layers become QuantizedKVCache once it holds `start` positions (mlx-lm's
  // maybe_quantize_kv_cache). Not with a RotatingKVCache (an error, as in mlx-lm).
  std::optional<models::KVQuantization> kv_quantization;
};

// Token-level iterator (generate_step): yields (token, logprobs) pairs.
class TokenGenerator {
 public:
  // The cache may already hold a prefix (prompt cache); `prompt` is what follows it. Needs at least
  // one prompt token.
  TokenGenerator(models::LanguageModel& model, models::Cache& cache, std::vector<int32_t> prompt,
                 const GenerateOptions& options);
  // The next token, or nullopt when max_tokens are out or the context window is full.
  std::optional<int32_t> next();
  // Log-probabilities [1, V] of the distribution the last returned token was drawn from.
  const Array& logprobs() const { return current_logprobs_; }
  int64_t prompt_tokens() const { return static_cast<int64_t>(prompt_size_); }
  double prompt_seconds() const { return prompt_seconds_; }
  bool context_full() const { return context_full_; }

 private:
  // Runs the model on `tokens` [1, n] and samples; fills next_token_/next_logprobs_.
  void step(const std::vector<int32_t>& tokens);
  // After every model call, as mlx-lm's generate_step: maybe_quantize_kv_cache when kv_quantization.
  void maybe_quantize_cache();

  models::LanguageModel& model_;
  models::Cache& cache_;
  GenerateOptions options_;
  Sampler sampler_;
  std::vector<LogitsProcessor> processors_;
  std::vector<int32_t> history_;  // prompt + generated, for the processors
  size_t prompt_size_ = 0;
  int64_t max_context_ = 0;
  int generated_ = 0;
  bool context_full_ = false;
  std::optional<int32_t> next_token_;
  Array next_logprobs_, current_logprobs_;
  double prompt_seconds_ = 0;
};

// One streamed piece of text (mlx-lm's GenerationResponse).
struct GenerationResponse {
  std::string text;                 // new text safe to print (may be empty)
  int32_t token = -1;               // the token of this step (-1 on the final flush)
  int64_t prompt_tokens = 0;
  double prompt_tps = 0;
  int64_t generation_tokens = 0;
  double generation_tps = 0;
  double peak_memory_gb = 0;
  std::string finish_reason;  // "" while running; "stop" (eos or stop string), "length", "context"
};

struct StreamOptions {
  GenerateOptions generate;
  std::set<int32_t> eos_ids;
  std::vector<std::string> stop_strings;
  bool skip_special_tokens = false;
};

// Generates from prompt ids, calling on_response for each token and once more at the end (with
// finish_reason set). Returns the generated ids (eos excluded). on_response returning false stops.
std::vector<int32_t> stream_generate(models::LanguageModel& model, const tokenizer::Tokenizer& tokenizer,
                                     models::Cache& cache, const std::vector<int32_t>& prompt,
                                     const StreamOptions& options,
                                     const std::function<bool(const GenerationResponse&)>& on_response);

}  // namespace loom::generate
