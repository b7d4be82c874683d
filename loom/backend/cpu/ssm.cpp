// Recurrent scans on the CPU (kernel_api.inc, "recurrent scans"): each work unit owns a block of
// state rows of one batch row and loops over time inside, with its state in f32 scratch memory and
// operands converted to f32 one time step (one contiguous span) at a time. Units are spread over the
// thread pool; no per-time-step dispatch. The math is the recurrence of loom/ops/ssm.h written out,
// so these kernels agree with the step-by-step twins in loom::fast::detail to f32 rounding.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

// n contiguous elements of `a` from element `off`, as f32.
inline void load(const Array& a, int64_t off, int64_t n, float* dst) {
  convert_span(static_cast<const uint8_t*>(a.raw_data()) + off * static_cast<int64_t>(a.itemsize()), a.dtype(), dst,
               Dtype::f32, n);
}
inline float load1(const Array& a, int64_t off) {
  float v;
  load(a, off, 1, &v);
  return v;
}
inline void store(Array& a, int64_t off, int64_t n, const float* src) {
  convert_span(src, Dtype::f32, static_cast<uint8_t*>(a.raw_data()) + off * static_cast<int64_t>(a.itemsize()),
               a.dtype(), n);
}
inline void store_zeros(Array& a, int64_t off, int64_t n) {
  std::memset(static_cast<uint8_t*>(a.raw_data()) + off * static_cast<int64_t>(a.itemsize()), 0,
              static_cast<size_t>(n) * a.itemsize());
}

// left_padding[b] clamped to [0, L] (0 when no padding is given).
std::vector<int64_t> paddings(const Array& left_padding, int64_t B, int64_t L) {
  std::vector<int64_t> p(B, 0);
  if (!left_padding.valid()) return p;
  const int32_t* lp = left_padding.data<int32_t>();
  for (int64_t b = 0; b < B; ++b) p[b] = std::clamp<int64_t>(lp[b], 0, L);
  return p;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void causal_conv1d(const Array& x, const Array& weight, const Array& bias, const Array& state,
                   const Array& left_padding, Array& y, Array& state_out) {
  const int64_t B = x.shape(0), L = x.shape(1), C = x.shape(2), K = weight.shape(1), S = K - 1;
  constexpr int64_t kCb = 64;  // channels per unit
  const int64_t nblk = ceil_div(C, kCb);
  std::vector<int64_t> pad = paddings(left_padding, B, L);
  std::vector<float> w(static_cast<size_t>(C * K)), bv(static_cast<size_t>(C), 0.0f);
  load(weight, 0, C * K, w.data());
  if (bias.valid()) load(bias, 0, C, bv.data());
  parallel_for(B * nblk, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> e, out(kCb);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / nblk, c0 = (u % nblk) * kCb, cb = std::min(kCb, C - c0), p = pad[b], n = L - p;
      // e = concat(state, x[p:]) for this channel block, [S + n, cb]: the row as if it began at p.
      e.assign(static_cast<size_t>((S + n) * cb), 0.0f);
      if (state.valid())
        for (int64_t j = 0; j < S; ++j) load(state, (b * S + j) * C + c0, cb, &e[j * cb]);
      for (int64_t t = 0; t < n; ++t) load(x, (b * L + p + t) * C + c0, cb, &e[(S + t) * cb]);
      for (int64_t t = 0; t < p; ++t) store_zeros(y, (b * L + t) * C + c0, cb);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t c = 0; c < cb; ++c) {
          const float* wc = &w[(c0 + c) * K];
          float acc = bv[c0 + c];
          for (int64_t k = 0; k < K; ++k) acc += wc[k] * e[(t + k) * cb + c];
          out[c] = acc;
        }
        store(y, (b * L + p + t) * C + c0, cb, out.data());
      }
      for (int64_t j = 0; j < S; ++j) store(state_out, (b * S + j) * C + c0, cb, &e[(n + j) * cb]);
    }
  });
}

