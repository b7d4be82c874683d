// Router toolkit for mixture-of-experts layers: the expert-selection variants mlx-lm's MoE models
// use, as one spec. Scores are softmax over all experts or sigmoid; an optional correction bias
// changes which experts are selected but not their weights (DeepSeek-V3 style); group-limited
// selection keeps the best `topk_group` of `n_group` groups first; the selected weights are either
// the selected scores (optionally renormalised to sum 1) or a softmax over the selected logits only
// (mlx-lm's Mixtral), then multiplied by `routed_scaling_factor`. All in f32.
#pragma once

#include "loom/core/array.h"
#include "loom/nn/layers.h"

namespace loom::nn {

enum class RouterScore { softmax, sigmoid };
// How the selected experts' weights are formed.
enum class RouterWeights {
  scores,                // the selected scores as they are
  renormalized,          // the selected scores divided by their sum (norm_topk_prob)
  softmax_of_selected,   // softmax over the selected logits only
};

struct RouterSpec {
  int top_k = 1;
  RouterScore score = RouterScore::softmax;
  RouterWeights weights = RouterWeights::scores;
  int n_group = 1, topk_group = 1;  // group-limited selection when n_group > 1
  float routed_scaling_factor = 1.0f;
};

struct Routing {
  Array indices;  // uint32 [..., top_k]: the selected experts, best first
  Array weights;  // f32 [..., top_k]
};

// logits [..., E] -> the selected experts and their weights. `correction_bias` [E] (optional) is
// added to the scores for selection only.
Routing route(const Array& logits, const RouterSpec& spec, const Array& correction_bias = {});

// The sigmoid-gated shared expert's output: sigmoid(gate(x)) * shared_out (Qwen2-MoE).
Array sigmoid_gated(const Linear& gate, const Array& x, const Array& shared_out);

}  // namespace loom::nn
