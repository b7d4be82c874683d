// Rotary position embedding on CUDA over x [..., L, D] (contiguous; the op makes it so), f32 angle
// math. CPU twin: backend/cpu/rope.cpp. Row r (of all [..., L] rows) sits at position
// offset(b) + r % L with b = r / (rows / B); theta_i = pos * scale * inv_freq_i.
// inv_freq_i is computed as the CPU computes it: 1 / freqs_i in f32 for explicit freqs (read on the
// device), else float(pow(double(base), -2i / dims)) — evaluated on the host and passed by value, so
// both devices start from the same bits (device double pow only past kMaxHostFreqs, i.e. dims > 512).
// One thread per rotated pair or passed-through feature; rows across grid.y.
#include <cmath>

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

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(const T* __restrict__ x, T* __restrict__ out, const RopeParams p) {
  // Per row: `half` rotated pairs, then the d - dims features past `dims`, copied.
  pdl_wait();
  pdl_trigger();
  const int64_t items = p.d - p.half;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    int64_t off = p.offset;
    if (p.offsets) {
      int64_t bi = r / p.rows_per_b;
      off = p.offsets_i64 ? static_cast<const int64_t*>(p.offsets)[bi * p.offsets_stride]
                          : static_cast<const int32_t*>(p.offsets)[bi * p.offsets_stride];
    }
    const float pos = static_cast<float>(off + r % p.l);
    const T* xr = x + r * p.d;
    T* yr = out + r * p.d;
    for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < items;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
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
}

}  // namespace

void rope(const Array& x, const RopeSpec& spec, int64_t offset, const Array& offsets, Array& out) {
  const char* op = "rope";
  RopeParams p;
  p.d = x.shape(-1);
  p.l = x.shape(-2);
  p.rows = p.d ? x.size() / p.d : 0;
  if (p.rows == 0 || p.d == 0) return;
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

}  // namespace loom::cuda
