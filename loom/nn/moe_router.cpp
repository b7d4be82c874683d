#include "loom/nn/moe_router.h"

#include <limits>

#include "loom/common/error.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

// Zeroes the scores of all but the best `topk_group` groups; a group's rank is the sum of its two
// best scores (DeepSeek-V3). sel [..., E] with E = n_group * group_size.
Array limit_groups(const Array& sel, int n_group, int topk_group) {
  Shape lead(sel.shape().begin(), sel.shape().end() - 1);
  int64_t E = sel.shape(-1), gs = E / n_group;
  Shape grouped = lead;
  grouped.insert(grouped.end(), {n_group, gs});
  Array g = reshape(sel, grouped);  // [..., G, gs]
  int top2 = static_cast<int>(std::min<int64_t>(2, gs));
  Array best = take_along_axis(g, slice_axis(argpartition(negative(g), top2 - 1, -1), -1, 0, top2), -1);
  Array group_score = sum(best, {-1});                                                   // [..., G]
  int drop = n_group - topk_group;
  if (drop <= 0) return sel;
  Array dropped = slice_axis(argpartition(group_score, drop - 1, -1), -1, 0, drop);     // [..., drop]
  // keep[..., G] = group not among `dropped`.
  Array ids = arange(0, n_group, 1, Dtype::u32, sel.device());                           // [G]
  Array hit = equal(expand_dims(dropped, -1), ids);                                      // [..., drop, G]
  Array keep = logical_not(astype(max(astype(hit, Dtype::f32), {-2}), Dtype::bool_));  // [..., G]
  Array masked = where(expand_dims(keep, -1), g, zeros_like(g));
  return reshape(masked, sel.shape());
}

}  // namespace

Routing route(const Array& logits_in, const RouterSpec& spec, const Array& correction_bias) {
  int64_t E = logits_in.shape(-1);
  if (spec.top_k < 1 || spec.top_k > E)
    throw ValueError(format_error("route", "top_k " + std::to_string(spec.top_k) + " for " + std::to_string(E) + " experts"));
  if (spec.n_group > 1 && (E % spec.n_group || spec.topk_group < 1 || spec.topk_group > spec.n_group))
    throw ValueError(format_error("route", "n_group " + std::to_string(spec.n_group) + " / topk_group " +
                                               std::to_string(spec.topk_group) + " do not fit " + std::to_string(E) + " experts"));
  Array logits = astype(logits_in, Dtype::f32);
  Array scores = spec.score == RouterScore::softmax ? softmax(logits, -1) : sigmoid(logits);
  Array sel = correction_bias.valid() ? add(scores, astype(correction_bias, Dtype::f32)) : scores;
  if (spec.n_group > 1) sel = limit_groups(sel, spec.n_group, spec.topk_group);
  int k = spec.top_k;
  Routing r;
  r.indices = slice_axis(argpartition(negative(sel), k - 1, -1), -1, 0, k);
  switch (spec.weights) {
    case RouterWeights::scores:
      r.weights = take_along_axis(scores, r.indices, -1);
      break;
    case RouterWeights::renormalized: {
      Array w = take_along_axis(scores, r.indices, -1);
      r.weights = divide(w, sum(w, {-1}, /*keepdims=*/true));
      break;
    }
    case RouterWeights::softmax_of_selected:
      r.weights = softmax(take_along_axis(logits, r.indices, -1), -1);
      break;
  }
  if (spec.routed_scaling_factor != 1.0f) r.weights = multiply(r.weights, weak_scalar(spec.routed_scaling_factor, r.weights));
  return r;
}

Routing sparsemixer_route(const Array& logits_in, float jitter_eps) {
  int64_t E = logits_in.shape(-1);
  if (E < 2) throw ValueError(format_error("sparsemixer", "needs at least 2 experts, got " + std::to_string(E)));
  Array l = astype(logits_in, Dtype::f32);
  Array ninf = weak_scalar(-std::numeric_limits<double>::infinity(), l);
  Array absl = abs(l);
  // The weight of `pick` (its score `top`) under its mask, applied to `scores`.
  auto masked_weight = [&](const Array& scores, const Array& pick, const Array& top) {
    Array rel = divide(subtract(top, l), maximum(absl, top));
    Array masked = where(greater(rel, weak_scalar(2.0 * jitter_eps, rel)), ninf, scores);
    return take_along_axis(softmax(masked, -1), pick, -1);
  };
  Array i1 = slice_axis(argpartition(negative(l), 0, -1), -1, 0, 1);  // [..., 1]
  Array w1 = masked_weight(l, i1, take_along_axis(l, i1, -1));
  Array ids = arange(0, static_cast<double>(E), 1, Dtype::u32, l.device());  // (on the device: no upload)
  Array rest = where(equal(ids, i1), ninf, l);  // the first pick masked out
  Array i2 = slice_axis(argpartition(negative(rest), 0, -1), -1, 0, 1);
  Array w2 = masked_weight(rest, i2, take_along_axis(rest, i2, -1));
  return {concatenate({i1, i2}, -1), concatenate({w1, w2}, -1)};
}

std::optional<QuantSpec> router_gate_quant_spec(int64_t input_size) {
  for (int gs : {64, 32})
    if (input_size % gs == 0) return QuantSpec{QuantMode::affine, 8, gs};
  return std::nullopt;
}

Array sigmoid_gated(const Linear& gate, const Array& x, const Array& shared_out) {
  return multiply(sigmoid(gate(x)), shared_out);
}

}  // namespace loom::nn
