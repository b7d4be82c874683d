// Recurrent scans on CUDA (kernel_api.inc, "recurrent scans"). CPU twin: backend/cpu/ssm.cpp, with the
// same recurrences and f32 state. Each state row loops over time inside one kernel launch:
//  - causal_conv1d (not recurrent): one thread per output element; linear_scan: one per (b, channel);
//  - selective_scan, ssd_scan, gated_delta_rule: one warp per state row ((b, d), (b, h, p), (b, h, dv)),
//    its lanes splitting the row's N (or Dk) entries, kept in registers (NPL per lane, N <= 256), with
//    warp-sum reductions for the outputs (and the delta rule's S k).
// Decode (L = 1) is one launch per op; prefill of ssd_scan / gated_delta_rule normally takes the
// chunked matmul form in loom/ops/ssm.cpp instead. Operands are read through a runtime dtype switch
// (each may be f32/bf16/f16 independently); outputs are templated on their dtype.
#include <type_traits>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

enum class Fdt : int { f32, f16, bf16 };
// A contiguous float operand of any float dtype (p == nullptr: absent).
struct In {
  const void* p = nullptr;
  Fdt dt = Fdt::f32;
};

__device__ __forceinline__ float ld(const In& a, int64_t i) {
  switch (a.dt) {
    case Fdt::f16:
      return __half2float(static_cast<const __half*>(a.p)[i]);
    case Fdt::bf16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(a.p)[i]);
    default:
      return static_cast<const float*>(a.p)[i];
  }
}

In in_of(const Array& a, const char* op) {
  In v;
  if (!a.valid()) return v;
  v.p = a.raw_data();
  switch (a.dtype()) {
    case Dtype::f32:
      v.dt = Fdt::f32;
      break;
    case Dtype::f16:
      v.dt = Fdt::f16;
      break;
    case Dtype::bf16:
      v.dt = Fdt::bf16;
      break;
    default:
      throw NotSupportedError(
          format_error(op, std::string("CUDA kernel has no ") + std::string(name(a.dtype())) + " operand"));
  }
  return v;
}

const int32_t* pad_of(const Array& lp) { return lp.valid() ? static_cast<const int32_t*>(lp.raw_data()) : nullptr; }
const float* f32_of(const Array& a) { return a.valid() ? static_cast<const float*>(a.raw_data()) : nullptr; }

__device__ __forceinline__ int64_t padding_at(const int32_t* lp, int64_t b, int64_t L) {
  if (!lp) return 0;
  int64_t p = lp[b];
  return p < 0 ? 0 : (p > L ? L : p);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

constexpr int kWarpsPerBlock = 4;

// Calls f(std::integral_constant<int, NPL>) with NPL = entries per lane for a row of n (<= 256).
template <typename F>
void dispatch_npl(int64_t n, const char* op, F&& f) {
  if (n <= 32) return f(std::integral_constant<int, 1>{});
  if (n <= 64) return f(std::integral_constant<int, 2>{});
  if (n <= 128) return f(std::integral_constant<int, 4>{});
  if (n <= 256) return f(std::integral_constant<int, 8>{});
  throw NotSupportedError(
      format_error(op, "the CUDA scan keeps state rows of at most 256 entries, got " + std::to_string(n)));
}

// ---------------------------------------------------------------- causal_conv1d

// The conv is not recurrent: every output reads its own window, so one thread per (b, t, c) for y
// and one per (b, j, c) for the new state. e(j) is the row as if it began at its first real
// position p, right after the state: state rows for j < S, then x[p:].
template <typename T>
__device__ __forceinline__ float conv_row(const T* x, const T* state, int64_t b, int64_t c, int64_t p, int64_t j,
                                          int64_t L, int64_t C, int64_t S) {
  if (j < S) return state ? to_f(state[(b * S + j) * C + c]) : 0.0f;
  return to_f(x[(b * L + p + j - S) * C + c]);
}

template <typename T>
__global__ void conv_kernel(const T* x, In w, In bias, const T* state, const int32_t* lp, T* y, int64_t B, int64_t L,
                            int64_t C, int64_t K) {
  const int64_t S = K - 1;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < B * L * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (L * C), t = (i / C) % L, c = i % C, p = padding_at(lp, b, L);
    if (t < p) {
      y[i] = from_f<T>(0.0f);
      continue;
    }
    float acc = bias.p ? ld(bias, c) : 0.0f;
    for (int64_t k = 0; k < K; ++k) acc += ld(w, c * K + k) * conv_row(x, state, b, c, p, t - p + k, L, C, S);
    y[i] = from_f<T>(acc);
  }
}

