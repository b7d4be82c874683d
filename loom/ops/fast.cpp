// Fused ops: validation and dispatch. Kernels live in backend/<device>/.
#include "loom/ops/fast.h"

#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"

namespace loom::fast {
using ops_detail::device_of;

namespace {
void check_norm_weight(const Array& x, const Array& w, const char* op, const char* what) {
  if (w.valid() && (w.ndim() != 1 || w.shape(0) != x.shape(-1)))
    throw ValueError(format_error(op, std::string(what) + " of shape " + shape_str(w.shape()) + " does not match input " +
                                          shape_str(x.shape())));
}
void check_float(const Array& x, const char* op) {
  if (!is_floating(x.dtype()) || !is_compute_dtype(x.dtype()))
    throw ValueError(format_error(op, "expected a float16/bfloat16/float32 input, got " + std::string(name(x.dtype()))));
}
}  // namespace

Array rms_norm(const Array& x_in, const Array& weight, float eps, StreamOrDevice) {
  ops_detail::require_valid(x_in, "rms_norm", "input");
  device_of({&x_in, &weight}, "rms_norm");
  check_float(x_in, "rms_norm");
  check_norm_weight(x_in, weight, "rms_norm", "weight");
  Array x = contiguous(x_in);
  Array out = Array::empty(x.shape(), x.dtype(), x.device());
  LOOM_KERNEL(out.device(), rms_norm)(x, weight.valid() ? contiguous(weight) : weight, eps, out);
  return out;
}

std::pair<Array, Array> add_rms_norm(const Array& x_in, const Array& r_in, const Array& weight, float eps,
                                     std::optional<Dtype> out_dtype, StreamOrDevice) {
  device_of({&x_in, &r_in, &weight}, "add_rms_norm");
  check_float(x_in, "add_rms_norm");
  if (x_in.shape() != r_in.shape())
    throw ValueError(format_error("add_rms_norm", "input " + shape_str(x_in.shape()) + " and residual " +
                                                      shape_str(r_in.shape()) + " differ"));
  check_norm_weight(x_in, weight, "add_rms_norm", "weight");
  Array x = contiguous(x_in), r = contiguous(r_in);
  Dtype dt = promote_types(x.dtype(), r.dtype());
  if (out_dtype && !is_floating(*out_dtype))
    throw ValueError(format_error("add_rms_norm", "output dtype " + std::string(name(*out_dtype)) + " is not a float"));
  Array out = Array::empty(x.shape(), out_dtype.value_or(dt), x.device());
  Array sum = Array::empty(x.shape(), dt, x.device());
  LOOM_KERNEL(out.device(), add_rms_norm)(x, r, weight.valid() ? contiguous(weight) : weight, eps, out, sum);
  return {out, sum};
}

Array layer_norm(const Array& x_in, const Array& weight, const Array& bias, float eps, StreamOrDevice) {
  ops_detail::require_valid(x_in, "layer_norm", "input");
  device_of({&x_in, &weight, &bias}, "layer_norm");
  check_float(x_in, "layer_norm");
  check_norm_weight(x_in, weight, "layer_norm", "weight");
  check_norm_weight(x_in, bias, "layer_norm", "bias");
  Array x = contiguous(x_in);
  Array out = Array::empty(x.shape(), x.dtype(), x.device());
  LOOM_KERNEL(out.device(), layer_norm)(x, weight, bias, eps, out);
  return out;
}

namespace {
Array rope_impl(const Array& x_in, const RopeSpec& spec_in, int64_t offset, const Array& offsets_in) {
  ops_detail::require_valid(x_in, "rope", "input");
  Array xd = x_in, offsets = offsets_in;
  RopeSpec spec = spec_in;
  ops_detail::unify_devices({&xd, &offsets, &spec.freqs}, "rope");
  check_float(x_in, "rope");
  if (x_in.ndim() < 2) throw ValueError(format_error("rope", "input must be [..., L, D], got " + shape_str(x_in.shape())));
  if (spec.dims <= 0 || spec.dims % 2 || spec.dims > x_in.shape(-1))
    throw ValueError(format_error("rope", "dims " + std::to_string(spec.dims) + " must be even and at most the last dim " +
                                              std::to_string(x_in.shape(-1))));
  if (spec.freqs.valid() && (spec.freqs.ndim() != 1 || spec.freqs.shape(0) != spec.dims / 2))
    throw ValueError(format_error("rope", "freqs must have shape [" + std::to_string(spec.dims / 2) + "], got " +
                                              shape_str(spec.freqs.shape())));
  if (offsets.valid() && (offsets.ndim() != 1 || x_in.ndim() < 3 || offsets.shape(0) != x_in.shape(0)))
    throw ValueError(format_error("rope", "per-row offsets " + shape_str(offsets.shape()) + " must be [B] for input " +
                                              shape_str(x_in.shape())));
  Array x = contiguous(x_in);
  Array out = Array::empty(x.shape(), x.dtype(), x.device());
  LOOM_KERNEL(out.device(), rope)(x, spec, offset, offsets, out);
  return out;
}
}  // namespace

Array rope(const Array& x, const RopeSpec& spec, int64_t offset, StreamOrDevice) { return rope_impl(x, spec, offset, Array()); }

Array rope_kv_write(const Array& q_in, const Array& k_in, const Array& v_in, const RopeSpec& spec_in,
                    const Array& offsets_in, const Array& k_cache, const Array& v_cache, const Array& position,
                    int64_t base, StreamOrDevice) {
  const char* op = "rope_kv_write";
  for (const auto& [a, what] : {std::pair{&q_in, "queries"},
                                {&k_in, "keys"},
                                {&v_in, "values"},
                                {&offsets_in, "offsets"},
                                {&k_cache, "key cache"},
                                {&v_cache, "value cache"},
                                {&position, "position"}})
    ops_detail::require_valid(*a, op, what);
  Array q = q_in, k = k_in, v = v_in, offsets = offsets_in;
  RopeSpec spec = spec_in;
  // Small host operands (freqs, offsets) join the device ones through the upload cache (no copy while a
  // step is recorded); the caches stay where they are.
  const Device dev = ops_detail::unify_devices({&q, &k, &v, &offsets, &spec.freqs}, op);
  if (k_cache.device() != dev || v_cache.device() != dev || position.device() != dev)
    throw ValueError(format_error(op, "queries, keys, values, both caches and the position must share one device"));
  check_float(q, op);
  if (q.ndim() != 4 || k.ndim() != 4 || v.shape() != k.shape() || q.shape(0) != k.shape(0) ||
      q.shape(2) != k.shape(2) || q.shape(3) != k.shape(3) || k.shape(1) == 0 || q.shape(1) % k.shape(1))
    throw ValueError(format_error(op, "queries " + shape_str(q.shape()) + ", keys " + shape_str(k.shape()) +
                                          " and values " + shape_str(v.shape()) +
                                          " must be [B, Hq, L, D], [B, Hkv, L, D] twice with Hq % Hkv == 0"));
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype() || k_cache.dtype() != q.dtype() || v_cache.dtype() != q.dtype())
    throw ValueError(format_error(op, "queries, keys, values and both caches need one dtype"));
  if (spec.dims <= 0 || spec.dims % 2 || spec.dims > q.shape(3))
    throw ValueError(format_error(op, "dims " + std::to_string(spec.dims) + " must be even and at most the head dim " +
                                          std::to_string(q.shape(3))));
  if (spec.freqs.valid() && (spec.freqs.ndim() != 1 || spec.freqs.shape(0) != spec.dims / 2))
    throw ValueError(format_error(
        op, "freqs must have shape [" + std::to_string(spec.dims / 2) + "], got " + shape_str(spec.freqs.shape())));
  if (offsets.ndim() != 1 || offsets.shape(0) != q.shape(0) ||
      (offsets.dtype() != Dtype::i32 && offsets.dtype() != Dtype::i64))
    throw ValueError(format_error(op, "per-row offsets must be int32 or int64 [" + std::to_string(q.shape(0)) +
                                          "], got " + std::string(name(offsets.dtype())) + " " +
                                          shape_str(offsets.shape())));
  for (const Array* c : {&k_cache, &v_cache})
    if (c->ndim() != 4 || c->shape(0) != k.shape(0) || c->shape(1) != k.shape(1) || c->shape(3) != k.shape(3) ||
        c->shape(2) < k.shape(2) || c->strides()[3] != 1)
      throw ValueError(format_error(op, "cache " + shape_str(c->shape()) + " does not hold keys/values " +
                                            shape_str(k.shape()) + " along axis 2 (or its rows are not contiguous)"));
  if (k_cache.strides()[2] != v_cache.strides()[2])
    throw ValueError(format_error(op, "the key and value caches need one position stride"));
  if (position.dtype() != Dtype::i32 || position.size() != 1)
    throw ValueError(format_error(op, "position must be one int32"));
  q = contiguous(q);
  k = contiguous(k);
  v = contiguous(v);
  Array q_out = Array::empty(q.shape(), q.dtype(), dev);
  const int64_t L = k.shape(2);
  Array k_dst = slice_axis(k_cache, 2, 0, L), v_dst = slice_axis(v_cache, 2, 0, L);
  LOOM_KERNEL(dev, rope_kv_write)
  (q, k, v, spec, offsets, position, base, k_cache.strides()[2], k_cache.shape(2) - L, q_out, k_dst, v_dst);
  return q_out;
}
Array rope(const Array& x, const RopeSpec& spec, const Array& offsets, StreamOrDevice) {
  ops_detail::require_valid(offsets, "rope", "offsets");
  return rope_impl(x, spec, 0, offsets);
}

