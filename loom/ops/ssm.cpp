// Recurrent scans (loom/ops/ssm.h): validation, the step kernels of backend/<device>/ssm.*, and the
// chunked (matmul) forms of ssd_scan and gated_delta_rule built from primitive ops, so they run on any
// backend through its matmul. The step-by-step twins (loom::fast::detail) are at the end.
#include "loom/ops/ssm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"

namespace loom::fast {
namespace {

using ops_detail::require_valid;

[[noreturn]] void fail(const char* op, const std::string& msg) { throw ValueError(format_error(op, msg)); }

void check_float(const Array& a, const char* op, const char* what) {
  if (a.valid() && (!is_floating(a.dtype()) || !is_compute_dtype(a.dtype())))
    fail(op, std::string(what) + " must be float32/bfloat16/float16, got " + std::string(name(a.dtype())));
}

void check_shape(const Array& a, const Shape& want, const char* op, const char* what) {
  if (a.valid() && a.shape() != want)
    fail(op, std::string(what) + " has shape " + shape_str(a.shape()) + ", expected " + shape_str(want));
}

void check_ndim(const Array& a, int nd, const char* op, const char* what, const char* layout) {
  if (a.ndim() != nd) fail(op, std::string(what) + " must be " + layout + ", got " + shape_str(a.shape()));
}

// left_padding as contiguous int32 [B] (or empty).
Array padding_arg(const Array& lp, int64_t B, const char* op) {
  if (!lp.valid()) return lp;
  if (is_floating(lp.dtype()) || lp.dtype() == Dtype::bool_)
    fail(op, "left_padding must be an integer array, got " + std::string(name(lp.dtype())));
  if (lp.ndim() != 1 || lp.shape(0) != B)
    fail(op, "left_padding must be [B] = [" + std::to_string(B) + "], got " + shape_str(lp.shape()));
  return contiguous(astype(lp, Dtype::i32));
}

// The operands of the Mamba scans (x, dt, A, B, C required; D, state, left padding optional): checked
// present, moved to one device, the float ones checked floating point.
struct MambaScanOperands {
  Array x, dt, A, Bm, Cm, D, state, lp;
};
MambaScanOperands mamba_scan_operands(const char* op, const Array& x, const Array& dt, const Array& A, const Array& Bm,
                                      const Array& Cm, const Array& D, const Array& state, const Array& lp) {
  require_valid(x, op, "x");
  require_valid(dt, op, "dt");
  require_valid(A, op, "A");
  require_valid(Bm, op, "B");
  require_valid(Cm, op, "C");
  MambaScanOperands o{x, dt, A, Bm, Cm, D, state, lp};
  ops_detail::unify_devices({&o.x, &o.dt, &o.A, &o.Bm, &o.Cm, &o.D, &o.state, &o.lp}, op);
  for (auto [a, what] :
       {std::pair{&o.x, "x"}, {&o.dt, "dt"}, {&o.A, "A"}, {&o.Bm, "B"}, {&o.Cm, "C"}, {&o.D, "D"}, {&o.state, "state"}})
    check_float(*a, op, what);
  return o;
}

Array opt_contig(const Array& a) { return a.valid() ? contiguous(a) : a; }
Array opt_f32(const Array& a) { return a.valid() ? contiguous(astype(a, Dtype::f32)) : a; }

// ---------------------------------------------------------------- chunked-form helpers (f32 throughout)

// A host [n, m] constant moved to device d.
Array host_f32(const std::vector<float>& v, const Shape& shape, Device d) {
  return to_device(Array::from(v, shape, Dtype::f32), d);
}
Array host_bool(int64_t n, Device d, bool (*pred)(int64_t, int64_t)) {
  std::vector<bool> v(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) v[i * n + j] = pred(i, j);
  return to_device(Array::from(v, {n, n}, Dtype::bool_), d);
}
// [n, n] ones where j <= i (inclusive lower triangle): L @ a sums a over positions <= i.
Array lower_ones(int64_t n, Device d) {
  std::vector<float> v(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) v[i * n + j] = 1.0f;
  return host_f32(v, {n, n}, d);
}
Array mask_le(int64_t n, Device d) {  // j <= i
  return host_bool(n, d, [](int64_t i, int64_t j) { return j <= i; });
}
Array mask_lt(int64_t n, Device d) {  // j < i
  return host_bool(n, d, [](int64_t i, int64_t j) { return j < i; });
}

// Segment sums of a [..., n] along its last axis: seg[..., i, j] = sum_{j < s <= i} a[s] (0 for
// j >= i). Summed from the terms themselves (a masked matrix times the ones triangle), not as a
// difference of cumulative sums, so long or strongly decaying segments keep full f32 precision.
Array segsum(const Array& a, Device d) {
  int64_t n = a.shape(-1);
  Array zero = Array::scalar(0.0, Dtype::f32);
  // x[..., s, j] = a[s] where s > j
  Array x = where(mask_lt(n, d), expand_dims(a, -1), zero);
  return matmul(lower_ones(n, d), x);
}

// exp(segsum(a)) on and below the diagonal, 0 above: the decay from position j to position i.
Array decay_matrix(const Array& a, Device d) {
  int64_t n = a.shape(-1);
  return where(mask_le(n, d), exp(segsum(a, d)), Array::scalar(0.0, Dtype::f32));
}

// Inclusive cumulative sum along the last axis (a [..., n] @ upper ones).
Array cumsum_last(const Array& a, Device d) {
  int64_t n = a.shape(-1);
  return squeeze(matmul(expand_dims(a, -2), swapaxes(lower_ones(n, d), 0, 1)), -2);
}

// Zero rows appended along axis 1 up to length lp.
Array pad_time(const Array& a, int64_t lp) {
  int64_t L = a.shape(1);
  if (lp == L) return a;
  Shape sh = a.shape();
  sh[1] = lp - L;
  return concatenate({a, zeros(sh, a.dtype(), a.device())}, 1);
}

// [B, L] f32: 1 at real positions, 0 at left padding (t < left_padding[b]).
Array real_mask(const Array& lp, int64_t L, Device d) {
  Array pos = reshape(arange(0, static_cast<double>(L), 1, Dtype::i32, d), {1, L});
  return astype(greater_equal(pos, expand_dims(lp, 1)), Dtype::f32);
}

// A strided view of a [..., n, n] contiguous array: the nb blocks of s x s whose top-left corners
// are (row0 + p * 2s, col0 + p * 2s), as [..., nb, s, s].
Array block_view(const Array& m, int64_t s, int64_t row0, int64_t col0) {
  int nd = m.ndim();
  int64_t n = m.shape(-1);
  Shape sh(m.shape().begin(), m.shape().end() - 2);
  Strides st(m.strides().begin(), m.strides().end() - 2);
  sh.insert(sh.end(), {n / (2 * s), s, s});
  st.insert(st.end(), {2 * s * n + 2 * s, n, 1});
  (void)nd;
  return Array(m.buffer(), sh, st, m.offset() + row0 * n + col0, m.dtype());
}

// (I + a)^-1 for strictly lower-triangular a [..., n, n] (n a power of two), by recursive doubling
// of the block formula inv([[A, 0], [C, D]]) = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]: log2(n) rounds of
// batched matmuls, as stable as forward substitution (no Neumann series, whose terms cancel badly).
Array unit_lower_inverse(const Array& a, Device d) {
  int64_t n = a.shape(-1);
  std::vector<float> eye(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) eye[i * n + i] = 1.0f;
  Array inv = Array::empty(a.shape(), Dtype::f32, d);
  assign(inv, host_f32(eye, {n, n}, d));
  Array ac = contiguous(a);
  for (int64_t s = 1; s < n; s *= 2) {
    Array inv11 = block_view(inv, s, 0, 0), inv22 = block_view(inv, s, s, s), a21 = block_view(ac, s, s, 0);
    Array x = negative(matmul(matmul(inv22, a21), inv11));
    assign(block_view(inv, s, s, 0), x);
  }
  return inv;
}

int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// [B, L, G, N] with head h reading group h / (H / G) -> [B, L, H, N].
Array repeat_heads(const Array& a, int64_t H) {
  int64_t B = a.shape(0), L = a.shape(1), G = a.shape(2), N = a.shape(3);
  if (G == H) return a;
  return reshape(broadcast_to(expand_dims(a, 3), {B, L, G, H / G, N}), {B, L, H, N});
}

// ---------------------------------------------------------------- chunked SSD

ScanResult ssd_chunked(const Array& x_in, const Array& dt_in, const Array& A_in, const Array& Bm_in, const Array& Cm_in,
                       const Array& D_in, const Array& state, const Array& lp, int64_t cs) {
  Device dev = x_in.device();
  const int64_t B = x_in.shape(0), L = x_in.shape(1), H = x_in.shape(2), P = x_in.shape(3);
  const int64_t G = Bm_in.shape(2), N = Bm_in.shape(3), R = H / G;
  const int64_t nc = (L + cs - 1) / cs, Lp = nc * cs;
  Array x = astype(x_in, Dtype::f32), dt = astype(dt_in, Dtype::f32);
  Array mask;  // [B, L]
  if (lp.valid()) {
    mask = real_mask(lp, L, dev);
    dt = dt * expand_dims(mask, 2);  // padding: step 0 = decay 1 and no input
  }
  x = pad_time(x, Lp);
  dt = pad_time(dt, Lp);
  Array Bm = pad_time(astype(Bm_in, Dtype::f32), Lp), Cm = pad_time(astype(Cm_in, Dtype::f32), Lp);
  Array A = astype(A_in, Dtype::f32);

  // Layout [B, G, R, nc, cs, ...]: heads split as (group, head in group) so B/C broadcast over R.
  Array a = transpose(reshape(dt * reshape(A, {1, 1, H}), {B, nc, cs, G, R}), {0, 3, 4, 1, 2});      // log decay
  Array xdt = transpose(reshape(x * expand_dims(dt, 3), {B, nc, cs, G, R, P}), {0, 3, 4, 1, 2, 5});  // dt * x
  Array Bc = expand_dims(transpose(reshape(Bm, {B, nc, cs, G, N}), {0, 3, 1, 2, 4}), 2);             // [B,G,1,nc,cs,N]
  Array Cc = expand_dims(transpose(reshape(Cm, {B, nc, cs, G, N}), {0, 3, 1, 2, 4}), 2);
  a = contiguous(a);

  // Within a chunk: y_i = sum_{j<=i} (C_i . B_j) exp(sum_{j<s<=i} a_s) dt_j x_j.
  Array Lmat = decay_matrix(a, dev);            // [B,G,R,nc,cs,cs]
  Array CB = matmul(Cc, swapaxes(Bc, -1, -2));  // [B,G,1,nc,cs,cs]
  Array y = matmul(CB * Lmat, xdt);             // [B,G,R,nc,cs,P]
  // Each chunk's contribution to the state at its end: sum_j exp(sum_{j<s<cs} a_s) dt_j x_j B_j^T.
  Array to_end = slice_axis(Lmat, -2, cs - 1, cs);        // [B,G,R,nc,1,cs]
  Array Sc = matmul(swapaxes(xdt, -1, -2) * to_end, Bc);  // [B,G,R,nc,P,N]
  // Between chunks: the state entering chunk c (c = 0..nc; nc = after the last) is
  // sum_{m<=c} exp(sum_{m<=c'<c} total_c') Z_m with Z = [initial state, Sc_0, ..., Sc_{nc-1}].
  Array cum = cumsum_last(a, dev);                                            // [B,G,R,nc,cs] inclusive log decay
  Array total = squeeze(slice_axis(cum, -1, cs - 1, cs), -1);                 // [B,G,R,nc]
  Array aa = concatenate({zeros({B, G, R, 1}, Dtype::f32, dev), total}, -1);  // [B,G,R,nc+1]
  Array W = decay_matrix(aa, dev);                                            // [B,G,R,nc+1,nc+1]
  Array h0 = state.valid() ? reshape(astype(state, Dtype::f32), {B, G, R, 1, P * N})
                           : zeros({B, G, R, 1, P * N}, Dtype::f32, dev);
  Array Z = concatenate({h0, reshape(Sc, {B, G, R, nc, P * N})}, 3);  // [B,G,R,nc+1,P*N]
  Array Hs = matmul(W, Z);                                            // [B,G,R,nc+1,P*N]
  Array Hin = reshape(slice_axis(Hs, 3, 0, nc), {B, G, R, nc, P, N});
  // Contribution of the entering state: exp(cum_i) C_i . H_c.
  y = y + matmul(Cc, swapaxes(Hin, -1, -2)) * expand_dims(exp(cum), -1);
  y = reshape(transpose(y, {0, 3, 4, 1, 2, 5}), {B, Lp, H, P});
  y = slice_axis(y, 1, 0, L);
  if (D_in.valid()) y = y + astype(x_in, Dtype::f32) * reshape(astype(D_in, Dtype::f32), {1, 1, H, 1});
  if (mask.valid()) y = y * reshape(mask, {B, L, 1, 1});
  Array st = contiguous(reshape(slice_axis(Hs, 3, nc, nc + 1), {B, H, P, N}));
  return {astype(y, x_in.dtype()), st};
}

// ---------------------------------------------------------------- chunked gated delta rule

ScanResult gated_delta_chunked(const Array& q_in, const Array& k_in, const Array& v_in, const Array& g_in,
                               const Array& beta_in, const Array& state, const Array& lp, int64_t cs) {
  Device dev = q_in.device();
  const int64_t B = q_in.shape(0), L = q_in.shape(1), Dk = q_in.shape(3), Hv = v_in.shape(2), Dv = v_in.shape(3);
  const bool per_channel = g_in.ndim() == 4;
  const int64_t nc = (L + cs - 1) / cs, Lp = nc * cs, cp = next_pow2(cs);
  Array q = repeat_heads(astype(q_in, Dtype::f32), Hv), k = repeat_heads(astype(k_in, Dtype::f32), Hv);
  Array v = astype(v_in, Dtype::f32), beta = astype(beta_in, Dtype::f32);
  // Log decay, clamped so a decay that underflowed to 0 stays finite (exp(-1e4) is 0 in f32 anyway).
  Array lg = maximum(log(astype(g_in, Dtype::f32)), Array::scalar(-1e4, Dtype::f32));
  Array mask;
  if (lp.valid()) {
    mask = real_mask(lp, L, dev);  // padding: beta 0 (no write), decay 1, key 0
    beta = beta * expand_dims(mask, 2);
    lg = per_channel ? lg * reshape(mask, {B, L, 1, 1}) : lg * expand_dims(mask, 2);
    k = k * reshape(mask, {B, L, 1, 1});
  }
  auto chunked = [&](const Array& t) {  // [B, Lp, Hv, ...] -> [B, Hv, nc, cs, ...]
    Shape sh{B, nc, cs, Hv};
    std::vector<int> perm{0, 3, 1, 2};
    if (t.ndim() == 4) {
      sh.push_back(t.shape(3));
      perm.push_back(4);
    }
    return contiguous(transpose(reshape(pad_time(t, Lp), sh), perm));
  };
  Array Q = chunked(q), K = chunked(k), V = chunked(v), Bt = chunked(beta), LG = chunked(lg);

  // Per chunk (decay ratios are <= 1, so nothing overflows):
  //   A[j, l] = beta_j (k_j . k_l decayed from l to j) for l < j;  T = (I + A)^-1
  //   W = T diag(beta) (k_j decayed from the chunk start);  U0 = T diag(beta) V
  //   QK[i, j] = q_i . k_j decayed from j to i (j <= i);  Qg = q_i decayed from the chunk start
  //   Kd = k_j decayed from j to the chunk end;  dec = the decay over the whole chunk
  // then, for the state S entering the chunk: U = U0 - W S^T, Y = Qg S^T + QK U, S' = dec S + U^T Kd.
  Array A, QK, Qg, Wk, Kd, dec;
  if (!per_channel) {
    Array Gam = decay_matrix(LG, dev);  // [B,Hv,nc,cs,cs]
    Array cum = cumsum_last(LG, dev);   // [B,Hv,nc,cs]
    Array gam = exp(cum);
    Array to_end = swapaxes(slice_axis(Gam, -2, cs - 1, cs), -1, -2);  // [B,Hv,nc,cs,1]
    // Only A's strictly lower part is read (unit_lower_inverse reads blocks below the diagonal).
    A = matmul(K, swapaxes(K, -1, -2)) * Gam * expand_dims(Bt, -1);
    QK = matmul(Q, swapaxes(K, -1, -2)) * Gam;
    Qg = Q * expand_dims(gam, -1);
    Wk = K * expand_dims(gam * Bt, -1);
    Kd = K * to_end;
    dec = reshape(exp(squeeze(slice_axis(cum, -1, cs - 1, cs), -1)), {B, Hv, nc, 1, 1});
  } else {
    // Per-channel decay: cumulative log decay per channel [.., cs, Dk]; pairwise ratios formed as
    // exp(cum_i - cum_j) over a [.., cs, cs, Dk] tensor (masked before exp, so never above 1), built
    // for a group of chunks at a time to bound its memory (about 2^24 floats).
    Array cum = matmul(lower_ones(cs, dev), LG);  // [B,Hv,nc,cs,Dk]
    Array le = reshape(mask_le(cs, dev), {cs, cs, 1});
    Array neg_inf = Array::scalar(-std::numeric_limits<double>::infinity(), Dtype::f32);
    const int64_t group = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, B * Hv * cs * cs * Dk));
    std::vector<Array> As, QKs;
    for (int64_t c0 = 0; c0 < nc; c0 += group) {
      const int64_t c1 = std::min(nc, c0 + group);
      Array cg = slice_axis(cum, 2, c0, c1), kg = slice_axis(K, 2, c0, c1), qg = slice_axis(Q, 2, c0, c1);
      Array diff = subtract(expand_dims(cg, -2), expand_dims(cg, -3));  // [.., i, j, Dk]
      Array ratio = exp(where(le, diff, neg_inf));
      Array kj = expand_dims(kg, -3) * ratio;  // k_j decayed from j to i
      As.push_back(sum(expand_dims(kg, -2) * kj, {-1}));
      QKs.push_back(sum(expand_dims(qg, -2) * kj, {-1}));
    }
    A = As.size() == 1 ? As[0] : concatenate(As, 2);
    QK = QKs.size() == 1 ? QKs[0] : concatenate(QKs, 2);
    A = where(mask_lt(cs, dev), A * expand_dims(Bt, -1), Array::scalar(0.0, Dtype::f32));
    Array gam = exp(cum);
    Qg = Q * gam;
    Wk = K * gam * expand_dims(Bt, -1);
    Array last = slice_axis(cum, -2, cs - 1, cs);  // [.., 1, Dk]
    Kd = K * exp(last - cum);
    dec = exp(last);  // [B,Hv,nc,1,Dk]
  }
  if (cp != cs) {  // the block inverse wants a power of two: pad A with zero rows/columns
    Array big = zeros({B, Hv, nc, cp, cp}, Dtype::f32, dev);
    assign(slice(big, {0, 0, 0, 0, 0}, {B, Hv, nc, cs, cs}), A);
    A = big;
  }
  Array T = unit_lower_inverse(A, dev);
  if (cp != cs) T = slice(T, {0, 0, 0, 0, 0}, {B, Hv, nc, cs, cs});
  Array Wm = matmul(T, Wk);                       // [B,Hv,nc,cs,Dk]
  Array U0 = matmul(T, V * expand_dims(Bt, -1));  // [B,Hv,nc,cs,Dv]