template <typename T>
__global__ void conv_state_kernel(const T* x, const T* state, const int32_t* lp, T* st_out, int64_t B, int64_t L,
                                  int64_t C, int64_t S) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < B * S * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (S * C), j = (i / C) % S, c = i % C, p = padding_at(lp, b, L);
    st_out[i] = from_f<T>(conv_row(x, state, b, c, p, L - p + j, L, C, S));
  }
}

// ---------------------------------------------------------------- selective_scan (Mamba-1)

template <typename T, int NPL>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    selective_kernel(In x, In dt, In A, In Bm, In Cm, In D, const float* state, const int32_t* lp, T* y, float* st_out,
                     int64_t B, int64_t L, int64_t Di, int64_t N) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + (threadIdx.x >> 5);
  if (row >= B * Di) return;  // whole warps exit together
  const int64_t b = row / Di, d = row % Di, p = padding_at(lp, b, L);
  float h[NPL], a[NPL];
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    int64_t n = lane + 32 * i;
    h[i] = (n < N && state) ? state[row * N + n] : 0.0f;
    a[i] = n < N ? ld(A, d * N + n) : 0.0f;
  }
  const float dd = D.p ? ld(D, d) : 0.0f;
  for (int64_t t = 0; t < L; ++t) {
    const int64_t bt = b * L + t;
    if (t < p) {
      if (lane == 0) y[bt * Di + d] = from_f<T>(0.0f);
      continue;
    }
    const float dtv = ld(dt, bt * Di + d), xv = ld(x, bt * Di + d), dbx = dtv * xv;
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      int64_t n = lane + 32 * i;
      if (n < N) {
        h[i] = expf(dtv * a[i]) * h[i] + dbx * ld(Bm, bt * N + n);
        acc += ld(Cm, bt * N + n) * h[i];
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[bt * Di + d] = from_f<T>(acc + dd * xv);
  }
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    int64_t n = lane + 32 * i;
    if (n < N) st_out[row * N + n] = h[i];
  }
}

// ---------------------------------------------------------------- ssd_scan (Mamba-2)

template <typename T, int NPL>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    ssd_kernel(In x, In dt, In A, In Bm, In Cm, In D, const float* state, const int32_t* lp, T* y, float* st_out,
               int64_t B, int64_t L, int64_t H, int64_t P, int64_t G, int64_t N) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + (threadIdx.x >> 5);  // (b, h, p)
  if (row >= B * H * P) return;
  const int64_t b = row / (H * P), h = (row / P) % H, pi = row % P, g = h / (H / G);
  const int64_t pad = padding_at(lp, b, L);
  float s[NPL];
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    int64_t n = lane + 32 * i;
    s[i] = (n < N && state) ? state[row * N + n] : 0.0f;
  }
  const float ah = ld(A, h), dh = D.p ? ld(D, h) : 0.0f;
  for (int64_t t = 0; t < L; ++t) {
    const int64_t bt = b * L + t, yo = (bt * H + h) * P + pi;
    if (t < pad) {
      if (lane == 0) y[yo] = from_f<T>(0.0f);
      continue;
    }
    const float dtv = ld(dt, bt * H + h), decay = expf(dtv * ah), xv = ld(x, yo), dx = dtv * xv;
    const int64_t bc = (bt * G + g) * N;
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      int64_t n = lane + 32 * i;
      if (n < N) {
        s[i] = decay * s[i] + dx * ld(Bm, bc + n);
        acc += ld(Cm, bc + n) * s[i];
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[yo] = from_f<T>(acc + dh * xv);
  }
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    int64_t n = lane + 32 * i;
    if (n < N) st_out[row * N + n] = s[i];
  }
}

