#include "loom/nn/layers.h"

#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom::nn {

Linear::Linear(int64_t in, int64_t out, bool bias) : in_features(in), out_features(out), has_bias(bias) {}

void Linear::members(Members& m) {
  m.param("weight", weight, {out_features, in_features});
  if (has_bias) m.param("bias", bias, {out_features});
}

Array Linear::operator()(const Array& x) const {
  Array y = matmul(x, transpose(weight));
  if (has_bias) y = add(y, astype(bias, y.dtype()));
  return y;
}

Embedding::Embedding(int64_t n, int64_t d) : num_embeddings(n), dims(d) {}

void Embedding::members(Members& m) { m.param("weight", weight, {num_embeddings, dims}); }

Array Embedding::operator()(const Array& ids, Dtype dtype) const { return astype(take(weight, ids, 0), dtype); }

Array Embedding::as_linear(const Array& x) const { return matmul(x, transpose(weight)); }

RMSNorm::RMSNorm(int64_t d, float e) : dims(d), eps(e) {}

void RMSNorm::members(Members& m) { m.param("weight", weight, {dims}); }

Array RMSNorm::operator()(const Array& x) const { return fast::rms_norm(x, weight, eps); }

std::pair<Array, Array> RMSNorm::add_and_norm(const Array& x, const Array& residual) const {
  return fast::add_rms_norm(x, residual, weight, eps);
}

LayerNorm::LayerNorm(int64_t d, float e, bool aff, bool b) : dims(d), eps(e), affine(aff), has_bias(aff && b) {}

void LayerNorm::members(Members& m) {
  if (affine) m.param("weight", weight, {dims});
  if (has_bias) m.param("bias", bias, {dims});
}

Array LayerNorm::operator()(const Array& x) const { return fast::layer_norm(x, weight, bias, eps); }

}  // namespace loom::nn
