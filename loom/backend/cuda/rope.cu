// Rotary position embedding on CUDA over x [..., L, D] (contiguous; the op makes it so), f32 angle
// math. CPU twin: backend/cpu/rope.cpp. Row r (of all [..., L] rows) sits at position
// offset(b) + r % L with b = r / (rows / B); theta_i = pos * scale * inv_freq_i.
// inv_freq_i is computed as the CPU computes it: 1 / freqs_i in f32 for explicit freqs (read on the
// device), else float(pow(double(base), -2i / dims)) — evaluated on the host and passed by value, so
// both devices start from the same bits (device double pow only past kMaxHostFreqs, i.e. dims > 512).
// One thread per rotated pair or passed-through feature; rows across grid.y. rope_kv_write is a decode
// step's rotation of q and k and its KV-cache write (rotated k, v) in one launch, through the same row
// function, so its bits equal rope's (a replayed step and a plain one agree exactly): on an H100 that
// launch instead of four gave Llama-3.2-1B-shaped tg 1219 -> 1317 t/s at 4 bits, 710 -> 741 in bf16, and
// Llama-3.1-8B-shaped 4-bit 359 -> 373.
#include <cmath>

#include "loom/backend/cuda/act_int8.h"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

constexpr int kMaxHostFreqs = 256;
constexpr int kThreads = 128;

struct RopeParams {
  int64_t rows = 0, d = 0, l = 1, rows_per_b = 1;
  int half = 0, dims = 0;
  bool traditional = false;
  float scale = 1.0f, base = 10000.0f;
  int64_t offset = 0;
  const void* offsets = nullptr;  // per-row [B], int32 or int64
  bool offsets_i64 = false;
  int64_t offsets_stride = 1;
  const void* freqs = nullptr;  // explicit [half] periods (f32/f16/bf16)
  int freqs_dt = 0;             // 0 f32, 1 f16, 2 bf16
  int64_t freqs_stride = 1;
  bool host_inv = false;
  float inv[kMaxHostFreqs] = {};
};

__device__ __forceinline__ float inv_freq(const RopeParams& p, int i) {
  if (p.host_inv) return p.inv[i];
  if (p.freqs) {
    int64_t o = i * p.freqs_stride;
    float f = p.freqs_dt == 1   ? __half2float(static_cast<const __half*>(p.freqs)[o])
              : p.freqs_dt == 2 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p.freqs)[o])
                                : static_cast<const float*>(p.freqs)[o];
    return 1.0f / f;
  }
  return static_cast<float>(pow(static_cast<double>(p.base), -2.0 * i / p.dims));
}

// Position of row r (of the [..., L] rows, rows_per_b per batch row): offset(b) + r % L.
__device__ __forceinline__ int64_t row_position(const RopeParams& p, int64_t r, int64_t rows_per_b) {
  int64_t off = p.offset;
  if (p.offsets) {
    int64_t bi = r / rows_per_b;
    off = p.offsets_i64 ? static_cast<const int64_t*>(p.offsets)[bi * p.offsets_stride]
                        : static_cast<const int32_t*>(p.offsets)[bi * p.offsets_stride];
  }
  return off + r % p.l;
}

// One row at `pos`: `half` rotated pairs, then the d - dims features past `dims`, copied; item k of the
// d - half is this thread's when k = first + j * step.
template <typename T>
__device__ __forceinline__ void rope_row(const RopeParams& p, const T* __restrict__ xr, T* __restrict__ yr,
                                         int64_t pos_i, int64_t first, int64_t step) {
  const float pos = static_cast<float>(pos_i);
  const int64_t items = p.d - p.half;
  for (int64_t k = first; k < items; k += step) {
    if (k >= p.half) {
      int64_t c = p.dims + (k - p.half);
      yr[c] = xr[c];
      continue;
    }
    int i = static_cast<int>(k);
    float theta = pos * p.scale * inv_freq(p, i);  // same association as the CPU: (pos * scale) * inv
    float sn, c;
    sincosf(theta, &sn, &c);  // full-range, accurate (not the __sincosf intrinsic)
    int64_t i0 = p.traditional ? 2 * i : i;
    int64_t i1 = p.traditional ? 2 * i + 1 : i + p.half;
    float x0 = to_f(xr[i0]), x1 = to_f(xr[i1]);
    yr[i0] = from_f<T>(x0 * c - x1 * sn);
    yr[i1] = from_f<T>(x0 * sn + x1 * c);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(const T* __restrict__ x, T* __restrict__ out, const RopeParams p) {
  pdl_wait();
  pdl_trigger();
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y)
    rope_row(p, x + r * p.d, out + r * p.d, row_position(p, r, p.rows_per_b),
             static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, static_cast<int64_t>(gridDim.x) * blockDim.x);
}

// rope_kv_write in one launch: rows [0, q_rows) rotate q into q_out, the next kv_rows rotate k into the
// key page and the last kv_rows copy v into the value page, at (b, h, l + p) with p = index[0] - base.
struct CacheWrite {
  int64_t q_rows = 0, q_rows_per_b = 1, kv_rows = 0, hkv = 1;
  int64_t s0 = 0, s1 = 0, s2 = 0;  // page strides of b, h, position (both pages share them)
  const int32_t* index = nullptr;
  int64_t base = 0, max_p = 0;
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rope_kv_write_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ q_out, T* __restrict__ k_dst, T* __restrict__ v_dst, const RopeParams p,
                         const CacheWrite w) {
  pdl_wait();
  pdl_trigger();
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t shift = static_cast<int64_t>(*w.index) - w.base;
  for (int64_t r = blockIdx.y; r < w.q_rows + 2 * w.kv_rows; r += gridDim.y) {
    if (r < w.q_rows) {
      rope_row(p, q + r * p.d, q_out + r * p.d, row_position(p, r, w.q_rows_per_b), first, step);
      continue;
    }
    if (shift < 0 || shift > w.max_p) continue;
    const bool is_k = r < w.q_rows + w.kv_rows;
    const int64_t rk = r - w.q_rows - (is_k ? 0 : w.kv_rows);  // row of k or v: (b, h, l)
    const int64_t l = rk % p.l, h = (rk / p.l) % w.hkv, b = rk / (p.l * w.hkv);
    const int64_t o = b * w.s0 + h * w.s1 + (l + shift) * w.s2;
    if (is_k) {
      rope_row(p, k + rk * p.d, k_dst + o, row_position(p, rk, p.rows_per_b), first, step);
    } else {
      for (int64_t c = first; c < p.d; c += step) v_dst[o + c] = v[rk * p.d + c];
    }
  }
}

}  // namespace

