// Normalisation kernels on CUDA: rms_norm, add_rms_norm, layer_norm over the last axis of contiguous
// rows (the op makes x contiguous). CPU twin: backend/cpu/norm.cpp — same formulas and rounding points:
// statistics in f32, inv = 1 / sqrt(stat / d + eps), y = x * inv * w (f32, one rounding to the output
// dtype at the end); add_rms_norm rounds x + residual to the sum's dtype and normalises that rounded sum.
// Rows are short (a hidden size), so a warp owns a row up to 1024 features and a block of 8 warps owns
// one beyond; both read the row twice (statistics, then output), the second read hitting L1/L2.
#include <cmath>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

constexpr int kWarpRowMax = 1024;  // rows up to this width get one warp each
constexpr int kBlockWarps = 8;     // wider rows get a block of this many warps

// An optional 1-D float operand (weight, bias, or an input of another dtype than the output), read
// with a runtime dtype switch: the branch is uniform, and it avoids instantiating every dtype pair.
enum class Fdt : int { f32, f16, bf16 };
struct FVec {
  const void* p = nullptr;
  int64_t stride = 1;
  Fdt dt = Fdt::f32;
};

__device__ __forceinline__ float ld(const FVec& v, int64_t i) {
  int64_t o = i * v.stride;
  switch (v.dt) {
    case Fdt::f16:
      return __half2float(static_cast<const __half*>(v.p)[o]);
    case Fdt::bf16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(v.p)[o]);
    default:
      return static_cast<const float*>(v.p)[o];
  }
}

Fdt fdt_of(Dtype dt, const char* op, const char* what) {
  switch (dt) {
    case Dtype::f32:
      return Fdt::f32;
    case Dtype::f16:
      return Fdt::f16;
    case Dtype::bf16:
      return Fdt::bf16;
    default:
      throw NotSupportedError(
          format_error(op, std::string("CUDA kernel has no ") + std::string(name(dt)) + " " + what));
  }
}

FVec fvec_of(const Array& a, const char* op, const char* what) {
  FVec v;
  if (!a.valid()) return v;
  v.p = a.raw_data();
  v.stride = a.ndim() == 1 ? a.strides()[0] : 1;
  v.dt = fdt_of(a.dtype(), op, what);
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum of v over the threads of one row: the warp for WPR == 1, the block (one row) otherwise.
// `red` holds kBlockWarps floats; the trailing sync lets the caller reuse it.
template <int WPR>
__device__ __forceinline__ float row_sum(float v, float* red) {
  v = warp_sum(v);
  if constexpr (WPR == 1) {
    return v;
  } else {
    int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) red[warp] = v;
    __syncthreads();
    float s = 0;
#pragma unroll
    for (int w = 0; w < WPR; ++w) s += red[w];
    __syncthreads();
    return s;
  }
}

// Thread layout shared by the kernels: WPR warps per row; a block holds 4 rows (WPR == 1) or one.
template <int WPR>
struct RowLayout {
  static constexpr int kThreads = WPR == 1 ? 128 : 32 * WPR;
  static constexpr int kRowsPerBlock = WPR == 1 ? 4 : 1;
  static constexpr int kRowThreads = 32 * WPR;
  __device__ static int row_in_block() { return WPR == 1 ? threadIdx.x >> 5 : 0; }
  __device__ static int lane() { return WPR == 1 ? (threadIdx.x & 31) : threadIdx.x; }
};

template <typename T, int WPR>
__global__ void __launch_bounds__(RowLayout<WPR>::kThreads)
    rms_norm_kernel(const T* x, FVec w, float eps, T* out, int64_t rows, int64_t d) {
  using RL = RowLayout<WPR>;
  __shared__ float red[kBlockWarps];
  // The row loop is uniform over the block when WPR > 1 (one row per block), as row_sum's syncs need.
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * RL::kRowsPerBlock + RL::row_in_block(); r < rows;
       r += static_cast<int64_t>(gridDim.x) * RL::kRowsPerBlock) {
    const T* xr = x + r * d;
    T* yr = out + r * d;
    float ss = 0;
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) {
      float v = to_f(xr[i]);
      ss += v * v;
    }
    ss = row_sum<WPR>(ss, red);
    float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) {
      float v = to_f(xr[i]);
      yr[i] = from_f<T>(w.p ? v * inv * ld(w, i) : v * inv);
    }
  }
}

// out and sum share dtype T (the promotion of x's and r's); x and r are read through FVec.
template <typename T, int WPR>
__global__ void __launch_bounds__(RowLayout<WPR>::kThreads)
    add_rms_norm_kernel(FVec x, FVec res, FVec w, float eps, T* out, T* sum, int64_t rows, int64_t d) {
  using RL = RowLayout<WPR>;
  __shared__ float red[kBlockWarps];
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * RL::kRowsPerBlock + RL::row_in_block(); r < rows;
       r += static_cast<int64_t>(gridDim.x) * RL::kRowsPerBlock) {
    float ss = 0;
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) {
      T s = from_f<T>(ld(x, r * d + i) + ld(res, r * d + i));
      sum[r * d + i] = s;
      float v = to_f(s);  // normalise the rounded sum, as the unfused pair would
      ss += v * v;
    }
    ss = row_sum<WPR>(ss, red);
    float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) {
      // Recomputed rather than re-read from `sum`: the same thread, the same rounding, no memory trip.
      float v = to_f(from_f<T>(ld(x, r * d + i) + ld(res, r * d + i)));
      out[r * d + i] = from_f<T>(w.p ? v * inv * ld(w, i) : v * inv);
    }
  }
}