  Array S = state.valid() ? astype(state, Dtype::f32) : zeros({B, Hv, Dv, Dk}, Dtype::f32, dev);
  std::vector<Array> ys;
  ys.reserve(static_cast<size_t>(nc));
  auto chunk = [&](const Array& t, int64_t c) { return squeeze(slice_axis(t, 2, c, c + 1), 2); };
  for (int64_t c = 0; c < nc; ++c) {
    Array St = swapaxes(S, -1, -2);                                     // [B,Hv,Dk,Dv]
    Array U = chunk(U0, c) - matmul(chunk(Wm, c), St);                  // [B,Hv,cs,Dv]
    ys.push_back(matmul(chunk(Qg, c), St) + matmul(chunk(QK, c), U));   // [B,Hv,cs,Dv]
    S = S * chunk(dec, c) + matmul(swapaxes(U, -1, -2), chunk(Kd, c));  // [B,Hv,Dv,Dk]
  }
  Array y = stack(ys, 2);  // [B,Hv,nc,cs,Dv]
  y = slice_axis(reshape(transpose(y, {0, 2, 3, 1, 4}), {B, Lp, Hv, Dv}), 1, 0, L);
  if (mask.valid()) y = y * reshape(mask, {B, L, 1, 1});
  return {astype(y, q_in.dtype()), contiguous(S)};
}

}  // namespace

