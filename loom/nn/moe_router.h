// Router toolkit for mixture-of-experts layers: the expert-selection variants mlx-lm's MoE models
// use, as one spec. Scores are softmax over all experts or sigmoid; an optional correction bias
// changes which experts are selected but not their weights (DeepSeek-V3 style); group-limited
// selection keeps the best `topk_group` of `n_group` groups first; the selected weights are either
// the selected scores (optionally renormalised to sum 1) or a softmax over the selected logits only
// (mlx-lm's Mixtral), then multiplied by `routed_scaling_factor`. All in f32.
#pragma once

#include <optional>

#include "loom/core/array.h"
#include "loom/core/quant.h"
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

// PhiMoE's "sparsemixer" router at inference (transformers modeling_phimoe.py `sparsemixer` with
// training=False), which always selects two experts: the first is the argmax of the logits, the second
// the argmax of the others. Each pick's weight is its softmax over the logits its mask keeps: logit s_j
// is masked out when (pick - s_j) / max(|s_j|, pick) > 2 * jitter_eps (`router_jitter_noise`), and for
// the second pick the first is masked too. So a pick far ahead of the rest weighs 1. logits [..., E]
// (E >= 2) -> indices [..., 2] (first pick first), weights [..., 2] f32.
// loom: mlx-lm's phimoe.py weights the two picks by a softmax over their two logits instead (an
// approximation that can differ a lot); transformers is followed.
Routing sparsemixer_route(const Array& logits, float jitter_eps);

// The format mlx-lm's MoE quant predicates give router gates (qwen3_moe.py, qwen3_next.py): affine,
// 8 bits, group size 64. loom: a gate whose input size 64 does not divide gets group size 32 (mlx-lm's
// quantize fails there; only tiny test models are that narrow), and nullopt (kept dense) if 32 does
// not divide it either.
std::optional<QuantSpec> router_gate_quant_spec(int64_t input_size);

// The sigmoid-gated shared expert's output: sigmoid(gate(x)) * shared_out (Qwen2-MoE).
Array sigmoid_gated(const Linear& gate, const Array& x, const Array& shared_out);

}  // namespace loom::nn
