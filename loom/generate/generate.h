// The generation loop, as mlx-lm's generate_step / stream_generate: prefill the prompt through the
// cache in chunks of prefill_step_size (no LM head), run the last prompt token with
// LogitsMode::last, then decode one token at a time. Logits processors see prompt + generated
// tokens; the sampler sees log-probabilities. Logits, processors and sampler stay on the model's
// device; only the sampled id is copied to the host.
//
// Look-ahead (mlx-lm's generate_step). What the code guarantees: next() queues step n+1 (the model
// on token n, which never leaves the device, then processors and sampler) before it waits for token
// n's id, and that wait covers token n's own copy only (a Readback: an event behind the copy on CUDA),
// not the work queued after it. So on a GPU the caller detokenizes and prints token n while step n+1
// runs. The overlap is complete when queuing step n+1 needs no host synchronization: the sampler's
// and processors' host constants are uploaded once and cached, but a model whose forward reads device
// data back or uploads fresh host arrays (each upload synchronizes the stream) waits there. On the CPU
// every op runs as it is called, so step n+1 is simply computed before token n is returned. Either way
// the cache holds token n when next() returns it (also an eos), as in mlx-lm.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "loom/generate/decode_graph.h"
#include "loom/generate/logits_processors.h"
#include "loom/generate/sampling.h"
#include "loom/models/model.h"
#include "loom/ops/readback.h"
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
  // Replay decode steps as CUDA graphs where they apply (decode_graph.h); LOOM_CUDA_GRAPHS=0 also
  // turns them off.
  bool cuda_graphs = true;
};

// Token-level iterator (generate_step): yields (token, logprobs) pairs.
class TokenGenerator {
 public:
  // The cache may already hold a prefix (prompt cache); `prompt` is what follows it. Needs at least
  // one prompt token.
  TokenGenerator(models::LanguageModel& model, models::Cache& cache, std::vector<int32_t> prompt,
                 const GenerateOptions& options);
  // The next token, or nullopt when max_tokens are out or the context window is full. Queues the
  // following step first (see the look-ahead note above), then waits for this token's id.
  std::optional<int32_t> next();
  // Log-probabilities [1, V] (f32, on the model's device) of the distribution the last returned token
  // was drawn from.
  const Array& logprobs() const { return current_logprobs_; }
  int64_t prompt_tokens() const { return static_cast<int64_t>(prompt_size_); }
  double prompt_seconds() const { return prompt_seconds_; }
  bool context_full() const { return context_full_; }
  // The decode steps' graph replays (captures, replays, failure), for tests and tools.
  const DecodeGraph& decode_graph() const { return graph_; }

 private:
  // A sampled token on its way to the host.
  struct Pending {
    Array token;     // int32 [1] on the model's device
    Array logprobs;  // [1, V] f32 on the model's device
    Readback read;   // the queued copy of `token`
    std::optional<int32_t> value;
    int32_t wait() {
      if (!value) value = read.get().item<int32_t>();
      return *value;
    }
  };
  // Queues the model on `tokens` [1, n] (host ids, or the id just sampled, on the device), the
  // processors and the sampler; sets pending_ without waiting for anything. `append`: the tokens
  // join the processors' history first (the generated ones; the prompt is there already).
  void step(const Array& tokens, bool append);
  // After every model call, as mlx-lm's generate_step: maybe_quantize_kv_cache when kv_quantization.
  void maybe_quantize_cache();
  // Before decoding: the KV pages the whole generation will add (up to max_tokens, or the context
  // window) must fit the device's free memory, else a clear error now rather than out of memory later.
  void preflight_kv_cache() const;

  models::LanguageModel& model_;
  models::Cache& cache_;
  GenerateOptions options_;
  Sampler sampler_;
  std::vector<LogitsProcessor> processors_;
  // The processors' view of prompt + generated ids: the last history_window_ of them, int32 on the
  // model's device, appended there (no host round trip). Starts as the prompt's tail.
  int64_t history_window_ = 0;
  std::vector<int32_t> prompt_tail_;
  Array history_;
  size_t prompt_size_ = 0;
  int64_t max_context_ = 0;
  int generated_ = 0;
  bool context_full_ = false;
  DecodeGraph graph_;
  std::optional<Pending> pending_;
  Array current_logprobs_;
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