void selective_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm, const Array& D,
                    const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  const int64_t B = x.shape(0), L = x.shape(1), Di = x.shape(2), N = A.shape(1);
  constexpr int64_t kDb = 16;  // channels per unit
  const int64_t nblk = ceil_div(Di, kDb);
  std::vector<int64_t> pad = paddings(left_padding, B, L);
  std::vector<float> av(static_cast<size_t>(Di * N)), dv(static_cast<size_t>(Di), 0.0f);
  load(A, 0, Di * N, av.data());
  if (D.valid()) load(D, 0, Di, dv.data());
  parallel_for(B * nblk, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> h(static_cast<size_t>(kDb * N)), bt(N), ct(N), xt(kDb), dtt(kDb), out(kDb);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / nblk, d0 = (u % nblk) * kDb, db = std::min(kDb, Di - d0), p = pad[b];
      float* hp = h.data();
      if (state.valid())
        load(state, (b * Di + d0) * N, db * N, hp);
      else
        std::fill(h.begin(), h.end(), 0.0f);
      for (int64_t t = 0; t < p; ++t) store_zeros(y, (b * L + t) * Di + d0, db);
      for (int64_t t = p; t < L; ++t) {
        load(Bm, (b * L + t) * N, N, bt.data());
        load(Cm, (b * L + t) * N, N, ct.data());
        load(x, (b * L + t) * Di + d0, db, xt.data());
        load(dt, (b * L + t) * Di + d0, db, dtt.data());
        for (int64_t d = 0; d < db; ++d) {
          const float dtv = dtt[d], dbx = dtv * xt[d];
          const float* ad = &av[(d0 + d) * N];
          float* hd = hp + d * N;
          float acc = 0.0f;
          for (int64_t n = 0; n < N; ++n) {
            hd[n] = std::exp(dtv * ad[n]) * hd[n] + dbx * bt[n];
            acc += ct[n] * hd[n];
          }
          out[d] = acc + dv[d0 + d] * xt[d];
        }
        store(y, (b * L + t) * Di + d0, db, out.data());
      }
      store(state_out, (b * Di + d0) * N, db * N, hp);
    }
  });
}

void ssd_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm, const Array& D,
              const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  const int64_t B = x.shape(0), L = x.shape(1), H = x.shape(2), P = x.shape(3), G = Bm.shape(2), N = Bm.shape(3);
  const int64_t R = H / G;     // heads per group
  constexpr int64_t kPb = 16;  // state rows (head dims) per unit
  const int64_t nblk = ceil_div(P, kPb);
  std::vector<int64_t> pad = paddings(left_padding, B, L);
  std::vector<float> av(static_cast<size_t>(H)), dv(static_cast<size_t>(H), 0.0f);
  load(A, 0, H, av.data());
  if (D.valid()) load(D, 0, H, dv.data());
  parallel_for(B * H * nblk, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> s(static_cast<size_t>(kPb * N)), bt(N), ct(N), xt(kPb), out(kPb);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / (H * nblk), h = (u / nblk) % H, g = h / R, p0 = (u % nblk) * kPb;
      const int64_t pb = std::min(kPb, P - p0), pad_b = pad[b];
      float* sp = s.data();
      if (state.valid())
        load(state, ((b * H + h) * P + p0) * N, pb * N, sp);
      else
        std::fill(s.begin(), s.end(), 0.0f);
      for (int64_t t = 0; t < pad_b; ++t) store_zeros(y, ((b * L + t) * H + h) * P + p0, pb);
      for (int64_t t = pad_b; t < L; ++t) {
        const float dtv = load1(dt, (b * L + t) * H + h), decay = std::exp(dtv * av[h]);
        load(Bm, ((b * L + t) * G + g) * N, N, bt.data());
        load(Cm, ((b * L + t) * G + g) * N, N, ct.data());
        load(x, ((b * L + t) * H + h) * P + p0, pb, xt.data());
        for (int64_t i = 0; i < pb; ++i) {
          const float dx = dtv * xt[i];
          float* si = sp + i * N;
          float acc = 0.0f;
          for (int64_t n = 0; n < N; ++n) {
            si[n] = decay * si[n] + dx * bt[n];
            acc += ct[n] * si[n];
          }
          out[i] = acc + dv[h] * xt[i];
        }
        store(y, ((b * L + t) * H + h) * P + p0, pb, out.data());
      }
      store(state_out, ((b * H + h) * P + p0) * N, pb * N, sp);
    }
  });
}