namespace {

// Parameters of x [..., L, D] (rows of B batch rows) rotated with `spec` at offset or per-row offsets.
RopeParams rope_params(const Array& x, const RopeSpec& spec, int64_t offset, const Array& offsets, const char* op) {
  RopeParams p;
  p.d = x.shape(-1);
  p.l = x.shape(-2);
  p.rows = p.d ? x.size() / p.d : 0;
  int64_t b = x.ndim() >= 3 ? x.shape(0) : 1;
  p.rows_per_b = p.rows / std::max<int64_t>(1, b);
  p.half = spec.dims / 2;
  p.dims = spec.dims;
  p.traditional = spec.traditional;
  p.scale = spec.scale;
  p.base = spec.base;
  p.offset = offset;
  if (offsets.valid()) {
    if (offsets.dtype() != Dtype::i32 && offsets.dtype() != Dtype::i64)
      throw NotSupportedError(format_error(
          op, "CUDA kernel takes int32 or int64 per-row offsets, got " + std::string(name(offsets.dtype()))));
    p.offsets = offsets.raw_data();
    p.offsets_i64 = offsets.dtype() == Dtype::i64;
    p.offsets_stride = offsets.strides()[0];
  }
  if (spec.freqs.valid()) {
    switch (spec.freqs.dtype()) {
      case Dtype::f32:
        p.freqs_dt = 0;
        break;
      case Dtype::f16:
        p.freqs_dt = 1;
        break;
      case Dtype::bf16:
        p.freqs_dt = 2;
        break;
      default:
        throw NotSupportedError(format_error(
            op, "CUDA kernel takes float32/float16/bfloat16 freqs, got " + std::string(name(spec.freqs.dtype()))));
    }
    p.freqs = spec.freqs.raw_data();
    p.freqs_stride = spec.freqs.strides()[0];
  } else if (p.half <= kMaxHostFreqs) {
    p.host_inv = true;
    for (int i = 0; i < p.half; ++i)
      p.inv[i] = static_cast<float>(std::pow(static_cast<double>(spec.base), -2.0 * i / spec.dims));
  }
  return p;
}

}  // namespace

void rope(const Array& x, const RopeSpec& spec, int64_t offset, const Array& offsets, Array& out) {
  const char* op = "rope";
  const RopeParams p = rope_params(x, spec, offset, offsets, op);
  if (p.rows == 0 || p.d == 0) return;
  int64_t items = p.d - p.half;
  dim3 grid(grid_for(items, kThreads), static_cast<unsigned>(std::min<int64_t>(p.rows, 65535)));
  cudaStream_t st = stream_of(out);
  dispatch_float(out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(op, rope_kernel<T>, grid, dim3(kThreads), 0, st, static_cast<const T*>(x.raw_data()),
               static_cast<T*>(out.raw_data()), p);
  });
  check_launch(op);
}

void rope_kv_write(const Array& q, const Array& k, const Array& v, const RopeSpec& spec, const Array& offsets,
                   const Array& index, int64_t base, int64_t stride, int64_t max_p, Array& q_out, Array& k_dst,
                   Array& v_dst) {
  const char* op = "rope_kv_write";
  // The parameters are k's (rows of Hkv * L per batch row); the kernel derives q's.
  const RopeParams p = rope_params(k, spec, 0, offsets, op);
  if (p.rows == 0 || p.d == 0) return;
  act_int8::forget(k_dst);
  act_int8::forget(v_dst);
  if (k_dst.strides() != v_dst.strides() || k_dst.strides()[3] != 1 || k_dst.strides()[2] != stride)
    throw NotSupportedError(format_error(op, "CUDA kernel takes cache pages of one layout with contiguous rows"));
  CacheWrite w;
  w.q_rows = q.size() / p.d;
  w.q_rows_per_b = w.q_rows / std::max<int64_t>(1, q.shape(0));
  w.kv_rows = p.rows;
  w.hkv = k.shape(1);
  w.s0 = k_dst.strides()[0];
  w.s1 = k_dst.strides()[1];
  w.s2 = stride;
  w.index = static_cast<const int32_t*>(index.raw_data());
  w.base = base;
  w.max_p = max_p;
  const int64_t rows = w.q_rows + 2 * w.kv_rows;
  dim3 grid(grid_for(p.d, kThreads), static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  cudaStream_t st = stream_of(q_out);
  dispatch_float(q_out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(op, rope_kv_write_kernel<T>, grid, dim3(kThreads), 0, st, static_cast<const T*>(q.raw_data()),
               static_cast<const T*>(k.raw_data()), static_cast<const T*>(v.raw_data()),
               static_cast<T*>(q_out.raw_data()), static_cast<T*>(k_dst.raw_data()), static_cast<T*>(v_dst.raw_data()),
               p, w);
  });
  check_launch(op);
}

}  // namespace loom::cuda
