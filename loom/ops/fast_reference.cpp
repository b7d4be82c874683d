// Slow twins of the fused ops, composed only of primitive ops. They are the portable fallback and
// the oracle the op tests compare the fused kernels against.
#include <cmath>
#include <limits>

#include "loom/common/error.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom::fast::detail {

Array rms_norm_reference(const Array& x, const Array& weight, float eps) {
  Array xf = astype(x, Dtype::f32);
  Array y = xf * rsqrt(mean(square(xf), {-1}, /*keepdims=*/true) + eps);
  if (weight.valid()) y = y * astype(weight, Dtype::f32);
  return astype(y, x.dtype());
}

std::pair<Array, Array> add_rms_norm_reference(const Array& x, const Array& residual, const Array& weight, float eps) {
  Array sum = add(x, residual);
  return {rms_norm_reference(sum, weight, eps), sum};
}

Array layer_norm_reference(const Array& x, const Array& weight, const Array& bias, float eps) {
  Array xf = astype(x, Dtype::f32);
  Array mu = mean(xf, {-1}, true);
  Array c = xf - mu;
  Array y = c * rsqrt(mean(square(c), {-1}, true) + eps);
  if (weight.valid()) y = y * astype(weight, Dtype::f32);
  if (bias.valid()) y = y + astype(bias, Dtype::f32);
  return astype(y, x.dtype());
}

Array rope_reference(const Array& x, const RopeSpec& spec, const Array& offsets) {
  int nd = x.ndim();
  int64_t B = x.shape(0), L = x.shape(-2), D = x.shape(-1);
  int half = spec.dims / 2;
  Array inv;
  if (spec.freqs.valid()) {
    inv = reciprocal(astype(spec.freqs, Dtype::f32));
  } else {
    Array expo = arange(0, spec.dims, 2, Dtype::f32) * (-1.0 / spec.dims);
    inv = power(full({half}, spec.base, Dtype::f32), expo);
  }
  // positions [B, L] = offsets[:, None] + arange(L)
  Array posn = add(expand_dims(astype(offsets, Dtype::f32), 1), expand_dims(arange(0, L, 1, Dtype::f32), 0));
  Array theta = multiply(expand_dims(posn, -1), reshape(inv, {1, 1, half})) * static_cast<double>(spec.scale);
  Shape ts{B};
  for (int i = 1; i < nd - 2; ++i) ts.push_back(1);
  ts.push_back(L);
  ts.push_back(half);
  theta = reshape(theta, ts);
  Array c = cos(theta), s = sin(theta);
  Array xf = astype(x, Dtype::f32);
  Shape st(nd, 0), en = x.shape(), step(nd, 1);
  Array x1, x2;
  if (spec.traditional) {
    en[nd - 1] = spec.dims;
    step[nd - 1] = 2;
    x1 = slice(xf, st, en, step);
    st[nd - 1] = 1;
    x2 = slice(xf, st, en, step);
  } else {
    x1 = slice_axis(xf, -1, 0, half);
    x2 = slice_axis(xf, -1, half, spec.dims);
  }
  Array o1 = x1 * c - x2 * s;
  Array o2 = x1 * s + x2 * c;
  Array rot;
  if (spec.traditional) {
    Shape rs = o1.shape();
    rs.back() = spec.dims;
    rot = reshape(stack({o1, o2}, -1), rs);
  } else {
    rot = concatenate({o1, o2}, -1);
  }
  if (spec.dims < D) rot = concatenate({rot, slice_axis(xf, -1, spec.dims, D)}, -1);
  return astype(rot, x.dtype());
}

Array swiglu_reference(const Array& gate, const Array& up) {
  return astype(silu(astype(gate, Dtype::f32)) * astype(up, Dtype::f32), promote_types(gate.dtype(), up.dtype()));
}

