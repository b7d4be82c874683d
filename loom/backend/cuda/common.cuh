// Shared helpers of the CUDA kernels (backend/cuda/*.cu only): error checks, the per-device stream,
// strided views passed by value, dtype dispatch and float conversion of the element types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "loom/common/error.h"
#include "loom/core/array.h"

namespace loom::cuda {

// Throws loom::Error "[cuda] <what>: <cuda error string>" when e is not cudaSuccess.
void check(cudaError_t e, const char* what);
#define LOOM_CUDA_CHECK(expr) ::loom::cuda::check((expr), #expr)
// Checks the last launch (cudaGetLastError) and names the kernel in the error.
void check_launch(const char* kernel);

// Makes d the current device and returns its stream (one non-blocking stream per device; every
// kernel and copy of loom queues on it, so buffers freed on the host are safe to reuse in order).
cudaStream_t stream_for(Device d);
inline cudaStream_t stream_of(const Array& a) { return stream_for(a.device()); }
// Multiprocessors of device d (queried once per device).
int sm_count(Device d);

// ---- programmatic dependent launch (compute capability 9.0 and newer) --------------------------------
// A kernel queued with launch_pdl may start while the kernel before it on the stream is still running
// (once every block of that one has started and called pdl_trigger, or finished), so its launch and
// prologue overlap the other's tail; stream capture records the pair as a programmatic graph edge. Such
// a kernel calls pdl_wait() before it touches memory that earlier work writes or reads (its inputs, and
// its outputs, which may be memory an earlier kernel still reads); before that it may only compute from
// its parameters. (Weights too, unless the kernel API says the operand is a model weight no kernel of
// the step writes, as for matmul_t_group and the quantized products: an operand that is a weight in a
// model may be the previous kernel's output in another caller.) pdl_trigger() lets the next kernel start. Both are
// no-ops in a kernel launched without the attribute and compile to nothing below sm_90. (Triggering before
// the wait, so that a kernel launches its successor at once, measured on an H100 at model level and not
// kept: in every kernel, bf16 tg +1-3% (1B 747 -> 768 t/s) but 4/8-bit -4% (1B 4-bit 1318 -> 1264, 8B 372
// -> 355); in the norms and the bf16 GEMV only, within 1%; in attention, RoPE and copy only, bf16 +2%, 8B
// 4-bit -4% (372 -> 358) and 1B bf16 at 4096 keys -3%.)
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Whether launch_pdl sets the attribute on the current device: compute capability >= 9.0 and the
// environment's LOOM_CUDA_PDL is not "0" (read once).
bool pdl_enabled();

// kernel<<<grid, block, smem, s>>>(args...) with programmatic stream serialization where pdl_enabled();
// the kernel must follow pdl_wait's rule above. Checks the launch, naming `name` in an error.
template <typename... Params, typename... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...), name);
}

// Grid size for n threads in blocks of `threads` (at least 1 block, capped for grid-stride loops).
inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > (1 << 20)) b = 1 << 20;
  return static_cast<unsigned>(b);
}

// An array's shape and strides (elements), at most kMaxDims dims, passed to kernels by value.
constexpr int kMaxDims = 8;
struct StridedView {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
  // Element offset of the linear (row-major) index i.
  __host__ __device__ int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t q = i / shape[d];
      off += (i - q * shape[d]) * strides[d];
      i = q;
    }
    return off;
  }
};
// The view of `a` with size-1 dims dropped and mergeable neighbours merged (throws past kMaxDims).
StridedView view_of(const Array& a);

// Element types: float, __half, __nv_bfloat16 compute through float.
template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Elements i .. i+7 of a row (p 16-byte aligned) as exact floats: two float4 loads for f32, one 16-byte
// load for bf16/f16 (bf16 widens by a shift, f16 by the exact half2 -> float2 conversion).
__device__ __forceinline__ void load_x8(const float* p, float (&v)[8]) {
  const float4* xp = reinterpret_cast<const float4*>(p);
  const float4 u0 = __ldg(xp), u1 = __ldg(xp + 1);
  v[0] = u0.x, v[1] = u0.y, v[2] = u0.z, v[3] = u0.w;
  v[4] = u1.x, v[5] = u1.y, v[6] = u1.z, v[7] = u1.w;
}

__device__ __forceinline__ void load_x8(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // element 2i is the low half of word i
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  }
}

__device__ __forceinline__ void load_x8(const __half* p, float (&v)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &w[i], 4);
    const float2 f = __half22float2(h);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

// Calls f(T{}) with T the CUDA type of a floating dtype (f32, f16, bf16); throws for others.
template <typename F>
void dispatch_float(Dtype dt, const char* op, F&& f) {
  switch (dt) {
    case Dtype::f32: f(float{}); return;
    case Dtype::f16: f(__half{}); return;
    case Dtype::bf16: f(__nv_bfloat16{}); return;
    default:
      throw NotSupportedError(format_error(op, std::string("CUDA kernel has no ") + std::string(name(dt)) + " variant"));
  }
}

// Calls f(T{}) with T the storage type of any compute dtype (bool as uint8_t, f16/bf16 as CUDA types).
template <typename F>
void dispatch_all(Dtype dt, const char* op, F&& f) {
  switch (dt) {
    case Dtype::bool_: f(uint8_t{}); return;
    case Dtype::u8: f(uint8_t{}); return;
    case Dtype::i8: f(int8_t{}); return;
    case Dtype::i16: f(int16_t{}); return;
    case Dtype::u16: f(uint16_t{}); return;
    case Dtype::i32: f(int32_t{}); return;
    case Dtype::u32: f(uint32_t{}); return;
    case Dtype::i64: f(int64_t{}); return;
    case Dtype::u64: f(uint64_t{}); return;
    default: dispatch_float(dt, op, f);
  }
}

// Calls f(B{}) with B the unsigned integer of `itemsize` bytes (1, 2, 4, else 8): the element type
// of kernels that only move element bits.
template <typename F>
void dispatch_bits(size_t itemsize, F&& f) {
  switch (itemsize) {
    case 1: f(uint8_t{}); return;
    case 2: f(uint16_t{}); return;
    case 4: f(uint32_t{}); return;
    default: f(uint64_t{}); return;
  }
}

}  // namespace loom::cuda