// ---------------------------------------------------------------- gated_delta_rule

template <typename T, int NPL>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    gated_delta_kernel(In q, In k, In v, In g, bool per_channel, In beta, const float* state, const int32_t* lp, T* y,
                       float* st_out, int64_t B, int64_t L, int64_t Hk, int64_t Hv, int64_t Dk, int64_t Dv) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + (threadIdx.x >> 5);  // (b, hv, dv)
  if (row >= B * Hv * Dv) return;
  const int64_t b = row / (Hv * Dv), hv = (row / Dv) % Hv, dv = row % Dv, hk = hv / (Hv / Hk);
  const int64_t pad = padding_at(lp, b, L);
  float s[NPL];
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    int64_t d = lane + 32 * i;
    s[i] = (d < Dk && state) ? state[row * Dk + d] : 0.0f;
  }
  for (int64_t t = 0; t < L; ++t) {
    const int64_t bt = b * L + t, yo = (bt * Hv + hv) * Dv + dv, qk = (bt * Hk + hk) * Dk;
    if (t < pad) {
      if (lane == 0) y[yo] = from_f<T>(0.0f);
      continue;
    }
    const float gs = per_channel ? 0.0f : ld(g, bt * Hv + hv);
    float kv = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      int64_t d = lane + 32 * i;
      if (d < Dk) {
        s[i] *= per_channel ? ld(g, (bt * Hv + hv) * Dk + d) : gs;
        kv += s[i] * ld(k, qk + d);
      }
    }
    kv = warp_sum(kv);
    const float delta = (ld(v, yo) - kv) * ld(beta, bt * Hv + hv);
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      int64_t d = lane + 32 * i;
      if (d < Dk) {
        s[i] += delta * ld(k, qk + d);
        acc += s[i] * ld(q, qk + d);
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[yo] = from_f<T>(acc);
  }
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    int64_t d = lane + 32 * i;
    if (d < Dk) st_out[row * Dk + d] = s[i];
  }
}

// ---------------------------------------------------------------- linear_scan

template <typename T>
__global__ void linear_kernel(In a, In x, const float* state, const int32_t* lp, T* y, float* st_out, int64_t B,
                              int64_t L, int64_t D) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < B * D;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / D, d = i % D, p = padding_at(lp, b, L);
    float h = state ? state[i] : 0.0f;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t o = (b * L + t) * D + d;
      if (t < p) {
        y[o] = from_f<T>(0.0f);
        continue;
      }
      h = ld(a, o) * h + ld(x, o);
      y[o] = from_f<T>(h);
    }
    st_out[i] = h;
  }
}

unsigned warp_grid(int64_t rows) { return grid_for(rows, kWarpsPerBlock); }

}  // namespace

void causal_conv1d(const Array& x, const Array& weight, const Array& bias, const Array& state,
                   const Array& left_padding, Array& y, Array& state_out) {
  const int64_t B = x.shape(0), L = x.shape(1), C = x.shape(2), K = weight.shape(1);
  if (B * C == 0) return;
  In w = in_of(weight, "causal_conv1d"), bv = in_of(bias, "causal_conv1d");
  cudaStream_t st = stream_of(y);
  dispatch_float(x.dtype(), "causal_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* sp = state.valid() ? static_cast<const T*>(state.raw_data()) : nullptr;
    const int32_t* lp = pad_of(left_padding);
    if (L > 0)
      conv_kernel<T>
          <<<grid_for(B * L * C, 256), 256, 0, st>>>(xp, w, bv, sp, lp, static_cast<T*>(y.raw_data()), B, L, C, K);
    if (K > 1)
      conv_state_kernel<T><<<grid_for(B * (K - 1) * C, 256), 256, 0, st>>>(
          xp, sp, lp, static_cast<T*>(state_out.raw_data()), B, L, C, K - 1);
  });
  check_launch("causal_conv1d");
}

