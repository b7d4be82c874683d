// Logits processors with mlx-lm's semantics (make_logits_processors): each takes the tokens so far
// (prompt and generated) and logits [B, V] and returns new logits. Applied in the order logit bias,
// repetition, presence, frequency penalty, before the log-softmax that feeds the sampler.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "loom/core/array.h"

namespace loom::generate {

using LogitsProcessor = std::function<Array(std::span<const int32_t> tokens, const Array& logits)>;

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

}  // namespace loom::generate