// ---------------------------------------------------------------- ops

ScanResult causal_conv1d(const Array& x_in, const Array& weight_in, const Array& bias_in, const Array& state_in,
                         const Array& left_padding, StreamOrDevice) {
  const char* op = "causal_conv1d";
  require_valid(x_in, op, "input");
  require_valid(weight_in, op, "weight");
  Array x = x_in, w = weight_in, bias = bias_in, state = state_in, lp = left_padding;
  ops_detail::unify_devices({&x, &w, &bias, &state, &lp}, op);
  check_ndim(x, 3, op, "input", "[B, L, C]");
  check_ndim(w, 2, op, "weight", "[C, K]");
  for (auto [a, what] : {std::pair{&x, "input"}, {&w, "weight"}, {&bias, "bias"}, {&state, "state"}})
    check_float(*a, op, what);
  const int64_t B = x.shape(0), L = x.shape(1), C = x.shape(2), K = w.shape(1);
  if (w.shape(0) != C)
    fail(op, "weight " + shape_str(w.shape()) + " does not match " + std::to_string(C) + " channels");
  if (K < 1) fail(op, "kernel size must be at least 1");
  check_shape(bias, {C}, op, "bias");
  check_shape(state, {B, K - 1, C}, op, "state");
  lp = padding_arg(lp, B, op);
  x = contiguous(x);
  Array y = Array::empty({B, L, C}, x.dtype(), x.device());
  Array st = Array::empty({B, K - 1, C}, x.dtype(), x.device());
  if (state.valid()) state = contiguous(astype(state, x.dtype()));
  LOOM_KERNEL(x.device(), causal_conv1d)(x, contiguous(w), opt_contig(bias), state, lp, y, st);
  return {y, st};
}