void selective_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm, const Array& D,
                    const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  const char* op = "selective_scan";
  const int64_t B = x.shape(0), L = x.shape(1), Di = x.shape(2), N = A.shape(1);
  if (B * Di == 0) return;
  cudaStream_t st = stream_of(y);
  dispatch_npl(N, op, [&](auto npl) {
    dispatch_float(y.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      selective_kernel<T, decltype(npl)::value><<<warp_grid(B * Di), 32 * kWarpsPerBlock, 0, st>>>(
          in_of(x, op), in_of(dt, op), in_of(A, op), in_of(Bm, op), in_of(Cm, op), in_of(D, op), f32_of(state),
          pad_of(left_padding), static_cast<T*>(y.raw_data()), static_cast<float*>(state_out.raw_data()), B, L, Di, N);
    });
  });
  check_launch(op);
}

void ssd_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm, const Array& D,
              const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  const char* op = "ssd_scan";
  const int64_t B = x.shape(0), L = x.shape(1), H = x.shape(2), P = x.shape(3), G = Bm.shape(2), N = Bm.shape(3);
  if (B * H * P == 0) return;
  cudaStream_t st = stream_of(y);
  dispatch_npl(N, op, [&](auto npl) {
    dispatch_float(y.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      ssd_kernel<T, decltype(npl)::value><<<warp_grid(B * H * P), 32 * kWarpsPerBlock, 0, st>>>(
          in_of(x, op), in_of(dt, op), in_of(A, op), in_of(Bm, op), in_of(Cm, op), in_of(D, op), f32_of(state),
          pad_of(left_padding), static_cast<T*>(y.raw_data()), static_cast<float*>(state_out.raw_data()), B, L, H, P, G,
          N);
    });
  });
  check_launch(op);
}

void gated_delta_rule(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta,
                      const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  const char* op = "gated_delta_rule";
  const int64_t B = q.shape(0), L = q.shape(1), Hk = q.shape(2), Dk = q.shape(3), Hv = v.shape(2), Dv = v.shape(3);
  if (B * Hv * Dv == 0) return;
  cudaStream_t st = stream_of(y);
  dispatch_npl(Dk, op, [&](auto npl) {
    dispatch_float(y.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      gated_delta_kernel<T, decltype(npl)::value><<<warp_grid(B * Hv * Dv), 32 * kWarpsPerBlock, 0, st>>>(
          in_of(q, op), in_of(k, op), in_of(v, op), in_of(g, op), g.ndim() == 4, in_of(beta, op), f32_of(state),
          pad_of(left_padding), static_cast<T*>(y.raw_data()), static_cast<float*>(state_out.raw_data()), B, L, Hk, Hv,
          Dk, Dv);
    });
  });
  check_launch(op);
}

void linear_scan(const Array& a, const Array& x, const Array& state, const Array& left_padding, Array& y,
                 Array& state_out) {
  const char* op = "linear_scan";
  const int64_t B = x.shape(0), L = x.shape(1), D = x.shape(2);
  if (B * D == 0) return;
  cudaStream_t st = stream_of(y);
  dispatch_float(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    linear_kernel<T><<<grid_for(B * D, 128), 128, 0, st>>>(in_of(a, op), in_of(x, op), f32_of(state),
                                                           pad_of(left_padding), static_cast<T*>(y.raw_data()),
                                                           static_cast<float*>(state_out.raw_data()), B, L, D);
  });
  check_launch(op);
}

}  // namespace loom::cuda
