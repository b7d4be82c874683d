#include "loom/nn/layers.h"

#include "loom/common/error.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"

namespace loom::nn {

void QuantizedWeight::declare(Members& m, int64_t rows, int64_t cols) {
  m.param("weight", w, {rows, cols * spec.bits / 32});
  m.param("scales", scales, {rows, cols / spec.group_size});
  if (spec.mode == QuantMode::affine) m.param("biases", biases, {rows, cols / spec.group_size});
}

Array QuantizedWeight::matmul_t(const Array& x) const {
  return quantized_matmul(x, w, scales, biases, /*transpose=*/true, spec, global_scale);
}

Array QuantizedWeight::take_rows(const Array& ids, Dtype dtype) const {
  // mlx.nn.QuantizedEmbedding: gather packed rows with their scales/biases, then dequantize.
  Array flat = reshape(ids, {-1});
  Array wr = take(w, flat, 0), sr = take(scales, flat, 0);
  Array br = spec.mode == QuantMode::affine ? take(biases, flat, 0) : Array();
  Array rows = dequantize(wr, sr, br, spec, dtype, global_scale);
  Shape os = ids.shape();
  os.push_back(rows.shape(-1));
  return reshape(rows, os);
}

Array QuantizedWeight::dequantized(Dtype dtype) const { return dequantize(w, scales, biases, spec, dtype, global_scale); }

QuantizedWeight QuantizedWeight::from_dense(const Array& dense, const QuantSpec& spec) {
  QuantizedArrays q = quantize(dense, spec);
  QuantizedWeight out;
  out.w = q.wq;
  out.scales = q.scales;
  out.biases = q.biases;
  out.spec = spec;
  return out;
}

namespace {
// Switches a layer's dense weight `dense` [rows, cols] to `q` (quantizing it when loaded).
void switch_to_quantized(Array& dense, std::optional<QuantizedWeight>& q, const QuantSpec& spec, int64_t cols,
                         const char* what) {
  if (q) throw ValueError(format_error(what, "layer is already quantized (" + quant_spec_str(q->spec) + ")"));
  if (!quant_spec_valid(spec)) throw ValueError(format_error(what, "invalid quantization " + quant_spec_str(spec)));
  if (cols % spec.group_size != 0)
    throw ValueError(format_error(what, "input size " + std::to_string(cols) + " is not divisible by group size " +
                                            std::to_string(spec.group_size)));
  if (dense.valid()) {
    q = QuantizedWeight::from_dense(dense, spec);
  } else {
    q = QuantizedWeight{};
    q->spec = spec;
  }
  dense = Array();
}
}  // namespace

int quantize_module(Module& root, const QuantPredicate& pred, const std::string& prefix) {
  int n = 0;
  for (auto& [path, mod] : root.modules(prefix)) {
    auto* q = dynamic_cast<Quantizable*>(mod);
    if (!q || q->quantized()) continue;
    if (auto spec = pred(path, *q)) {
      q->to_quantized(*spec);
      ++n;
    }
  }
  return n;
}

Linear::Linear(int64_t in, int64_t out, bool bias) : in_features(in), out_features(out), has_bias(bias) {}

void Linear::members(Members& m) {
  if (qweight) qweight->declare(m, out_features, in_features);
  else m.param("weight", weight, {out_features, in_features});
  if (has_bias) m.param("bias", bias, {out_features});
}

void Linear::to_quantized(const QuantSpec& spec) { switch_to_quantized(weight, qweight, spec, in_features, "Linear"); }

void Linear::to_dense(Dtype dtype) {
  if (!qweight) return;
  weight = qweight->dequantized(dtype);
  qweight.reset();
}

Array Linear::operator()(const Array& x) const {
  Array y = qweight ? qweight->matmul_t(x) : matmuls_t(x, {weight})[0];
  if (has_bias) y = add(y, astype(bias, y.dtype()));
  return y;
}

std::vector<Array> linears(const Array& x, const std::vector<const Linear*>& layers) {
  // The quantized layers' products as one group and the dense layers' as another (a mixed set, e.g. a
  // quantization predicate that skipped some projections, runs as two groups).
  std::vector<QuantizedMatrix> qs;
  std::vector<Array> dense;
  for (const Linear* l : layers) {
    if (l->qweight)
      qs.push_back(l->qweight->matrix());
    else
      dense.push_back(l->weight);
  }
  std::vector<Array> qout = qs.size() > 1 ? quantized_matmuls(x, qs) : std::vector<Array>();
  std::vector<Array> dout = dense.size() > 1 ? matmuls_t(x, dense) : std::vector<Array>();
  std::vector<Array> out;
  size_t qi = 0, di = 0;
  for (const Linear* l : layers) {
    const std::vector<Array>& group = l->qweight ? qout : dout;
    size_t& i = l->qweight ? qi : di;
    if (group.empty()) {
      out.push_back((*l)(x));
      continue;
    }
    Array y = group[i++];
    out.push_back(l->has_bias ? add(y, astype(l->bias, y.dtype())) : y);
  }
  return out;
}

Array swiglu_linears(const Array& x, const Linear& gate, const Linear& up) {
  if (gate.has_bias || up.has_bias) return fast::swiglu(gate(x), up(x));
  if (gate.qweight && up.qweight) return quantized_swiglu(x, gate.qweight->matrix(), up.qweight->matrix());
  if (!gate.qweight && !up.qweight) return swiglu_matmul_t(x, gate.weight, up.weight);
  return fast::swiglu(gate(x), up(x));
}

Embedding::Embedding(int64_t n, int64_t d) : num_embeddings(n), dims(d) {}

void Embedding::members(Members& m) {
  if (qweight) qweight->declare(m, num_embeddings, dims);
  else m.param("weight", weight, {num_embeddings, dims});
}

void Embedding::to_quantized(const QuantSpec& spec) { switch_to_quantized(weight, qweight, spec, dims, "Embedding"); }

void Embedding::to_dense(Dtype dtype) {
  if (!qweight) return;
  weight = qweight->dequantized(dtype);
  qweight.reset();
}

Array Embedding::operator()(const Array& ids, Dtype dtype) const {
  if (qweight) return qweight->take_rows(ids, dtype);
  return astype(take(weight, ids, 0), dtype);
}

Array Embedding::as_linear(const Array& x) const { return qweight ? qweight->matmul_t(x) : matmuls_t(x, {weight})[0]; }

RMSNorm::RMSNorm(int64_t d, float e) : dims(d), eps(e) {}

void RMSNorm::members(Members& m) { m.param("weight", weight, {dims}); }

Array RMSNorm::operator()(const Array& x) const { return fast::rms_norm(x, weight, eps); }

std::pair<Array, Array> RMSNorm::add_and_norm(const Array& x, const Array& residual,
                                             std::optional<Dtype> out_dtype) const {
  return fast::add_rms_norm(x, residual, weight, eps, out_dtype);
}

LayerNorm::LayerNorm(int64_t d, float e, bool aff, bool b) : dims(d), eps(e), affine(aff), has_bias(aff && b) {}

void LayerNorm::members(Members& m) {
  if (affine) m.param("weight", weight, {dims});
  if (has_bias) m.param("bias", bias, {dims});
}

Array LayerNorm::operator()(const Array& x) const { return fast::layer_norm(x, weight, bias, eps); }

int64_t logical_parameters(Module& root) {
  int64_t total = root.num_parameters();
  for (auto& [path, mod] : root.modules()) {
    auto* q = dynamic_cast<Quantizable*>(mod);
    if (!q || !q->quantized()) continue;
    const QuantizedWeight& qw = *q->quantized();
    if (!qw.w.valid()) continue;
    // Rows of the packed matrix (all experts' rows for a stacked SwitchLinear) x the quantized axis.
    total += qw.w.size() / qw.w.shape(-1) * q->quant_axis_size() - qw.w.size() - qw.scales.size() -
             (qw.biases.valid() ? qw.biases.size() : 0);
  }
  return total;
}

DepthwiseConv1d::DepthwiseConv1d(int64_t channels, int64_t kernel, bool bias)
    : channels(channels), kernel(kernel), has_bias(bias) {}

fast::ScanResult DepthwiseConv1d::operator()(const Array& x, const Array& state, const Array& left_padding) const {
  return fast::causal_conv1d(x, reshape(weight, {channels, kernel}), has_bias ? bias : Array(), state, left_padding);
}

void DepthwiseConv1d::members(Members& m) {
  m.param("weight", weight, {channels, kernel, 1});
  if (has_bias) m.param("bias", bias, {channels});
}

}  // namespace loom::nn
