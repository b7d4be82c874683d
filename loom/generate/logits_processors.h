// Logits processors with mlx-lm's semantics (make_logits_processors): each takes the tokens so far
// (prompt and generated) and logits [..., V] and returns new f32 logits, the input untouched. Applied in
// the order logit bias, repetition, presence, frequency penalty, before the log-softmax that feeds the
// sampler. They are gathers and scatters (take_along_axis, put_along_axis, scatter_add_axis) on the
// logits' device; the token ids may live there too (the generation loop keeps them there), so a
// processor never reads anything back to the host.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "loom/core/array.h"

namespace loom::generate {

class LogitsProcessor {
 public:
  // tokens: integer ids [n], most recent last, on the host or on the logits' device.
  using Fn = std::function<Array(const Array& tokens, const Array& logits)>;

  LogitsProcessor() = default;
  explicit LogitsProcessor(Fn fn) : fn_(std::move(fn)) {}

  // Ids outside [0, V) have no effect (host ids are dropped; device ids are skipped by the scatter).
  Array operator()(const Array& tokens, const Array& logits) const { return fn_(tokens, logits); }
  // Host ids (uploaded when the logits are on a device).
  Array operator()(std::span<const int32_t> tokens, const Array& logits) const;

 private:
  Fn fn_;
};

// Adds bias[id] to the logit of id.
LogitsProcessor make_logit_bias(std::map<int32_t, float> bias);
// Sign-aware multiplicative penalty on tokens seen in the last context_size tokens: negative logits
// are multiplied by the penalty, others divided (each distinct token once).
LogitsProcessor make_repetition_penalty(float penalty, int context_size = 20);
// Subtracts the penalty once from every token that occurs in the last context_size tokens.
LogitsProcessor make_presence_penalty(float penalty, int context_size = 20);
// Subtracts the penalty once per occurrence in the last context_size tokens.
LogitsProcessor make_frequency_penalty(float penalty, int context_size = 20);

struct LogitsProcessorSpec {
  std::map<int32_t, float> logit_bias;
  std::optional<float> repetition_penalty;
  int repetition_context_size = 20;
  std::optional<float> presence_penalty;
  int presence_context_size = 20;
  std::optional<float> frequency_penalty;
  int frequency_context_size = 20;
};

// The processors a spec asks for (a penalty of 0 or none is skipped), in mlx-lm's order.
std::vector<LogitsProcessor> make_logits_processors(const LogitsProcessorSpec& spec);
// How many of the most recent tokens the spec's processors look at (0: none; the bias looks at none).
int64_t history_needed(const LogitsProcessorSpec& spec);

}  // namespace loom::generate
