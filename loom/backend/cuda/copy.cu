// CUDA copies with dtype conversion between strided layouts (copy, copy_into), fill and arange.
// CPU twin: loom/backend/cpu/copy.cpp, whose element conversions are loom::convert_span
// (loom/core/convert.cpp); the device helpers of elementwise.cuh mirror that function element by element.
#include <cstring>

#include "loom/backend/cuda/act_int8.h"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

constexpr int kThreads = 256;

// ---- kernels ---------------------------------------------------------------------------------------

// Same dtype, any layout on either side: moves raw element bits (B = element-sized integer), R
// consecutive elements per thread (R = kRun where runs fit, else 1).
template <typename B, int R>
__global__ void copy_bits_kernel(const B* __restrict__ in, FastView iv, B* __restrict__ out, FastView ov, int64_t n) {
  int64_t is = inner_stride(iv), os = inner_stride(ov);
  LOOM_RUNS(r0, R, n) {
    int64_t i0 = at(iv, r0), o0 = at(ov, r0);
#pragma unroll
    for (int k = 0; k < R; ++k) out[o0 + k * os] = in[i0 + k * is];
  }
}

// copy_bits_kernel with the output shifted by (index[0] - base) * stride elements, the shift read on
// the device (see copy_into_at in kernel_api.inc); one element per thread, grid-stride.
template <typename B>
__global__ void copy_bits_at_kernel(const B* __restrict__ in, FastView iv, B* __restrict__ out, FastView ov, int64_t n,
                                    const int32_t* __restrict__ index, int64_t base, int64_t stride, int64_t max_p) {
  pdl_wait();
  pdl_trigger();
  const int64_t p = static_cast<int64_t>(*index) - base;
  if (p < 0 || p > max_p) return;
  out += p * stride;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[at(ov, i)] = in[at(iv, i)];
}

// The float conversions models use (f32/f16/bf16 pairs), contiguous on both sides: one rounding
// from float, which equals convert_span's route through double for these types. Eight elements
// per thread with vector loads and stores when both pointers are 16-byte aligned.
template <typename T>
struct alignas(8 * sizeof(T)) Pack8 {
  T v[8];
};
template <typename S, typename D>
__global__ void convert_float_kernel(const S* __restrict__ in, D* __restrict__ out, int64_t n, bool vec) {
  int64_t start = 0;
  if (vec) {
    int64_t packs = n / 8;
    LOOM_GRID_STRIDE(p, packs) {
      Pack8<S> x = reinterpret_cast<const Pack8<S>*>(in)[p];
      Pack8<D> y;
#pragma unroll
      for (int k = 0; k < 8; ++k) y.v[k] = from_f<D>(to_f(x.v[k]));
      reinterpret_cast<Pack8<D>*>(out)[p] = y;
    }
    start = packs * 8;
  }
  for (int64_t i = start + blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_f<D>(to_f(in[i]));
}

// Any dtype pair, any layout: the runtime-switch conversion (load_i/store_i between integers, else
// load_d/store_d), one element per thread.
__global__ void convert_any_kernel(const void* __restrict__ in, Dtype idt, FastView iv, void* __restrict__ out,
                                   Dtype odt, FastView ov, int64_t n) {
  bool ints = integral_dtype(idt) && integral_dtype(odt);
  LOOM_GRID_STRIDE(i, n) {
    int64_t si = at(iv, i), di = at(ov, i);
    if (ints) store_i(out, odt, di, load_i(in, idt, si));
    else store_d(out, odt, di, load_d(in, idt, si));
  }
}

// Fills n elements of B with `bits`: the 16-byte-aligned middle as `units` 16-byte stores of
// `pattern` (the element repeated), the `head` elements before it and the tail one by one.
template <typename B>
__global__ void fill_kernel(B* __restrict__ out, B bits, uint4 pattern, int64_t n, int64_t head, int64_t units) {
  int64_t tid = blockIdx.x * int64_t{blockDim.x} + threadIdx.x, stride = int64_t{gridDim.x} * blockDim.x;
  uint4* mid = reinterpret_cast<uint4*>(out + head);
  for (int64_t i = tid; i < units; i += stride) mid[i] = pattern;
  int64_t tail = head + units * static_cast<int64_t>(16 / sizeof(B));
  for (int64_t i = tid; i < head + (n - tail); i += stride) out[i < head ? i : tail + (i - head)] = bits;
}

__global__ void arange_kernel(void* __restrict__ out, Dtype dt, double start, double step, int64_t n) {
  // The CPU twin is built with FMA (x86-64-v3) and GCC contracts `start + step * i` into one fused
  // multiply-add; fma() here gives the same double.
  LOOM_GRID_STRIDE(i, n) store_d(out, dt, i, fma(step, static_cast<double>(i), start));
}

// ---- host side -------------------------------------------------------------------------------------

template <typename B>
void launch_copy_bits(const Array& in, const FastView& iv, Array& out, const FastView& ov, int64_t n) {
  const auto* src = static_cast<const B*>(in.raw_data());
  auto* dst = static_cast<B*>(out.raw_data());
  cudaStream_t stream = stream_of(out);
  if (runs_fit(n, {&iv, &ov}))
    copy_bits_kernel<B, kRun><<<grid_for(n / kRun, kThreads), kThreads, 0, stream>>>(src, iv, dst, ov, n);
  else
    copy_bits_kernel<B, 1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(src, iv, dst, ov, n);
  check_launch("copy");
}

template <typename S, typename D>
void launch_convert_float(const Array& in, Array& out, int64_t n) {
  bool vec = aligned16(in.raw_data()) && aligned16(out.raw_data());
  convert_float_kernel<S, D><<<grid_for(vec ? n / 8 + 1 : n, kThreads), kThreads, 0, stream_of(out)>>>(
      static_cast<const S*>(in.raw_data()), static_cast<D*>(out.raw_data()), n, vec);
  check_launch("copy");
}

// f32/f16/bf16 -> f32/f16/bf16 (different dtypes), both contiguous. False when not such a pair.
bool convert_float_contiguous(const Array& in, Array& out, int64_t n) {
  if (!is_model_float(in.dtype()) || !is_model_float(out.dtype())) return false;
  dispatch_float(in.dtype(), "copy", [&](auto s) {
    using S = decltype(s);
    dispatch_float(out.dtype(), "copy", [&](auto d) {
      using D = decltype(d);
      if constexpr (!std::is_same_v<S, D>) launch_convert_float<S, D>(in, out, n);
    });
  });
  return true;
}

// The shared body of copy and copy_into: out <- in elementwise over out's shape, any strides.
void strided_copy(const Array& in, Array& out) {
  int64_t n = out.size();
  if (n == 0) return;
  refuse_f8_output(out.dtype(), "copy");
  cudaStream_t stream = stream_of(out);
  bool in_contig = in.is_contiguous(), out_contig = out.is_contiguous();
  if (in.dtype() == out.dtype()) {
    if (in_contig && out_contig) {
      LOOM_CUDA_CHECK(cudaMemcpyAsync(out.raw_data(), in.raw_data(), out.nbytes(), cudaMemcpyDeviceToDevice, stream));
      return;
    }
    FastView iv = fast_view(in), ov = fast_view(out);
    dispatch_bits(in.itemsize(), [&](auto bits) { launch_copy_bits<decltype(bits)>(in, iv, out, ov, n); });
    return;
  }
  if (in_contig && out_contig && convert_float_contiguous(in, out, n)) return;
  FastView iv = fast_view(in), ov = fast_view(out);
  convert_any_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in.raw_data(), in.dtype(), iv, out.raw_data(),
                                                                     out.dtype(), ov, n);
  check_launch("copy");
}

}  // namespace