Array attention_mask_reference(int64_t B, int64_t L, int64_t S, const AttentionSpec& spec, const AttentionPositions& pos) {
  Array qoff = pos.q_offsets.valid() ? astype(pos.q_offsets, Dtype::i64)
                                     : full({B}, static_cast<double>(pos.q_offset >= 0 ? pos.q_offset : S - L), Dtype::i64);
  Array start = pos.kv_start.valid() ? astype(pos.kv_start, Dtype::i64) : zeros({B}, Dtype::i64);
  Array qpos = add(reshape(qoff, {B, 1, 1, 1}), reshape(arange(0, L, 1, Dtype::i64), {1, 1, L, 1}));  // [B,1,L,1]
  Array kpos = reshape(arange(0, S, 1, Dtype::i64), {1, 1, 1, S});                                    // [1,1,1,S]
  Array st = reshape(start, {B, 1, 1, 1});
  Array vis = greater_equal(kpos, st);
  if (spec.mode != AttentionMode::none) vis = logical_and(vis, less_equal(kpos, qpos));
  if (spec.mode == AttentionMode::window)
    vis = logical_and(vis, less(subtract(qpos, kpos), full({1}, spec.window, Dtype::i64)));
  if (spec.mode == AttentionMode::chunk) {
    Array cq = floor(divide(subtract(qpos, st), full({1}, spec.chunk, Dtype::f32)));
    Array ck = floor(divide(subtract(kpos, st), full({1}, spec.chunk, Dtype::f32)));
    vis = logical_and(vis, equal(cq, ck));
  }
  return where(vis, zeros({1}), full({1}, -std::numeric_limits<double>::infinity()));
}

Array scaled_dot_product_attention_reference(const Array& q, const Array& k, const Array& v, const AttentionSpec& spec,
                                             const AttentionPositions& pos, const Array& mask) {
  int64_t B = q.shape(0), Hq = q.shape(1), L = q.shape(2), D = q.shape(3);
  int64_t Hkv = k.shape(1), S = k.shape(2), g = Hq / Hkv;
  auto repeat = [&](const Array& t) {
    Array e = broadcast_to(expand_dims(t, 2), {B, Hkv, g, S, t.shape(3)});
    return reshape(e, {B, Hq, S, t.shape(3)});
  };
  Array kf = astype(repeat(k), Dtype::f32), vf = astype(repeat(v), Dtype::f32);
  float scale = spec.scale > 0 ? spec.scale : 1.0f / std::sqrt(static_cast<float>(D));
  Array scores = matmul(astype(q, Dtype::f32), swapaxes(kf, -1, -2)) * static_cast<double>(scale);
  if (spec.softcap > 0) scores = tanh(scores * (1.0 / spec.softcap)) * static_cast<double>(spec.softcap);
  Array m = attention_mask_reference(B, L, S, spec, pos);
  if (mask.valid()) {
    if (mask.dtype() == Dtype::bool_)
      m = add(m, where(mask, zeros({1}), full({1}, -std::numeric_limits<double>::infinity())));
    else
      m = add(m, astype(mask, Dtype::f32));
  }
  scores = add(scores, m);
  Array visible = greater(max(scores, {-1}, true), full({1}, -std::numeric_limits<double>::infinity()));
  // Rows with nothing visible (padding) become zero instead of NaN, as the kernel does.
  scores = where(visible, scores, zeros({1}));
  if (spec.sinks.valid()) {
    Array sk = broadcast_to(reshape(astype(spec.sinks, Dtype::f32), {1, Hq, 1, 1}), {B, Hq, L, 1});
    Array p = softmax(concatenate({sk, scores}, -1), -1);
    scores = slice_axis(p, -1, 1, S + 1);
  } else {
    scores = softmax(scores, -1);
  }
  Array out = matmul(scores, vf);
  out = where(visible, out, zeros({1}));
  return astype(out, q.dtype());
}

Array rope_kv_write_reference(const Array& q, const Array& k, const Array& v, const RopeSpec& spec,
                              const Array& offsets, const Array& k_cache, const Array& v_cache, const Array& position,
                              int64_t base) {
  assign_at(k_cache, fast::rope(k, spec, offsets), 2, position, base);
  assign_at(v_cache, v, 2, position, base);
  return fast::rope(q, spec, offsets);
}

}  // namespace loom::fast::detail
