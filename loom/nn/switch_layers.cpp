#include "loom/nn/switch_layers.h"

#include <cmath>

#include "loom/common/error.h"
#include "loom/ops/fast.h"

namespace loom::nn {

SwitchLinear::SwitchLinear(int64_t in, int64_t out, int64_t e, bool bias)
    : input_dims(in), output_dims(out), num_experts(e), has_bias(bias) {}

void SwitchLinear::members(Members& m) {
  if (qweight) {
    const QuantSpec& q = qweight->spec;
    m.param("weight", qweight->w, {num_experts, output_dims, input_dims * q.bits / 32});
    m.param("scales", qweight->scales, {num_experts, output_dims, input_dims / q.group_size});
    if (q.mode == QuantMode::affine)
      m.param("biases", qweight->biases, {num_experts, output_dims, input_dims / q.group_size});
  } else {
    m.param("weight", weight, {num_experts, output_dims, input_dims});
  }
  if (has_bias) m.param("bias", bias, {num_experts, output_dims});
}

void SwitchLinear::to_quantized(const QuantSpec& spec) {
  const char* what = "SwitchLinear";
  if (qweight)
    throw ValueError(format_error(what, "layer is already quantized (" + quant_spec_str(qweight->spec) + ")"));
  if (!quant_spec_valid(spec)) throw ValueError(format_error(what, "invalid quantization " + quant_spec_str(spec)));
  if (input_dims % spec.group_size != 0)
    throw ValueError(format_error(what, "input size " + std::to_string(input_dims) +
                                            " is not divisible by group size " + std::to_string(spec.group_size)));
  if (weight.valid()) {
    qweight = QuantizedWeight::from_dense(weight, spec);  // quantize() packs the last axis of the whole stack
  } else {
    qweight = QuantizedWeight{};
    qweight->spec = spec;
  }
  weight = Array();
}

void SwitchLinear::to_dense(Dtype dtype) {
  if (!qweight) return;
  weight = qweight->dequantized(dtype);
  qweight.reset();
}

Array SwitchLinear::operator()(const Array& x, const Array& indices, bool sorted_indices) const {
  Array y = qweight ? gather_qmm(x, qweight->w, qweight->scales, qweight->biases, {}, indices, /*transpose=*/true,
                                 qweight->spec, sorted_indices, qweight->global_scale)
                    : gather_mm(x, swapaxes(weight, -1, -2), {}, indices, sorted_indices);
  if (has_bias) y = add(y, expand_dims(take(bias, indices, 0), -2));  // bias[indices]: [..., k, 1, out]
  return y;
}

SwitchGLU::SwitchGLU(int64_t in, int64_t hidden, int64_t e, bool bias)
    : gate_proj(in, hidden, e, bias), up_proj(in, hidden, e, bias), down_proj(hidden, in, e, bias) {}

void SwitchGLU::members(Members& m) { m.child("gate_proj", gate_proj).child("up_proj", up_proj).child("down_proj", down_proj); }

Array SwitchGLU::operator()(const Array& x, const Array& indices) const {
  return switch_apply(x, indices, [this](const Array& xs, const Array& idx, bool sorted) {
    return down_proj(fast::swiglu(gate_proj(xs, idx, sorted), up_proj(xs, idx, sorted)), idx, sorted);
  });
}

SwitchMLP::SwitchMLP(int64_t in, int64_t hidden, int64_t e, SwitchActivation act, bool bias)
    : fc1(in, hidden, e, bias), fc2(hidden, in, e, bias), activation(act) {}

void SwitchMLP::members(Members& m) { m.child("fc1", fc1).child("fc2", fc2); }

Array SwitchMLP::operator()(const Array& x, const Array& indices) const {
  return switch_apply(x, indices, [this](const Array& xs, const Array& idx, bool sorted) {
    Array h = fc1(xs, idx, sorted);
    switch (activation) {
      case SwitchActivation::gelu: h = gelu(h); break;
      case SwitchActivation::gelu_approx: h = gelu_approx(h); break;
      case SwitchActivation::silu: h = silu(h); break;
      case SwitchActivation::relu: h = relu(h); break;
    }
    return fc2(h, idx, sorted);
  });
}

Array combine_experts(const Array& y, const Array& scores) {
  // In f32 whatever y's dtype (as transformers does): the weighted sum is the layer's output.
  return sum(multiply(y, expand_dims(astype(scores, Dtype::f32), -1)), {-2});
}

bool stack_experts(WeightDict& w, const std::string& src, const std::string& dst, int64_t num_experts,
                   const std::vector<std::pair<std::string, std::string>>& names) {
  bool any = false;
  for (const auto& [from, to] : names) {
    for (const char* suffix : {"weight", "scales", "biases", "bias"}) {
      auto key = [&](int64_t e) { return src + ".experts." + std::to_string(e) + "." + from + "." + suffix; };
      auto first = w.find(key(0));
      if (first == w.end()) continue;
      Shape shape = first->second.shape();
      shape.insert(shape.begin(), num_experts);
      Array stacked = Array::empty(shape, first->second.dtype(), first->second.device());
      for (int64_t e = 0; e < num_experts; ++e) {
        auto it = w.find(key(e));
        if (it == w.end()) throw IoError(format_error("sanitize", "missing expert weight '" + key(e) + "'"));
        assign(slice_axis(stacked, 0, e, e + 1), expand_dims(it->second, 0));
        w.erase(it);
      }
      w[dst + ".switch_mlp." + to + "." + suffix] = stacked;
      any = true;
    }
  }
  return any;
}

bool split_fused_experts(WeightDict& w, const std::string& src, const std::string& dst) {
  auto gu = w.find(src + ".experts.gate_up_proj");
  auto dn = w.find(src + ".experts.down_proj");
  if (gu == w.end() || dn == w.end()) return false;
  Array gate_up = gu->second, down = dn->second;
  if (gate_up.ndim() != 3 || gate_up.shape(1) % 2)
    throw IoError(format_error("sanitize", "'" + gu->first + "' has shape " + shape_str(gate_up.shape()) +
                                               ", expected [experts, 2 * intermediate, hidden]"));
  int64_t I = gate_up.shape(1) / 2;
  w.erase(gu);
  w.erase(dn);
  w[dst + ".switch_mlp.gate_proj.weight"] = slice_axis(gate_up, 1, 0, I);
  w[dst + ".switch_mlp.up_proj.weight"] = slice_axis(gate_up, 1, I, 2 * I);
  w[dst + ".switch_mlp.down_proj.weight"] = down;
  return true;
}

void sanitize_experts(WeightDict& w, const std::string& prefix, int64_t num_experts,
                      const std::vector<std::pair<std::string, std::string>>& names) {
  if (!split_fused_experts(w, prefix, prefix)) stack_experts(w, prefix, prefix, num_experts, names);
}

}  // namespace loom::nn