void copy(const Array& in, Array& out) { strided_copy(in, out); }
void copy_into(const Array& in, Array& out) {
  act_int8::forget(out);
  strided_copy(in, out);
}

void copy_into_at(const Array& in, Array& out, const Array& index, int64_t base, int64_t stride, int64_t max_p) {
  int64_t n = out.size();
  if (n == 0) return;
  act_int8::forget(out);
  FastView iv = fast_view(in), ov = fast_view(out);
  cudaStream_t stream = stream_of(out);
  dispatch_bits(in.itemsize(), [&](auto bits) {
    using B = decltype(bits);
    launch_pdl("copy_into_at", copy_bits_at_kernel<B>, dim3(grid_for(n, kThreads)), dim3(kThreads), 0, stream,
               static_cast<const B*>(in.raw_data()), iv, static_cast<B*>(out.raw_data()), ov, n,
               static_cast<const int32_t*>(index.raw_data()), base, stride, max_p);
  });
  check_launch("copy_into_at");
}

void fill(Array& out, double value) {
  int64_t n = out.size();
  if (n == 0) return;
  // The element's bytes come from the same host conversion the CPU twin uses (Array::scalar), so
  // both backends store identical bits; Array::scalar also refuses f8 outputs as the CPU does.
  Array one = Array::scalar(value, out.dtype());
  size_t isz = out.itemsize();
  uint8_t bytes[8];
  std::memcpy(bytes, one.raw_data(), isz);
  cudaStream_t stream = stream_of(out);
  bool uniform = true;
  for (size_t k = 1; k < isz; ++k) uniform = uniform && bytes[k] == bytes[0];
  if (uniform) {  // zeros, ones of bool/u8, -1 of ints...: a memset
    LOOM_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), bytes[0], out.nbytes(), stream));
    return;
  }
  // Fresh arrays start 256-byte aligned; a view at an odd offset gets a few head elements.
  auto launch = [&](auto zero) {
    using B = decltype(zero);
    B bits;
    std::memcpy(&bits, bytes, sizeof(B));
    uint4 pattern;
    for (size_t k = 0; k < 16; k += sizeof(B)) std::memcpy(reinterpret_cast<uint8_t*>(&pattern) + k, &bits, sizeof(B));
    auto addr = reinterpret_cast<uintptr_t>(out.raw_data());
    int64_t head = addr % 16 == 0 ? 0 : static_cast<int64_t>((16 - addr % 16) / sizeof(B));
    if (addr % sizeof(B) != 0 || head > n) head = n;  // not even element-aligned: no 16-byte stores
    int64_t units = (n - head) / static_cast<int64_t>(16 / sizeof(B));
    fill_kernel<B><<<grid_for(units + 16, kThreads), kThreads, 0, stream>>>(static_cast<B*>(out.raw_data()), bits,
                                                                            pattern, n, head, units);
  };
  switch (isz) {
    case 2: launch(uint16_t{}); break;
    case 4: launch(uint32_t{}); break;
    default: launch(uint64_t{}); break;
  }
  check_launch("fill");
}

void arange(Array& out, double start, double step) {
  int64_t n = out.size();
  if (n == 0) return;
  refuse_f8_output(out.dtype(), "arange");
  arange_kernel<<<grid_for(n, kThreads), kThreads, 0, stream_of(out)>>>(out.raw_data(), out.dtype(), start, step, n);
  check_launch("arange");
}

}  // namespace loom::cuda