template <typename T, int WPR>
__global__ void __launch_bounds__(RowLayout<WPR>::kThreads)
    layer_norm_kernel(const T* x, FVec w, FVec b, float eps, T* out, int64_t rows, int64_t d) {
  using RL = RowLayout<WPR>;
  __shared__ float red[kBlockWarps];
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * RL::kRowsPerBlock + RL::row_in_block(); r < rows;
       r += static_cast<int64_t>(gridDim.x) * RL::kRowsPerBlock) {
    const T* xr = x + r * d;
    T* yr = out + r * d;
    // Two passes (mean, then the centred sum of squares) as the CPU does: no cancellation for rows
    // with a large mean.
    float s = 0;
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) s += to_f(xr[i]);
    float mean = row_sum<WPR>(s, red) / static_cast<float>(d);
    float var = 0;
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) {
      float c = to_f(xr[i]) - mean;
      var += c * c;
    }
    var = row_sum<WPR>(var, red) / static_cast<float>(d);
    float inv = 1.0f / sqrtf(var + eps);
    for (int64_t i = RL::lane(); i < d; i += RL::kRowThreads) {
      float y = (to_f(xr[i]) - mean) * inv;
      if (w.p) y *= ld(w, i);
      if (b.p) y += ld(b, i);
      yr[i] = from_f<T>(y);
    }
  }
}

int64_t row_count(const Array& x) {
  int64_t d = x.shape().back();
  return d ? x.size() / d : 0;
}

}  // namespace

void rms_norm(const Array& x, const Array& weight, float eps, Array& out) {
  int64_t d = x.shape().back(), rows = row_count(x);
  if (rows == 0 || d == 0) return;
  FVec w = fvec_of(weight, "rms_norm", "weight");
  cudaStream_t st = stream_of(out);
  dispatch_float(out.dtype(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.raw_data());
    T* op = static_cast<T*>(out.raw_data());
    if (d <= kWarpRowMax)
      rms_norm_kernel<T, 1><<<grid_for(rows, 4), 128, 0, st>>>(xp, w, eps, op, rows, d);
    else
      rms_norm_kernel<T, kBlockWarps><<<grid_for(rows, 1), 32 * kBlockWarps, 0, st>>>(xp, w, eps, op, rows, d);
  });
  check_launch("rms_norm");
}

void add_rms_norm(const Array& x, const Array& residual, const Array& weight, float eps, Array& out, Array& sum) {
  int64_t d = x.shape().back(), rows = row_count(x);
  if (rows == 0 || d == 0) return;
  FVec xv = fvec_of(x, "add_rms_norm", "input"), rv = fvec_of(residual, "add_rms_norm", "residual");
  xv.stride = rv.stride = 1;  // contiguous rows, indexed flat
  FVec w = fvec_of(weight, "add_rms_norm", "weight");
  cudaStream_t st = stream_of(out);
  dispatch_float(out.dtype(), "add_rms_norm", [&](auto tag) {
    using T = decltype(tag);
    T* op = static_cast<T*>(out.raw_data());
    T* sp = static_cast<T*>(sum.raw_data());
    if (d <= kWarpRowMax)
      add_rms_norm_kernel<T, 1><<<grid_for(rows, 4), 128, 0, st>>>(xv, rv, w, eps, op, sp, rows, d);
    else
      add_rms_norm_kernel<T, kBlockWarps>
          <<<grid_for(rows, 1), 32 * kBlockWarps, 0, st>>>(xv, rv, w, eps, op, sp, rows, d);
  });
  check_launch("add_rms_norm");
}

void layer_norm(const Array& x, const Array& weight, const Array& bias, float eps, Array& out) {
  int64_t d = x.shape().back(), rows = row_count(x);
  if (rows == 0 || d == 0) return;
  // The op passes weight and bias as given (possibly strided 1-D views): FVec carries the stride.
  FVec w = fvec_of(weight, "layer_norm", "weight"), b = fvec_of(bias, "layer_norm", "bias");
  cudaStream_t st = stream_of(out);
  dispatch_float(out.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.raw_data());
    T* op = static_cast<T*>(out.raw_data());
    if (d <= kWarpRowMax)
      layer_norm_kernel<T, 1><<<grid_for(rows, 4), 128, 0, st>>>(xp, w, b, eps, op, rows, d);
    else
      layer_norm_kernel<T, kBlockWarps><<<grid_for(rows, 1), 32 * kBlockWarps, 0, st>>>(xp, w, b, eps, op, rows, d);
  });
  check_launch("layer_norm");
}

}  // namespace loom::cuda
