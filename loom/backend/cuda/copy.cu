// CUDA copies with dtype conversion between strided layouts (copy, copy_into), fill and arange.
// CPU twin: loom/backend/cpu/copy.cpp, whose element conversions are loom::convert_span
// (loom/core/convert.cpp); the device helpers below mirror that function element by element.
#include <cstring>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

constexpr int kThreads = 256;

// ---- element conversion: convert_span for one element ------------------------------------------
// convert_span converts through double (bool/int/float -> double -> dst) except for identical
// dtypes (memcpy). The one deliberate difference: integer -> integer conversions go through int64
// here, which is exact, where the CPU's double detour rounds magnitudes above 2^53.

__host__ __device__ constexpr bool integral_dtype(Dtype dt) {
  return static_cast<int>(dt) <= static_cast<int>(Dtype::u64);
}

__device__ __forceinline__ float f8e4m3_to_f(uint8_t v) {
  uint32_t exp = (v >> 3) & 0xf, man = v & 0x7;
  if (exp == 0xf && man == 0x7) return __int_as_float(0x7fc00000);
  float r = exp == 0 ? ldexpf(static_cast<float>(man), -9) : ldexpf(1.0f + man / 8.0f, static_cast<int>(exp) - 7);
  return (v >> 7) ? -r : r;
}
__device__ __forceinline__ float f8e5m2_to_f(uint8_t v) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(v << 8)));
}

__device__ double load_d(const void* p, Dtype dt, int64_t i) {
  switch (dt) {
    case Dtype::bool_: return static_cast<const uint8_t*>(p)[i] ? 1.0 : 0.0;
    case Dtype::u8: return static_cast<const uint8_t*>(p)[i];
    case Dtype::i8: return static_cast<const int8_t*>(p)[i];
    case Dtype::i16: return static_cast<const int16_t*>(p)[i];
    case Dtype::u16: return static_cast<const uint16_t*>(p)[i];
    case Dtype::i32: return static_cast<const int32_t*>(p)[i];
    case Dtype::u32: return static_cast<const uint32_t*>(p)[i];
    case Dtype::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case Dtype::u64: return static_cast<double>(static_cast<const uint64_t*>(p)[i]);
    case Dtype::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case Dtype::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case Dtype::f32: return static_cast<const float*>(p)[i];
    case Dtype::f64: return static_cast<const double*>(p)[i];
    case Dtype::f8_e4m3: return f8e4m3_to_f(static_cast<const uint8_t*>(p)[i]);
    case Dtype::f8_e5m2: return f8e5m2_to_f(static_cast<const uint8_t*>(p)[i]);
  }
  return 0;
}

// Float -> integer as convert_span casts: truncation toward zero through int64, NaN -> 0. Values
// outside int64 (infinities included) are UB in C++; x86's cvttsd2si gives INT64_MIN, so we do too.
__device__ __forceinline__ int64_t f2i(double v) {
  if (v != v) return 0;
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return INT64_MIN;
  return static_cast<int64_t>(v);
}

// Integers exactly (u64 reinterpreted as two's complement), bool as 0/1, floats by f2i.
__device__ int64_t load_i(const void* p, Dtype dt, int64_t i) {
  switch (dt) {
    case Dtype::bool_: return static_cast<const uint8_t*>(p)[i] ? 1 : 0;
    case Dtype::u8: return static_cast<const uint8_t*>(p)[i];
    case Dtype::i8: return static_cast<const int8_t*>(p)[i];
    case Dtype::i16: return static_cast<const int16_t*>(p)[i];
    case Dtype::u16: return static_cast<const uint16_t*>(p)[i];
    case Dtype::i32: return static_cast<const int32_t*>(p)[i];
    case Dtype::u32: return static_cast<const uint32_t*>(p)[i];
    case Dtype::i64: return static_cast<const int64_t*>(p)[i];
    case Dtype::u64: return static_cast<int64_t>(static_cast<const uint64_t*>(p)[i]);
    default: return f2i(load_d(p, dt, i));
  }
}