Array swiglu(const Array& gate, const Array& up, StreamOrDevice) {
  device_of({&gate, &up}, "swiglu");
  check_float(gate, "swiglu");
  if (gate.shape() != up.shape())
    throw ValueError(format_error("swiglu", "gate " + shape_str(gate.shape()) + " and up " + shape_str(up.shape()) + " differ"));
  Array g = contiguous(gate), u = contiguous(up);
  Array out = Array::empty(g.shape(), promote_types(g.dtype(), u.dtype()), g.device());
  LOOM_KERNEL(out.device(), swiglu)(g, u, out);
  return out;
}

Array scaled_dot_product_attention(const Array& q, const Array& k, const Array& v, const AttentionSpec& spec,
                                   const AttentionPositions& pos, const Array& mask, StreamOrDevice s) {
  ops_detail::require_valid(k, "scaled_dot_product_attention", "keys");
  ops_detail::require_valid(v, "scaled_dot_product_attention", "values");
  return scaled_dot_product_attention(q, KVBlocks{{k}, {v}, k.ndim() == 4 ? k.shape(2) : 0}, spec, pos, mask, s);
}

Array scaled_dot_product_attention(const Array& q_in, const KVBlocks& kv, const AttentionSpec& spec_in,
                                   const AttentionPositions& pos_in, const Array& mask_in, StreamOrDevice) {
  const char* op = "scaled_dot_product_attention";
  ops_detail::require_valid(q_in, op, "queries");
  Array mask_dev = mask_in;
  AttentionSpec spec = spec_in;
  AttentionPositions pos = pos_in;
  Array qd = q_in;
  ops_detail::unify_devices({&qd, &mask_dev, &spec.sinks, &pos.q_offsets, &pos.kv_start}, op);
  check_float(q_in, op);
  if (q_in.ndim() != 4) throw ValueError(format_error(op, "queries must be [B, Hq, L, D], got " + shape_str(q_in.shape())));
  if (kv.keys.empty() || kv.keys.size() != kv.values.size())
    throw ValueError(format_error(op, "keys and values need the same, non-zero number of blocks"));
  int64_t B = q_in.shape(0), Hq = q_in.shape(1), L = q_in.shape(2), D = q_in.shape(3);
  int64_t total = 0;
  std::vector<Array> kb, vb;
  for (size_t i = 0; i < kv.keys.size(); ++i) {
    const Array& k = kv.keys[i];
    const Array& v = kv.values[i];
    if (k.ndim() != 4 || v.ndim() != 4 || k.shape(0) != B || v.shape(0) != B || k.shape(3) != D ||
        k.shape(1) != kv.keys[0].shape(1) || v.shape(1) != k.shape(1) || v.shape(2) != k.shape(2) ||
        v.shape(3) != kv.values[0].shape(3))
      throw ValueError(format_error(op, "keys " + shape_str(k.shape()) + " / values " + shape_str(v.shape()) +
                                            " do not fit queries " + shape_str(q_in.shape())));
    device_of({&q_in, &k, &v}, op);
    kb.push_back(k.strides()[3] == 1 ? k : contiguous(k));
    vb.push_back(v.strides()[3] == 1 ? v : contiguous(v));
    total += k.shape(2);
  }
  int64_t Hkv = kv.keys[0].shape(1);
  if (Hq % Hkv != 0)
    throw ValueError(format_error(op, std::to_string(Hq) + " query heads are not a multiple of " + std::to_string(Hkv) +
                                          " key/value heads"));
  if (kv.length < 0 || kv.length > total)
    throw ValueError(format_error(op, "kv length " + std::to_string(kv.length) + " exceeds the " + std::to_string(total) +
                                          " positions of the blocks"));
  if ((spec.mode == AttentionMode::window && spec.window <= 0) || (spec.mode == AttentionMode::chunk && spec.chunk <= 0))
    throw ValueError(format_error(op, "window/chunk mode needs a positive window/chunk size"));
  if (spec.sinks.valid() && (spec.sinks.ndim() != 1 || spec.sinks.shape(0) != Hq))
    throw ValueError(format_error(op, "sinks must be [Hq] = [" + std::to_string(Hq) + "], got " + shape_str(spec.sinks.shape())));
  for (const Array* p : {&pos.q_offsets, &pos.kv_start})
    if (p->valid() && (p->ndim() != 1 || p->shape(0) != B))
      throw ValueError(format_error(op, "per-row positions must be [B] = [" + std::to_string(B) + "], got " + shape_str(p->shape())));
  Array mask;
  if (mask_dev.valid()) mask = broadcast_to(mask_dev, {B, Hq, L, kv.length});
  Array q = contiguous(q_in);
  Array out = Array::empty({B, Hq, L, kv.values[0].shape(3)}, q.dtype(), q.device());
  LOOM_KERNEL(out.device(), attention)(q, kb, vb, kv.length, spec, pos, mask, out);
  return out;
}

}  // namespace loom::fast