ScanResult selective_scan(const Array& x_in, const Array& dt_in, const Array& A_in, const Array& Bm_in,
                          const Array& Cm_in, const Array& D_in, const Array& state_in, const Array& left_padding,
                          StreamOrDevice) {
  const char* op = "selective_scan";
  auto [x, dt, A, Bm, Cm, D, state, lp] =
      mamba_scan_operands(op, x_in, dt_in, A_in, Bm_in, Cm_in, D_in, state_in, left_padding);
  check_ndim(x, 3, op, "x", "[B, L, Di]");
  check_ndim(A, 2, op, "A", "[Di, N]");
  const int64_t B = x.shape(0), L = x.shape(1), Di = x.shape(2), N = A.shape(1);
  check_shape(dt, {B, L, Di}, op, "dt");
  check_shape(A, {Di, N}, op, "A");
  check_shape(Bm, {B, L, N}, op, "B");
  check_shape(Cm, {B, L, N}, op, "C");
  check_shape(D, {Di}, op, "D");
  check_shape(state, {B, Di, N}, op, "state");
  lp = padding_arg(lp, B, op);
  Array y = Array::empty({B, L, Di}, x.dtype(), x.device());
  Array st = Array::empty({B, Di, N}, Dtype::f32, x.device());
  LOOM_KERNEL(x.device(), selective_scan)
  (contiguous(x), contiguous(dt), contiguous(A), contiguous(Bm), contiguous(Cm), opt_contig(D), opt_f32(state), lp, y,
   st);
  return {y, st};
}

