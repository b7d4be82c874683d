#include "loom/generate/generate.h"

#include <algorithm>
#include <cstdio>
#include <typeinfo>

#include "loom/common/error.h"
#include "loom/core/allocator.h"
#include "loom/generate/stopping.h"
#include "loom/ops/device.h"
#include "loom/ops/ops.h"

namespace loom::generate {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

TokenGenerator::TokenGenerator(models::LanguageModel& model, models::Cache& cache, std::vector<int32_t> prompt,
                               const GenerateOptions& options)
    : model_(model),
      cache_(cache),
      options_(options),
      sampler_(options.sampler, options.seed),
      processors_(make_logits_processors(options.processors)),
      history_window_(history_needed(options.processors)),
      graph_(options.cuda_graphs && DecodeGraph::default_enabled()) {
  auto t0 = Clock::now();
  prompt_size_ = prompt.size();
  if (prompt.empty()) throw ValueError(format_error("generate", "the prompt is empty (need at least one token)"));
  if (options_.prefill_step_size < 1) throw ValueError(format_error("generate", "prefill_step_size must be >= 1"));
  for (int32_t id : prompt)
    if (id < 0 || id >= model_.vocab_size())
      throw ValueError(format_error("generate", "prompt token id " + std::to_string(id) +
                                                    " is outside the vocabulary of " +
                                                    std::to_string(model_.vocab_size())));
  max_context_ = options_.max_context > 0 ? options_.max_context : model_.context_length();
  int64_t need = cache_.offset() + static_cast<int64_t>(prompt.size());
  if (max_context_ > 0 && need > max_context_)
    throw ValueError(format_error("generate", "the prompt needs " + std::to_string(need) +
                                                  " positions (cached prefix included) but the context window is " +
                                                  std::to_string(max_context_) + " tokens"));
  if (options_.kv_quantization) {
    models::validate(*options_.kv_quantization);
    // Refused up front rather than when the cache reaches --quantized-kv-start (where mlx-lm fails).
    for (const auto& layer : cache_.layers)
      if (dynamic_cast<const models::RotatingKVCache*>(layer.get()))
        throw NotSupportedError(format_error("kv-bits", "the quantized KV cache (--kv-bits) with the rotating KV cache "
                                                        "(--max-kv-size) is not supported (as in mlx-lm)"));
  }
  // Prefill everything but the last prompt token in chunks, filling the cache only.
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (int64_t s = 0; s < n - 1; s += options_.prefill_step_size) {
    int64_t len = std::min<int64_t>(options_.prefill_step_size, n - 1 - s);
    std::vector<int32_t> chunk(prompt.begin() + s, prompt.begin() + s + len);
    model_.forward(Array::from(chunk, {1, len}), cache_, models::LogitsMode::none);
    maybe_quantize_cache();
  }
  if (history_window_ > 0)
    prompt_tail_.assign(prompt.end() - std::min<int64_t>(n, history_window_), prompt.end());
  step(Array::from(std::vector<int32_t>{prompt.back()}, {1, 1}), /*append=*/false);
  preflight_kv_cache();
  pending_->wait();  // the prompt's time includes its first token, as mlx-lm's prompt_tps
  prompt_seconds_ = seconds_since(t0);
}

void TokenGenerator::step(const Array& tokens, bool append) {
  Array logits = graph_.forward(model_, cache_, tokens);
  maybe_quantize_cache();
  // [1, V] f32 on the model's device: processors and sampler run there.
  logits = astype(reshape(logits, {1, logits.shape(-1)}), Dtype::f32);
  if (history_window_ > 0) {
    if (!history_.valid())
      history_ = to_device(Array::from(prompt_tail_, {static_cast<int64_t>(prompt_tail_.size())}), logits.device());
    if (append) {
      history_ = concatenate({history_, reshape(tokens, {-1})}, 0);
      const int64_t h = history_.shape(0);
      if (h > history_window_) history_ = slice_axis(history_, 0, h - history_window_, h);
    }
  }
  for (auto& p : processors_) logits = p(history_, logits);
  Array logprobs = logits - logsumexp(logits, -1, /*keepdims=*/true);
  Array token = reshape(sampler_(logprobs), {1});
  pending_.emplace(Pending{token, logprobs, Readback(token), std::nullopt});
}

void TokenGenerator::preflight_kv_cache() const {
  int64_t target = options_.max_tokens >= 0 ? cache_.offset() + options_.max_tokens : 0;
  if (max_context_ > 0) target = target > 0 ? std::min(target, max_context_) : max_context_;
  if (target <= 0) return;
  const int64_t page = models::KVCache::kPageSize, pages_end = (target + page - 1) / page * page;
  double need = 0;
  for (const auto& layer : cache_.layers)
    if (layer && typeid(*layer) == typeid(models::KVCache)) {
      const auto& kv = static_cast<const models::KVCache&>(*layer);
      need += static_cast<double>(kv.bytes_per_position()) * static_cast<double>(std::max<int64_t>(0, pages_end - kv.capacity()));
    }
  if (need == 0) return;
  const Device d = pending_->token.device();
  size_t free_b = 0, total_b = 0;
  device_memory(d, free_b, total_b);
  const double avail = static_cast<double>(free_b) + static_cast<double>(allocator::stats(d).cached_bytes);
  auto gib = [](double b) {
    char s[32];
    std::snprintf(s, sizeof s, "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
    return std::string(s);
  };
  if (need > avail)
    throw Error(format_error("generate", "the KV cache for " + std::to_string(target) + " positions needs " + gib(need) +
                                             " more on " + describe_device(d) + ", which has " + gib(avail) +
                                             " free (lower --max-tokens, or use --max-kv-size or --kv-bits)"));
}

void TokenGenerator::maybe_quantize_cache() {
  if (options_.kv_quantization) models::maybe_quantize_kv_cache(cache_, *options_.kv_quantization);
}

std::optional<int32_t> TokenGenerator::next() {
  if (!pending_) return std::nullopt;
  if (options_.max_tokens >= 0 && generated_ >= options_.max_tokens) return std::nullopt;
  Pending cur = std::move(*pending_);
  pending_.reset();
  ++generated_;
  // Queue the following step on the device-side token first (mlx-lm's look-ahead), unless
  // max_tokens is reached or the window is full; then wait for this token's own copy.
  if (options_.max_tokens < 0 || generated_ < options_.max_tokens) {
    if (max_context_ > 0 && cache_.offset() + 1 > max_context_)
      context_full_ = true;
    else
      step(reshape(cur.token, {1, 1}), /*append=*/true);
  }
  current_logprobs_ = cur.logprobs;
  return cur.wait();
}

std::vector<int32_t> stream_generate(models::LanguageModel& model, const tokenizer::Tokenizer& tokenizer,
                                     models::Cache& cache, const std::vector<int32_t>& prompt,
                                     const StreamOptions& options,
                                     const std::function<bool(const GenerationResponse&)>& on_response) {
  allocator::reset_peak();
  TokenGenerator gen(model, cache, prompt, options.generate);
  tokenizer::StreamingDetokenizer detok(tokenizer, options.skip_special_tokens);
  StopStringFilter stops(options.stop_strings);
  std::vector<int32_t> out;
  GenerationResponse r;
  r.prompt_tokens = gen.prompt_tokens();
  r.prompt_tps = gen.prompt_seconds() > 0 ? static_cast<double>(r.prompt_tokens) / gen.prompt_seconds() : 0;
  auto t0 = Clock::now();
  auto update_stats = [&] {
    double dt = seconds_since(t0);
    r.generation_tokens = static_cast<int64_t>(out.size());
    r.generation_tps = dt > 0 ? static_cast<double>(r.generation_tokens) / dt : 0;
    r.peak_memory_gb = static_cast<double>(allocator::stats().peak_bytes) / 1e9;
  };
  std::string finish, tail;
  while (true) {
    std::optional<int32_t> tok = gen.next();
    if (!tok) {
      finish = gen.context_full() ? "context" : "length";
      break;
    }
    if (options.eos_ids.count(*tok)) {
      finish = "stop";
      break;
    }
    out.push_back(*tok);
    r.token = *tok;
    r.text = stops.push(detok.add_token(*tok));
    update_stats();
    if (stops.stopped()) {
      tail = r.text;  // the text before the stop string goes out with the final response
      finish = "stop";
      break;
    }
    if (!on_response(r)) {
      finish = "stop";
      break;
    }
    if (gen.context_full()) {
      finish = "context";
      break;
    }
  }
  r.token = -1;
  r.text = tail + (stops.stopped() ? std::string() : stops.push(detok.finalize()));
  r.text += stops.flush();
  update_stats();
  r.finish_reason = finish;
  on_response(r);
  return out;
}

}  // namespace loom::generate
