// Element helpers shared by the strided kernels of copy.cu, elementwise.cu and reduce.cu (backend/cuda/*.cu
// only): dtype codes, loads and stores of any dtype through a runtime switch (convert_span of
// loom/core/convert.cpp, one element at a time), FastView indexing and runs of consecutive indices.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

// silu(g) * u in f32: the swiglu kernel's arithmetic (also the decode GEMV's swiglu epilogue, quantized.cu).
__device__ __forceinline__ float swiglu_f(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// ---- dtype codes -----------------------------------------------------------------------------------

// bool and the integers come first in Dtype, the floats after u64.
__host__ __device__ constexpr bool integral_dtype(Dtype dt) {
  return static_cast<int>(dt) <= static_cast<int>(Dtype::u64);
}

// The float dtypes models run in, which get typed (non-switch) kernels.
__host__ __device__ constexpr bool is_model_float(Dtype dt) {
  return dt == Dtype::f32 || dt == Dtype::f16 || dt == Dtype::bf16;
}

// f8 is load-only on both backends: the CPU twins refuse f8 outputs with this same error.
inline void refuse_f8_output(Dtype dt, const char* op) {
  if (dt == Dtype::f8_e4m3 || dt == Dtype::f8_e5m2)
    throw NotSupportedError(format_error(op, "conversion to " + std::string(name(dt)) + " is not supported"));
}

// ---- element conversion: convert_span for one element ----------------------------------------------
// convert_span converts through double (bool/int/float -> double -> dst) except for identical dtypes
// (memcpy). The one deliberate difference: integer results and integer -> integer conversions go
// through int64 here, which is exact, where the CPU's double detour rounds magnitudes above 2^53.

__device__ __forceinline__ float f8e4m3_to_f(uint8_t v) {
  uint32_t exp = (v >> 3) & 0xf, man = v & 0x7;
  if (exp == 0xf && man == 0x7) return __int_as_float(0x7fc00000);
  float r = exp == 0 ? ldexpf(static_cast<float>(man), -9) : ldexpf(1.0f + man / 8.0f, static_cast<int>(exp) - 7);
  return (v >> 7) ? -r : r;
}
__device__ __forceinline__ float f8e5m2_to_f(uint8_t v) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(v << 8)));
}

// A double -> int64 cast as the CPU twins compile it: values outside int64 (infinities and NaN
// included) are UB in C++, and x86's cvttsd2si gives INT64_MIN for them, so we do too.
__device__ __forceinline__ int64_t f2i_x86(double v) {
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return INT64_MIN;
  return static_cast<int64_t>(v);
}
// Float -> integer as convert_span casts: truncation toward zero through int64, NaN -> 0.
__device__ __forceinline__ int64_t f2i(double v) { return v != v ? 0 : f2i_x86(v); }

// Element i of bool or an integer dtype, exactly: bool as 0/1, u64 reinterpreted as two's
// complement. The switch of load_d and load_i below (0 for the float dtypes).
__device__ __forceinline__ int64_t load_integral(const void* p, Dtype dt, int64_t i) {
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
    default: return 0;
  }
}

// Element i as double (convert_span's load_double).
inline __device__ double load_d(const void* p, Dtype dt, int64_t i) {
  switch (dt) {
    case Dtype::u64: return static_cast<double>(static_cast<const uint64_t*>(p)[i]);  // unsigned, not via int64
    case Dtype::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case Dtype::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case Dtype::f32: return static_cast<const float*>(p)[i];
    case Dtype::f64: return static_cast<const double*>(p)[i];
    case Dtype::f8_e4m3: return f8e4m3_to_f(static_cast<const uint8_t*>(p)[i]);
    case Dtype::f8_e5m2: return f8e5m2_to_f(static_cast<const uint8_t*>(p)[i]);
    // The other integers fit 53 bits and i64 converts once, so the int64 detour is exact.
    default: return static_cast<double>(load_integral(p, dt, i));
  }
}

// Element i as float (the CPU's load into a float buffer: integers go through double).
__device__ __forceinline__ float load_f(const void* p, Dtype dt, int64_t i) {
  switch (dt) {
    case Dtype::f32: return static_cast<const float*>(p)[i];
    case Dtype::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case Dtype::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<float>(load_d(p, dt, i));
  }
}