ScanResult ssd_scan(const Array& x_in, const Array& dt_in, const Array& A_in, const Array& Bm_in, const Array& Cm_in,
                    const Array& D_in, const Array& state_in, const Array& left_padding, int64_t chunk_size,
                    StreamOrDevice) {
  const char* op = "ssd_scan";
  auto [x, dt, A, Bm, Cm, D, state, lp] =
      mamba_scan_operands(op, x_in, dt_in, A_in, Bm_in, Cm_in, D_in, state_in, left_padding);
  check_ndim(x, 4, op, "x", "[B, L, H, P]");
  check_ndim(Bm, 4, op, "B", "[B, L, G, N]");
  const int64_t B = x.shape(0), L = x.shape(1), H = x.shape(2), P = x.shape(3), G = Bm.shape(2), N = Bm.shape(3);
  if (G < 1 || H % G != 0)
    fail(op, std::to_string(H) + " heads are not a multiple of " + std::to_string(G) + " B/C groups");
  if (chunk_size < 0) fail(op, "chunk_size must be >= 0, got " + std::to_string(chunk_size));
  check_shape(dt, {B, L, H}, op, "dt");
  check_shape(A, {H}, op, "A");
  check_shape(Bm, {B, L, G, N}, op, "B");
  check_shape(Cm, {B, L, G, N}, op, "C");
  check_shape(D, {H}, op, "D");
  check_shape(state, {B, H, P, N}, op, "state");
  lp = padding_arg(lp, B, op);
  if (chunk_size > 0 && L > 1) return ssd_chunked(x, dt, A, Bm, Cm, D, state, lp, chunk_size);
  Array y = Array::empty({B, L, H, P}, x.dtype(), x.device());
  Array st = Array::empty({B, H, P, N}, Dtype::f32, x.device());
  LOOM_KERNEL(x.device(), ssd_scan)
  (contiguous(x), contiguous(dt), contiguous(A), contiguous(Bm), contiguous(Cm), opt_contig(D), opt_f32(state), lp, y,
   st);
  return {y, st};
}