// Stores an integer: wraps to narrower integers (as the CPU's int64 -> T cast), != 0 for bool.
__device__ void store_i(void* p, Dtype dt, int64_t i, int64_t v) {
  switch (dt) {
    case Dtype::bool_: static_cast<uint8_t*>(p)[i] = v != 0; return;
    case Dtype::u8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); return;
    case Dtype::i8: static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); return;
    case Dtype::i16: static_cast<int16_t*>(p)[i] = static_cast<int16_t>(v); return;
    case Dtype::u16: static_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v); return;
    case Dtype::i32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); return;
    case Dtype::u32: static_cast<uint32_t*>(p)[i] = static_cast<uint32_t>(v); return;
    case Dtype::i64: static_cast<int64_t*>(p)[i] = v; return;
    case Dtype::u64: static_cast<uint64_t*>(p)[i] = static_cast<uint64_t>(v); return;
    default: return;  // callers only pass integer dtypes
  }
}

// convert_span's store_double: floats round once from double to float first (then to f16/bf16, as
// the CPU does), integers by f2i, bool as != 0 (NaN is true). f8 outputs are refused on the host.
__device__ void store_d(void* p, Dtype dt, int64_t i, double v) {
  switch (dt) {
    case Dtype::bool_: static_cast<uint8_t*>(p)[i] = v != 0; return;
    case Dtype::f16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); return;
    case Dtype::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); return;
    case Dtype::f32: static_cast<float*>(p)[i] = static_cast<float>(v); return;
    case Dtype::f64: static_cast<double*>(p)[i] = v; return;
    case Dtype::f8_e4m3: case Dtype::f8_e5m2: return;
    default: store_i(p, dt, i, f2i(v));
  }
}

// ---- strided indexing -----------------------------------------------------------------------------

// An operand's StridedView (from view_of) with precomputed divisors. Indexing divides the linear
// index by every extent, and integer division is slow on the GPU (a 64-bit one costs ~70
// instructions), so when extents and indices fit 31 bits it multiplies-high and shifts instead.
struct FastView {
  StridedView v;
  uint32_t magic[kMaxDims];
  uint32_t shift[kMaxDims];
  bool small;  // every extent and linear index < 2^31: the magic path applies
};

FastView fast_view(const Array& a) {
  FastView f{view_of(a), {}, {}, a.size() < (int64_t{1} << 31)};
  for (int d = 0; d < f.v.ndim && f.small; ++d) {
    // q = (umulhi(x, magic) + x) >> shift equals x / n for x, n < 2^31 (Granlund-Montgomery).
    uint64_t n = static_cast<uint64_t>(f.v.shape[d]);
    uint32_t s = 0;
    while ((uint64_t{1} << s) < n) ++s;
    f.shift[d] = s;
    f.magic[d] = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << s) - n)) / n + 1);
  }
  return f;
}

// Element offset of linear (row-major) index i: StridedView::offset, with shortcuts for 0-d and
// 1-d views (a contiguous operand is 1-d with stride 1, a broadcast scalar 1-d with stride 0), and
// no division for the outermost dim.
__device__ __forceinline__ int64_t at(const FastView& f, int64_t i) {
  const StridedView& v = f.v;
  if (v.ndim == 1) return i * v.strides[0];
  if (v.ndim == 0) return 0;
  int64_t off = 0;
  if (f.small) {
    uint32_t x = static_cast<uint32_t>(i);
    for (int d = v.ndim - 1; d > 0; --d) {
      uint32_t q = (__umulhi(x, f.magic[d]) + x) >> f.shift[d];
      off += static_cast<int64_t>(x - q * static_cast<uint32_t>(v.shape[d])) * v.strides[d];
      x = q;
    }
    return off + static_cast<int64_t>(x) * v.strides[0];
  }
  for (int d = v.ndim - 1; d > 0; --d) {
    int64_t q = i / v.shape[d];
    off += (i - q * v.shape[d]) * v.strides[d];
    i = q;
  }
  return off + i * v.strides[0];
}