// Element i as int64 (the CPU's load into an int64 buffer): integers exactly, floats by f2i.
inline __device__ int64_t load_i(const void* p, Dtype dt, int64_t i) {
  return integral_dtype(dt) ? load_integral(p, dt, i) : f2i(load_d(p, dt, i));
}

// Stores v into bool or an integer dtype: wraps to narrower integers (as the CPU's int64 -> T
// cast), != 0 for bool. Does nothing for the float dtypes.
__device__ __forceinline__ void store_integral(void* p, Dtype dt, int64_t i, int64_t v) {
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
    default: return;
  }
}

// convert_span's store_double, for a double or a float v (a float is exact as a double, so both
// store the same bits): floats round once to float (then to f16/bf16, as the CPU does), integers
// by f2i, bool as != 0 (NaN is true). f8 outputs are refused on the host (refuse_f8_output).
template <typename V>
__device__ __forceinline__ void store_real(void* p, Dtype dt, int64_t i, V v) {
  switch (dt) {
    case Dtype::bool_: static_cast<uint8_t*>(p)[i] = v != 0; return;
    case Dtype::f16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); return;
    case Dtype::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); return;
    case Dtype::f32: static_cast<float*>(p)[i] = static_cast<float>(v); return;
    case Dtype::f64: static_cast<double*>(p)[i] = v; return;
    case Dtype::f8_e4m3: case Dtype::f8_e5m2: return;
    default: store_integral(p, dt, i, f2i(v)); return;
  }
}
// A double (convert_span's store_double proper), and a float result (the CPU's store from a float
// buffer) without a detour through double.
inline __device__ void store_d(void* p, Dtype dt, int64_t i, double v) { store_real(p, dt, i, v); }
__device__ __forceinline__ void store_f(void* p, Dtype dt, int64_t i, float v) { store_real(p, dt, i, v); }

// Stores an int64 result: integers wrap, bool is != 0, floats round through double as on the CPU.
inline __device__ void store_i(void* p, Dtype dt, int64_t i, int64_t v) {
  if (integral_dtype(dt)) store_integral(p, dt, i, v);
  else store_d(p, dt, i, static_cast<double>(v));
}

// ---- strided indexing ------------------------------------------------------------------------------

// An operand's StridedView (from view_of) with precomputed divisors. Indexing divides the linear
// index by every extent, and integer division is slow on the GPU (a 64-bit one costs ~70
// instructions), so when extents and indices fit 31 bits it multiplies-high and shifts instead.
struct FastView {
  StridedView v;
  uint32_t magic[kMaxDims];
  uint32_t shift[kMaxDims];
  bool small;  // every extent and linear index < 2^31: the magic path applies
};

inline FastView fast_view(const Array& a) {
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

// Grid-stride loop over the linear indices i in [0, n).
#define LOOM_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)

// Threads of the strided kernels take runs of kRun consecutive linear indices when a run never
// leaves the innermost dim of any operand: offsets are then computed once per run and advance by
// each operand's innermost stride. Runs fit when kRun divides n and every innermost extent.
constexpr int kRun = 4;
inline bool runs_fit(int64_t n, std::initializer_list<const FastView*> views) {
  if (n % kRun != 0) return false;
  for (const FastView* f : views)
    if (f->v.ndim > 1 && f->v.shape[f->v.ndim - 1] % kRun != 0) return false;
  return true;
}
__device__ __forceinline__ int64_t inner_stride(const FastView& f) { return f.v.ndim ? f.v.strides[f.v.ndim - 1] : 0; }

// Grid-stride loop over runs of R elements: i0 is the run's first linear index.
#define LOOM_RUNS(i0, R, n)                                                                               \
  for (int64_t run_ = blockIdx.x * int64_t{blockDim.x} + threadIdx.x, i0 = run_ * (R); run_ < (n) / (R); \
       run_ += int64_t{gridDim.x} * blockDim.x, i0 = run_ * (R))

// ---- vector access -----------------------------------------------------------------------------------

// 16 bytes of T, for vectorized loads and stores.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace loom::cuda
