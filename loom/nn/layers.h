// Basic layers, named and shaped as mlx.nn's so checkpoints map onto them by key:
// Linear (weight [out, in], optional bias), Embedding (weight [vocab, dim], as_linear for tied
// heads), RMSNorm and LayerNorm. Linear and Embedding can be quantized (mlx.nn's QuantizedLinear /
// QuantizedEmbedding keys: `weight` uint32 packed, `scales`, `biases` for affine).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "loom/core/array.h"
#include "loom/core/quant.h"
#include "loom/nn/module.h"
#include "loom/ops/quantized.h"
#include "loom/ops/ssm.h"

namespace loom::nn {

// A matrix [rows, cols] stored quantized along cols (MLX formats). Shared by every quantizable layer.
struct QuantizedWeight {
  Array w;             // uint32 [rows, cols * bits / 32]
  Array scales;        // [rows, cols / group_size] (uint8 for the fp modes)
  Array biases;        // [rows, cols / group_size], affine only
  Array global_scale;  // optional f32 scalar (nvfp4)
  QuantSpec spec;

  // Declares w/scales/biases as parameters `weight`, `scales`, `biases` with their packed shapes.
  void declare(Members& m, int64_t rows, int64_t cols);
  // x [..., cols] @ W.T -> [..., rows].
  Array matmul_t(const Array& x) const;
  // Rows `ids` (any integer shape) dequantized -> [..., cols] in `dtype`.
  Array take_rows(const Array& ids, Dtype dtype) const;
  // The whole matrix dequantized to `dtype`.
  Array dequantized(Dtype dtype) const;
  // Quantizes a dense matrix.
  static QuantizedWeight from_dense(const Array& w, const QuantSpec& spec);
  // The operands as loom/ops/quantized.h takes them.
  QuantizedMatrix matrix() const { return {w, scales, biases, spec, global_scale}; }
};

// A layer that can switch to quantized weights (mlx.nn's `to_quantized`).
class Quantizable {
 public:
  virtual ~Quantizable() = default;
  // Switches to `spec`: quantizes the dense weight when one is loaded, else declares packed slots
  // for the loader to fill.
  virtual void to_quantized(const QuantSpec& spec) = 0;
  // Switches back to a dense weight in `dtype` (dequantizing).
  virtual void to_dense(Dtype dtype) = 0;
  virtual const std::optional<QuantizedWeight>& quantized() const = 0;
  // Length of the quantized axis (the input features of a Linear, the dims of an Embedding).
  virtual int64_t quant_axis_size() const = 0;
  // The dense weight (invalid while quantized).
  virtual const Array& dense_weight() const = 0;
};

// Decides per module: a spec to quantize with, or nullopt to leave it.
using QuantPredicate = std::function<std::optional<QuantSpec>(const std::string& path, Quantizable& layer)>;
// Switches every Quantizable module of the tree for which `pred` returns a spec (nn.quantize).
// Returns the number of layers switched.
int quantize_module(Module& root, const QuantPredicate& pred, const std::string& prefix = "");

struct Linear : Module, Quantizable {
  Linear(int64_t in_features, int64_t out_features, bool bias);
  // x [..., in] -> [..., out]; weights stay in their stored dtype (the matmul kernel converts).
  Array operator()(const Array& x) const;

  Array weight;  // [out, in] (dense)
  Array bias;    // [out] when has_bias
  std::optional<QuantizedWeight> qweight;  // set when quantized
  int64_t in_features, out_features;
  bool has_bias;

  void to_quantized(const QuantSpec& spec) override;
  void to_dense(Dtype dtype) override;
  const std::optional<QuantizedWeight>& quantized() const override { return qweight; }
  int64_t quant_axis_size() const override { return in_features; }
  const Array& dense_weight() const override { return weight; }

 protected:
  void members(Members& m) override;
};

// Linear layers that read one input (a layer's q/k/v projections): {l(x) for l in layers}. Quantized layers
// go to quantized_matmuls together, dense ones to matmuls_t (one GEMV launch per decode step on CUDA when
// they share a format or dtype).
std::vector<Array> linears(const Array& x, const std::vector<const Linear*>& layers);
// fast::swiglu(gate(x), up(x)) (a gated MLP's first half); layers without biases go to quantized_swiglu or
// swiglu_matmul_t (on CUDA decode, one GEMV launch whose epilogue applies the swiglu).
Array swiglu_linears(const Array& x, const Linear& gate, const Linear& up);

struct Embedding : Module, Quantizable {
  Embedding(int64_t num_embeddings, int64_t dims);
  // ids (any integer shape) -> [..., dims] in `dtype`.
  Array operator()(const Array& ids, Dtype dtype) const;
  // x [..., dims] -> [..., num_embeddings]: the tied LM head.
  Array as_linear(const Array& x) const;

  Array weight;  // [num_embeddings, dims] (dense)
  std::optional<QuantizedWeight> qweight;  // set when quantized
  int64_t num_embeddings, dims;

  void to_quantized(const QuantSpec& spec) override;
  void to_dense(Dtype dtype) override;
  const std::optional<QuantizedWeight>& quantized() const override { return qweight; }
  int64_t quant_axis_size() const override { return dims; }
  const Array& dense_weight() const override { return weight; }

 protected:
  void members(Members& m) override;
};

struct RMSNorm : Module {
  RMSNorm(int64_t dims, float eps);
  Array operator()(const Array& x) const;
  // Residual add fused with this norm: returns {norm(x + residual), x + residual}.
  // {norm(x + residual) (in out_dtype when given), x + residual}: fast::add_rms_norm.
  std::pair<Array, Array> add_and_norm(const Array& x, const Array& residual,
                                       std::optional<Dtype> out_dtype = std::nullopt) const;

  Array weight;  // [dims]
  int64_t dims;
  float eps;

 protected:
  void members(Members& m) override;
};

struct LayerNorm : Module {
  LayerNorm(int64_t dims, float eps, bool affine = true, bool bias = true);
  Array operator()(const Array& x) const;

  Array weight, bias;
  int64_t dims;
  float eps;
  bool affine, has_bias;

 protected:
  void members(Members& m) override;
};

// mlx.nn.Conv1d with groups = channels: the short causal conv of the state-space and linear-attention
// models. weight [C, K, 1] as mlx-lm stores it (model sanitizers turn transformers' [C, 1, K] into it),
// optional bias [C]. Runs fast::causal_conv1d with the caller's carried state; the weights join the
// kernel in their stored dtype.
struct DepthwiseConv1d : Module {
  DepthwiseConv1d(int64_t channels, int64_t kernel, bool bias);
  // x [B, L, C], state [B, K-1, C] or empty (zeros) -> outputs [B, L, C] and the new state.
  fast::ScanResult operator()(const Array& x, const Array& state, const Array& left_padding = {}) const;

  Array weight, bias;
  int64_t channels, kernel;
  bool has_bias;

 protected:
  void members(Members& m) override;
};

// Parameter count of a module tree as the model defines it: a quantized layer counts its logical
// weight matrix (rows x input features), not its packed words, scales and biases.
int64_t logical_parameters(Module& root);

}  // namespace loom::nn