// ---- kernels ---------------------------------------------------------------------------------------

// Threads of the strided kernels take runs of kRun consecutive linear indices when a run never
// leaves the innermost dim of any operand: offsets are then computed once per run and advance by
// each operand's innermost stride. Runs fit when kRun divides n and every innermost extent.
constexpr int kRun = 4;
bool runs_fit(int64_t n, std::initializer_list<const FastView*> views) {
  if (n % kRun != 0) return false;
  for (const FastView* f : views)
    if (f->v.ndim > 1 && f->v.shape[f->v.ndim - 1] % kRun != 0) return false;
  return true;
}
__device__ __forceinline__ int64_t inner_stride(const FastView& f) { return f.v.ndim ? f.v.strides[f.v.ndim - 1] : 0; }

// Same dtype, any layout on either side: moves raw element bits (B = element-sized integer), R
// consecutive elements per thread (R = kRun where runs fit, else 1).
template <typename B, int R>
__global__ void copy_bits_kernel(const B* __restrict__ in, FastView iv, B* __restrict__ out, FastView ov, int64_t n) {
  int64_t is = inner_stride(iv), os = inner_stride(ov);
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r < n / R; r += int64_t{gridDim.x} * blockDim.x) {
    int64_t i0 = at(iv, r * R), o0 = at(ov, r * R);
#pragma unroll
    for (int k = 0; k < R; ++k) out[o0 + k * os] = in[i0 + k * is];
  }
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
    for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < packs; p += int64_t{gridDim.x} * blockDim.x) {
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

// Any dtype pair, any layout: the runtime-switch conversion above, one element per thread.
__global__ void convert_any_kernel(const void* __restrict__ in, Dtype idt, FastView iv, void* __restrict__ out,
                                   Dtype odt, FastView ov, int64_t n) {
  bool ints = integral_dtype(idt) && integral_dtype(odt);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
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
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_d(out, dt, i, fma(step, static_cast<double>(i), start));
}

// ---- host side -------------------------------------------------------------------------------------

bool is_f8(Dtype dt) { return dt == Dtype::f8_e4m3 || dt == Dtype::f8_e5m2; }

void refuse_f8_output(Dtype dt, const char* op) {
  if (is_f8(dt))
    throw NotSupportedError(format_error(op, "conversion to " + std::string(name(dt)) + " is not supported"));
}

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
  bool vec = reinterpret_cast<uintptr_t>(in.raw_data()) % 16 == 0 &&
             reinterpret_cast<uintptr_t>(out.raw_data()) % 16 == 0;
  convert_float_kernel<S, D><<<grid_for(vec ? n / 8 + 1 : n, kThreads), kThreads, 0, stream_of(out)>>>(
      static_cast<const S*>(in.raw_data()), static_cast<D*>(out.raw_data()), n, vec);
  check_launch("copy");
}

// f32/f16/bf16 -> f32/f16/bf16 (different dtypes), both contiguous. False when not such a pair.
bool convert_float_contiguous(const Array& in, Array& out, int64_t n) {
  auto is_model_float = [](Dtype d) { return d == Dtype::f32 || d == Dtype::f16 || d == Dtype::bf16; };
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
    switch (in.itemsize()) {
      case 1: launch_copy_bits<uint8_t>(in, iv, out, ov, n); return;
      case 2: launch_copy_bits<uint16_t>(in, iv, out, ov, n); return;
      case 4: launch_copy_bits<uint32_t>(in, iv, out, ov, n); return;
      default: launch_copy_bits<uint64_t>(in, iv, out, ov, n); return;
    }
  }
  if (in_contig && out_contig && convert_float_contiguous(in, out, n)) return;
  FastView iv = fast_view(in), ov = fast_view(out);
  convert_any_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in.raw_data(), in.dtype(), iv, out.raw_data(),
                                                                     out.dtype(), ov, n);
  check_launch("copy");
}

}  // namespace

void copy(const Array& in, Array& out) { strided_copy(in, out); }
void copy_into(const Array& in, Array& out) { strided_copy(in, out); }

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