void gated_delta_rule(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta,
                      const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  const int64_t B = q.shape(0), L = q.shape(1), Hk = q.shape(2), Dk = q.shape(3), Hv = v.shape(2), Dv = v.shape(3);
  const int64_t R = Hv / Hk;               // value heads per key head
  const bool per_channel = g.ndim() == 4;  // [B, L, Hv, Dk]
  constexpr int64_t kVb = 16;              // state rows (value dims) per unit
  const int64_t nblk = ceil_div(Dv, kVb);
  std::vector<int64_t> pad = paddings(left_padding, B, L);
  parallel_for(B * Hv * nblk, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> s(static_cast<size_t>(kVb * Dk)), qt(Dk), kt(Dk), gt(Dk), vt(kVb), out(kVb);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / (Hv * nblk), hv = (u / nblk) % Hv, hk = hv / R, v0 = (u % nblk) * kVb;
      const int64_t vb = std::min(kVb, Dv - v0), p = pad[b];
      float* sp = s.data();
      if (state.valid())
        load(state, ((b * Hv + hv) * Dv + v0) * Dk, vb * Dk, sp);
      else
        std::fill(s.begin(), s.end(), 0.0f);
      for (int64_t t = 0; t < p; ++t) store_zeros(y, ((b * L + t) * Hv + hv) * Dv + v0, vb);
      for (int64_t t = p; t < L; ++t) {
        load(q, ((b * L + t) * Hk + hk) * Dk, Dk, qt.data());
        load(k, ((b * L + t) * Hk + hk) * Dk, Dk, kt.data());
        load(v, ((b * L + t) * Hv + hv) * Dv + v0, vb, vt.data());
        const float bt = load1(beta, (b * L + t) * Hv + hv);
        if (per_channel)
          load(g, ((b * L + t) * Hv + hv) * Dk, Dk, gt.data());
        else
          std::fill(gt.begin(), gt.end(), load1(g, (b * L + t) * Hv + hv));
        for (int64_t i = 0; i < vb; ++i) {
          float* si = sp + i * Dk;
          float kv = 0.0f;
          for (int64_t d = 0; d < Dk; ++d) {
            si[d] *= gt[d];
            kv += si[d] * kt[d];
          }
          const float delta = (vt[i] - kv) * bt;
          float acc = 0.0f;
          for (int64_t d = 0; d < Dk; ++d) {
            si[d] += delta * kt[d];
            acc += si[d] * qt[d];
          }
          out[i] = acc;
        }
        store(y, ((b * L + t) * Hv + hv) * Dv + v0, vb, out.data());
      }
      store(state_out, ((b * Hv + hv) * Dv + v0) * Dk, vb * Dk, sp);
    }
  });
}

void linear_scan(const Array& a, const Array& x, const Array& state, const Array& left_padding, Array& y,
                 Array& state_out) {
  const int64_t B = x.shape(0), L = x.shape(1), D = x.shape(2);
  constexpr int64_t kDb = 256;  // channels per unit
  const int64_t nblk = ceil_div(D, kDb);
  std::vector<int64_t> pad = paddings(left_padding, B, L);
  parallel_for(B * nblk, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> h(kDb), at(kDb), xt(kDb);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / nblk, d0 = (u % nblk) * kDb, db = std::min(kDb, D - d0), p = pad[b];
      if (state.valid())
        load(state, b * D + d0, db, h.data());
      else
        std::fill(h.begin(), h.end(), 0.0f);
      for (int64_t t = 0; t < p; ++t) store_zeros(y, (b * L + t) * D + d0, db);
      for (int64_t t = p; t < L; ++t) {
        load(a, (b * L + t) * D + d0, db, at.data());
        load(x, (b * L + t) * D + d0, db, xt.data());
        for (int64_t d = 0; d < db; ++d) h[d] = at[d] * h[d] + xt[d];
        store(y, (b * L + t) * D + d0, db, h.data());
      }
      store(state_out, b * D + d0, db, h.data());
    }
  });
}

}  // namespace loom::cpu
