// Basic layers, named and shaped as mlx.nn's so checkpoints map onto them by key:
// Linear (weight [out, in], optional bias), Embedding (weight [vocab, dim], as_linear for tied
// heads), RMSNorm and LayerNorm.
#pragma once

#include "loom/core/array.h"
#include "loom/nn/module.h"

namespace loom::nn {

struct Linear : Module {
  Linear(int64_t in_features, int64_t out_features, bool bias);
  // x [..., in] -> [..., out]; weights stay in their stored dtype (the matmul kernel converts).
  Array operator()(const Array& x) const;

  Array weight;  // [out, in]
  Array bias;    // [out] when has_bias
  int64_t in_features, out_features;
  bool has_bias;

 protected:
  void members(Members& m) override;
};

struct Embedding : Module {
  Embedding(int64_t num_embeddings, int64_t dims);
  // ids (any integer shape) -> [..., dims] in `dtype`.
  Array operator()(const Array& ids, Dtype dtype) const;
  // x [..., dims] -> [..., num_embeddings]: the tied LM head.
  Array as_linear(const Array& x) const;

  Array weight;  // [num_embeddings, dims]
  int64_t num_embeddings, dims;

 protected:
  void members(Members& m) override;
};

struct RMSNorm : Module {
  RMSNorm(int64_t dims, float eps);
  Array operator()(const Array& x) const;
  // Residual add fused with this norm: returns {norm(x + residual), x + residual}.
  std::pair<Array, Array> add_and_norm(const Array& x, const Array& residual) const;

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

}  // namespace loom::nn