ScanResult gated_delta_rule(const Array& q_in, const Array& k_in, const Array& v_in, const Array& g_in,
                            const Array& beta_in, const Array& state_in, const Array& left_padding, int64_t chunk_size,
                            StreamOrDevice) {
  const char* op = "gated_delta_rule";
  require_valid(q_in, op, "q");
  require_valid(k_in, op, "k");
  require_valid(v_in, op, "v");
  require_valid(g_in, op, "g");
  require_valid(beta_in, op, "beta");
  Array q = q_in, k = k_in, v = v_in, g = g_in, beta = beta_in, state = state_in, lp = left_padding;
  ops_detail::unify_devices({&q, &k, &v, &g, &beta, &state, &lp}, op);
  for (auto [a, what] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&g, "g"}, {&beta, "beta"}, {&state, "state"}})
    check_float(*a, op, what);
  check_ndim(q, 4, op, "q", "[B, L, Hk, Dk]");
  check_ndim(v, 4, op, "v", "[B, L, Hv, Dv]");
  const int64_t B = q.shape(0), L = q.shape(1), Hk = q.shape(2), Dk = q.shape(3), Hv = v.shape(2), Dv = v.shape(3);
  check_shape(k, {B, L, Hk, Dk}, op, "k");
  if (v.shape(0) != B || v.shape(1) != L)
    fail(op, "v " + shape_str(v.shape()) + " does not match q " + shape_str(q.shape()));
  if (Hk < 1 || Hv % Hk != 0)
    fail(op, std::to_string(Hv) + " value heads are not a multiple of " + std::to_string(Hk) + " key heads");
  if (g.ndim() == 4)
    check_shape(g, {B, L, Hv, Dk}, op, "g");
  else
    check_shape(g, {B, L, Hv}, op, "g");
  check_shape(beta, {B, L, Hv}, op, "beta");
  check_shape(state, {B, Hv, Dv, Dk}, op, "state");
  if (chunk_size < 0) fail(op, "chunk_size must be >= 0, got " + std::to_string(chunk_size));
  lp = padding_arg(lp, B, op);
  if (chunk_size > 0 && L > 1) return gated_delta_chunked(q, k, v, g, beta, state, lp, chunk_size);
  Array y = Array::empty({B, L, Hv, Dv}, q.dtype(), q.device());
  Array st = Array::empty({B, Hv, Dv, Dk}, Dtype::f32, q.device());
  LOOM_KERNEL(q.device(), gated_delta_rule)
  (contiguous(q), contiguous(k), contiguous(v), contiguous(g), contiguous(beta), opt_f32(state), lp, y, st);
  return {y, st};
}

