// Mixture-of-experts layers over stacked experts, as mlx-lm's switch_layers.py defines them:
// SwitchLinear (weight [E, out, in], optional per-expert bias [E, out]) applied with gather_mm, or
// quantized as mlx-lm's QuantizedSwitchLinear (packed weight [E, out, in*bits/32] with scales/biases
// [E, out, in/group_size], applied with gather_qmm), SwitchGLU (gate/up/down, SwiGLU) and SwitchMLP
// (fc1/fc2, GELU). With many routed tokens the (token, expert) pairs are sorted by expert first so
// each expert's weights are read once in a run.
// Also the checkpoint helpers every MoE model's sanitize shares: per-expert tensors and
// transformers-v5 fused tensors -> the stacked switch_mlp layout.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/array.h"
#include "loom/nn/layers.h"
#include "loom/nn/module.h"

namespace loom::nn {

struct SwitchLinear : Module, Quantizable {
  SwitchLinear(int64_t input_dims, int64_t output_dims, int64_t num_experts, bool bias);
  // x [..., 1 or k, M, in] with indices [..., k] -> [..., k, M, out]: x @ weight[indices].T (+ bias).
  Array operator()(const Array& x, const Array& indices, bool sorted_indices = false) const;

  Array weight;  // [E, out, in] (dense)
  Array bias;    // [E, out] when has_bias (never quantized)
  // Set when quantized: w [E, out, in*bits/32], scales/biases [E, out, in/group_size] (the keys
  // `weight`, `scales`, `biases` of mlx-lm's QuantizedSwitchLinear).
  std::optional<QuantizedWeight> qweight;
  int64_t input_dims, output_dims, num_experts;
  bool has_bias;

  void to_quantized(const QuantSpec& spec) override;
  void to_dense(Dtype dtype) override;
  const std::optional<QuantizedWeight>& quantized() const override { return qweight; }
  int64_t quant_axis_size() const override { return input_dims; }
  const Array& dense_weight() const override { return weight; }

 protected:
  void members(Members& m) override;
};

// The activation of SwitchMLP.
enum class SwitchActivation { gelu, gelu_approx, silu, relu };

struct SwitchGLU : Module {
  SwitchGLU(int64_t input_dims, int64_t hidden_dims, int64_t num_experts, bool bias = false);
  // x [..., D], indices [..., k] -> [..., k, D]: down(silu(gate(x)) * up(x)) of each selected expert.
  Array operator()(const Array& x, const Array& indices) const;

  SwitchLinear gate_proj, up_proj, down_proj;

 protected:
  void members(Members& m) override;
};

struct SwitchMLP : Module {
  SwitchMLP(int64_t input_dims, int64_t hidden_dims, int64_t num_experts,
            SwitchActivation activation = SwitchActivation::gelu, bool bias = false);
  // x [..., D], indices [..., k] -> [..., k, D]: fc2(act(fc1(x))) of each selected expert.
  Array operator()(const Array& x, const Array& indices) const;

  SwitchLinear fc1, fc2;
  SwitchActivation activation;

 protected:
  void members(Members& m) override;
};

// Routed-token count from which the (token, expert) pairs are sorted by expert (mlx-lm's rule).
constexpr int64_t kSwitchSortThreshold = 64;

// Runs `experts(x, idx, sorted)` ([N*k, 1, 1, D] or [..., 1, 1, D] -> same lead + [1, D]) with
// mlx-lm's sorting rule and returns [..., k, D]. Shared by SwitchGLU and SwitchMLP.
template <typename F>
Array switch_apply(const Array& x, const Array& indices, F&& experts);

// y [..., k, D] weighted by scores [..., k] and summed over the experts -> f32 [..., D].
Array combine_experts(const Array& y, const Array& scores);

// ---- checkpoint layouts ----
using WeightDict = std::map<std::string, Array>;

// Stacks "<src>.experts.{e}.<from>.<suffix>" (e < num_experts; suffix weight/scales/biases/bias)
// into "<dst>.switch_mlp.<to>.<suffix>", each written straight into one [E, ...] buffer. Returns
// whether anything was stacked. `names` pairs checkpoint names with switch_mlp names.
bool stack_experts(WeightDict& w, const std::string& src, const std::string& dst, int64_t num_experts,
                   const std::vector<std::pair<std::string, std::string>>& names);
// transformers-v5 fused experts: "<src>.experts.gate_up_proj" [E, 2I, H] (gate rows first) and
// "<src>.experts.down_proj" [E, H, I] -> "<dst>.switch_mlp.{gate,up,down}_proj.weight" (views, no
// copy). Returns whether the fused tensors were found.
bool split_fused_experts(WeightDict& w, const std::string& src, const std::string& dst);
// One MoE layer's experts at `prefix`, in whichever of the three layouts the checkpoint uses (v5
// fused, per-expert, or mlx-lm's stacked switch_mlp), brought to the stacked layout.
void sanitize_experts(WeightDict& w, const std::string& prefix, int64_t num_experts,
                      const std::vector<std::pair<std::string, std::string>>& names);

}  // namespace loom::nn

#include "loom/ops/gather.h"
#include "loom/ops/ops.h"

namespace loom::nn {

template <typename F>
Array switch_apply(const Array& x_in, const Array& indices, F&& experts) {
  Shape lead(x_in.shape().begin(), x_in.shape().end() - 1);  // [...]
  int64_t D = x_in.shape(-1), k = indices.shape(-1);
  Array x = expand_dims(expand_dims(x_in, -2), -3);  // [..., 1, 1, D]
  if (indices.size() < kSwitchSortThreshold) {
    Array y = experts(x, indices, false);  // [..., k, 1, D']
    return squeeze(y, -2);
  }
  // Sort the (token, expert) pairs by expert: token of pair i is order[i] / k.
  Array flat = reshape(indices, {-1});
  Array order = argsort(flat);
  Array inv_order = argsort(order);
  Array token = astype(floor(divide(astype(order, Dtype::f32), full({1}, static_cast<double>(k)))), Dtype::i32);
  Array xs = take(reshape(x, {-1, 1, D}), token, 0);  // [N*k, 1, D]
  Array idx = take(flat, order, 0);                   // [N*k], non-decreasing
  Array y = take(experts(xs, idx, true), inv_order, 0);  // [N*k, 1, D']
  Shape out = lead;
  out.insert(out.end(), {k, y.shape(-1)});
  return reshape(y, out);
}

}  // namespace loom::nn