ScanResult linear_scan(const Array& a_in, const Array& x_in, const Array& state_in, const Array& left_padding,
                       StreamOrDevice) {
  const char* op = "linear_scan";
  require_valid(a_in, op, "a");
  require_valid(x_in, op, "x");
  Array a = a_in, x = x_in, state = state_in, lp = left_padding;
  ops_detail::unify_devices({&a, &x, &state, &lp}, op);
  for (auto [p, what] : {std::pair{&a, "a"}, {&x, "x"}, {&state, "state"}}) check_float(*p, op, what);
  check_ndim(x, 3, op, "x", "[B, L, D]");
  const int64_t B = x.shape(0), L = x.shape(1), D = x.shape(2);
  check_shape(a, {B, L, D}, op, "a");
  check_shape(state, {B, D}, op, "state");
  lp = padding_arg(lp, B, op);
  Array y = Array::empty({B, L, D}, x.dtype(), x.device());
  Array st = Array::empty({B, D}, Dtype::f32, x.device());
  LOOM_KERNEL(x.device(), linear_scan)(contiguous(a), contiguous(x), opt_f32(state), lp, y, st);
  return {y, st};
}

// ---------------------------------------------------------------- step-by-step twins

namespace detail {
namespace {

Array f32(const Array& a) { return astype(a, Dtype::f32); }
// Position t of a [B, L, ...] sequence as [B, ...] (f32).
Array at(const Array& a, int64_t t) { return squeeze(f32(slice_axis(a, 1, t, t + 1)), 1); }
// [B] bool: position t is real (t >= left_padding[b]); all true without padding.
Array real_at(const Array& lp, int64_t B, int64_t t) {
  if (!lp.valid()) return full({B}, 1.0, Dtype::bool_);
  return greater_equal(full({B}, static_cast<double>(t), Dtype::i32), astype(lp, Dtype::i32));
}
// [B] -> [B, 1, ..., 1] with nd dims.
Array per_row(const Array& m, int nd) {
  Shape sh(nd, 1);
  sh[0] = m.shape(0);
  return reshape(m, sh);
}
Array zero() { return Array::scalar(0.0, Dtype::f32); }

}  // namespace

ScanResult causal_conv1d_reference(const Array& x, const Array& weight, const Array& bias, const Array& state,
                                   const Array& left_padding) {
  const int64_t B = x.shape(0), L = x.shape(1), C = x.shape(2), K = weight.shape(1);
  Array win = state.valid() ? f32(state) : zeros({B, K - 1, C});  // the last K-1 real inputs
  Array wt = expand_dims(transpose(f32(weight)), 0);              // [1, K, C]
  std::vector<Array> ys;
  for (int64_t t = 0; t < L; ++t) {
    Array xp = concatenate({win, expand_dims(at(x, t), 1)}, 1);  // [B, K, C]
    Array yt = sum(xp * wt, {1});
    if (bias.valid()) yt = yt + f32(bias);
    Array real = real_at(left_padding, B, t);
    ys.push_back(where(per_row(real, 2), yt, zero()));
    win = where(per_row(real, 3), slice_axis(xp, 1, 1, K), win);
  }
  return {astype(stack(ys, 1), x.dtype()), astype(win, x.dtype())};
}

ScanResult selective_scan_reference(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm,
                                    const Array& D, const Array& state, const Array& left_padding) {
  const int64_t B = x.shape(0), L = x.shape(1), Di = x.shape(2), N = A.shape(1);
  Array h = state.valid() ? f32(state) : zeros({B, Di, N});
  Array Af = expand_dims(f32(A), 0);  // [1, Di, N]
  std::vector<Array> ys;
  for (int64_t t = 0; t < L; ++t) {
    Array xt = expand_dims(at(x, t), 2), dtt = expand_dims(at(dt, t), 2);  // [B, Di, 1]
    Array bt = expand_dims(at(Bm, t), 1), ct = expand_dims(at(Cm, t), 1);  // [B, 1, N]
    Array hn = exp(dtt * Af) * h + dtt * xt * bt;
    Array yt = squeeze(sum(hn * ct, {2}, true), 2);
    if (D.valid()) yt = yt + f32(D) * squeeze(xt, 2);
    Array real = real_at(left_padding, B, t);
    ys.push_back(where(per_row(real, 2), yt, zero()));
    h = where(per_row(real, 3), hn, h);
  }
  return {astype(stack(ys, 1), x.dtype()), h};
}

ScanResult ssd_scan_reference(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm,
                              const Array& D, const Array& state, const Array& left_padding) {
  const int64_t B = x.shape(0), L = x.shape(1), H = x.shape(2), P = x.shape(3), N = Bm.shape(3);
  Array h = state.valid() ? f32(state) : zeros({B, H, P, N});
  Array Bh = repeat_heads(Bm, H), Ch = repeat_heads(Cm, H);
  std::vector<Array> ys;
  for (int64_t t = 0; t < L; ++t) {
    Array xt = at(x, t);                                                   // [B, H, P]
    Array dtt = at(dt, t);                                                 // [B, H]
    Array bt = expand_dims(at(Bh, t), 2), ct = expand_dims(at(Ch, t), 2);  // [B, H, 1, N]
    Array decay = reshape(exp(dtt * f32(A)), {B, H, 1, 1});
    Array hn = decay * h + expand_dims(expand_dims(dtt, 2) * xt, 3) * bt;
    Array yt = sum(hn * ct, {3});
    if (D.valid()) yt = yt + reshape(f32(D), {1, H, 1}) * xt;
    Array real = real_at(left_padding, B, t);
    ys.push_back(where(per_row(real, 3), yt, zero()));
    h = where(per_row(real, 4), hn, h);
  }
  return {astype(stack(ys, 1), x.dtype()), h};
}

ScanResult gated_delta_rule_reference(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta,
                                      const Array& state, const Array& left_padding) {
  const int64_t B = q.shape(0), L = q.shape(1), Dk = q.shape(3), Hv = v.shape(2), Dv = v.shape(3);
  Array S = state.valid() ? f32(state) : zeros({B, Hv, Dv, Dk});
  Array qh = repeat_heads(q, Hv), kh = repeat_heads(k, Hv);
  std::vector<Array> ys;
  for (int64_t t = 0; t < L; ++t) {
    Array qt = expand_dims(at(qh, t), 2), kt = expand_dims(at(kh, t), 2);  // [B, Hv, 1, Dk]
    Array vt = at(v, t);                                                   // [B, Hv, Dv]
    Array gt = g.ndim() == 4 ? expand_dims(at(g, t), 2) : reshape(at(g, t), {B, Hv, 1, 1});
    Array Sd = S * gt;
    Array kv = sum(Sd * kt, {3});  // [B, Hv, Dv]
    Array delta = (vt - kv) * expand_dims(at(beta, t), 2);
    Array Sn = Sd + expand_dims(delta, 3) * kt;
    Array yt = sum(Sn * qt, {3});
    Array real = real_at(left_padding, B, t);
    ys.push_back(where(per_row(real, 3), yt, zero()));
    S = where(per_row(real, 4), Sn, S);
  }
  return {astype(stack(ys, 1), q.dtype()), S};
}

ScanResult linear_scan_reference(const Array& a, const Array& x, const Array& state, const Array& left_padding) {
  const int64_t B = x.shape(0), L = x.shape(1), D = x.shape(2);
  Array h = state.valid() ? f32(state) : zeros({B, D});
  std::vector<Array> ys;
  for (int64_t t = 0; t < L; ++t) {
    Array hn = at(a, t) * h + at(x, t);
    Array real = real_at(left_padding, B, t);
    ys.push_back(where(per_row(real, 2), hn, zero()));
    h = where(per_row(real, 2), hn, h);
  }
  return {astype(stack(ys, 1), x.dtype()), h};
}

}  // namespace detail
}  // namespace loom::fast
