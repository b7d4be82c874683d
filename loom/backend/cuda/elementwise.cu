// CUDA elementwise kernels: unary, binary, where and the fused swiglu. CPU twin:
// loom/backend/cpu/elementwise.cpp. As there, floating operands (or a floating output) compute in
// f32 and round once to the output dtype; integer/bool operands compute in int64. Op choice is a
// runtime switch inside each kernel, so there is one kernel per element type, not per (op, type):
//  - a "same" kernel per common element type (inputs and output share it; comparisons write bool),
//    with a 16-byte vectorized variant when everything is contiguous (or a broadcast scalar),
//  - an "any" kernel that loads and stores every dtype through a runtime switch, for mixed dtypes.
// Every kernel indexes its operands through StridedView (FastView of elementwise.cuh), so broadcast (zero)
// strides and non-contiguous views need no copies.
#include <cstdint>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

constexpr int kThreads = 256;

// ---- the ops ---------------------------------------------------------------------------------------

__device__ __forceinline__ float unary_f(UnaryOp op, float v) {
  switch (op) {
    case UnaryOp::negative: return -v;
    case UnaryOp::abs: return v < 0 ? -v : v;  // as the CPU: -0.0 stays -0.0
    case UnaryOp::square: return v * v;
    case UnaryOp::logical_not: return v == 0 ? 1.0f : 0.0f;
    case UnaryOp::sign: return static_cast<float>((v > 0) - (v < 0));  // NaN -> 0
    case UnaryOp::exp: return expf(v);
    case UnaryOp::log: return logf(v);
    case UnaryOp::log1p: return log1pf(v);
    case UnaryOp::sqrt: return sqrtf(v);
    case UnaryOp::rsqrt: return 1.0f / sqrtf(v);  // not rsqrtf: the CPU divides by a rounded sqrt
    case UnaryOp::sin: return sinf(v);
    case UnaryOp::cos: return cosf(v);
    case UnaryOp::tanh: return tanhf(v);
    case UnaryOp::sigmoid: return 1.0f / (1.0f + expf(-v));
    case UnaryOp::erf: return erff(v);
    case UnaryOp::silu: return v / (1.0f + expf(-v));
    case UnaryOp::gelu: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case UnaryOp::gelu_approx: return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case UnaryOp::relu: return v > 0 ? v : 0.0f;  // NaN -> 0, as the CPU
    case UnaryOp::softplus: return v > 20 ? v : log1pf(expf(v));
    case UnaryOp::floor: return floorf(v);
    case UnaryOp::ceil: return ceilf(v);
    case UnaryOp::round: return rintf(v);  // half to even, as std::nearbyint in the default mode
    case UnaryOp::reciprocal: return 1.0f / v;
  }
  return v;
}

// Integer unary ops in int64 with two's complement wrap. The ops layer only sends negative, abs,
// square, sign and logical_not here; any other op goes through float and back, as on the CPU.
__device__ __forceinline__ int64_t unary_i(UnaryOp op, int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  switch (op) {
    case UnaryOp::negative: return static_cast<int64_t>(0 - u);
    case UnaryOp::abs: return v < 0 ? static_cast<int64_t>(0 - u) : v;
    case UnaryOp::square: return static_cast<int64_t>(u * u);
    case UnaryOp::logical_not: return v == 0;
    case UnaryOp::sign: return (v > 0) - (v < 0);
    default: return f2i_x86(unary_f(op, static_cast<float>(v)));
  }
}

// pow as the CPU computes it (in double, rounded once to float). Not inlined: one copy serves
// every kernel of this file.
__device__ __noinline__ float pow_f(float a, float b) {
  return static_cast<float>(pow(static_cast<double>(a), static_cast<double>(b)));
}

// The CPU's integer power is static_cast<int64_t>(std::pow(double(a), double(b))). glibc's pow is
// exact whenever the result is an integer of at most 53 bits, so those are computed exactly here
// (CUDA's pow is not guaranteed to be); larger results fall back to double pow.
__device__ __noinline__ int64_t pow_i(int64_t a, int64_t b) {
  if (a == 1) return 1;
  if (a == -1) return (b & 1) ? -1 : 1;
  if (a == 0) return b == 0 ? 1 : b > 0 ? 0 : INT64_MIN;  // 0^-k = inf -> INT64_MIN on x86
  if (b < 0) return 0;                                    // |a| >= 2: |a^b| < 1 truncates to 0
  constexpr int64_t kExact = int64_t{1} << 53;
  int64_t r = 1;
  for (int64_t k = 0; k < b; ++k) {
    r *= a;  // |a| >= 2, so at most 54 steps before the magnitude passes 2^53
    if (r > kExact || r < -kExact) return f2i_x86(pow(static_cast<double>(a), static_cast<double>(b)));
  }
  return r;
}

// The binary ops whose logic is the same in both compute types V (float and int64): maximum,
// minimum (for float the CPU's NaN behaviour: NaN only when b is NaN), comparisons and logical ops
// (1 or 0 in V). 0 for the arithmetic ops, which binary_f and binary_i handle before calling this.
template <typename V>
__device__ __forceinline__ V binary_select_compare(BinaryOp op, V a, V b) {
  switch (op) {
    case BinaryOp::maximum: return a > b ? a : b;
    case BinaryOp::minimum: return a < b ? a : b;
    case BinaryOp::equal: return a == b;
    case BinaryOp::not_equal: return a != b;
    case BinaryOp::less: return a < b;
    case BinaryOp::less_equal: return a <= b;
    case BinaryOp::greater: return a > b;
    case BinaryOp::greater_equal: return a >= b;
    case BinaryOp::logical_and: return (a != 0) && (b != 0);
    case BinaryOp::logical_or: return (a != 0) || (b != 0);
    default: return 0;
  }
}

__device__ __forceinline__ float binary_f(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::subtract: return a - b;
    case BinaryOp::multiply: return a * b;
    case BinaryOp::divide: return a / b;
    case BinaryOp::power: return pow_f(a, b);
    default: return binary_select_compare(op, a, b);
  }
}

// Integer binary ops in int64: wrapping arithmetic, x / 0 = 0 (the CPU's rule), C++ truncating
// division (INT64_MIN / -1 wraps instead of trapping as it would on the CPU).
__device__ __forceinline__ int64_t binary_i(BinaryOp op, int64_t a, int64_t b) {
  uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
  switch (op) {
    case BinaryOp::add: return static_cast<int64_t>(ua + ub);
    case BinaryOp::subtract: return static_cast<int64_t>(ua - ub);
    case BinaryOp::multiply: return static_cast<int64_t>(ua * ub);
    case BinaryOp::divide: return b == 0 ? 0 : b == -1 ? static_cast<int64_t>(0 - ua) : a / b;
    case BinaryOp::power: return pow_i(a, b);
    default: return binary_select_compare(op, a, b);
  }
}

// ---- typed element access for the "same" kernels ---------------------------------------------------

template <typename T>
constexpr bool kFloatType = std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// T's value in its compute type (float or int64) and back; O = uint8_t is a bool output.
template <typename T>
__device__ __forceinline__ auto compute_load(T v) {
  if constexpr (kFloatType<T>) return to_f(v);
  else return static_cast<int64_t>(v);
}
template <typename O, typename C>
__device__ __forceinline__ O compute_store(C v) {
  if constexpr (std::is_same_v<O, uint8_t>) return static_cast<uint8_t>(v != 0);  // bool
  else if constexpr (kFloatType<O>) return from_f<O>(v);
  else return static_cast<O>(v);
}

template <typename T, typename O>
__device__ __forceinline__ O binary_elem(BinaryOp op, T a, T b) {
  if constexpr (kFloatType<T>) return compute_store<O>(binary_f(op, to_f(a), to_f(b)));
  else return compute_store<O>(binary_i(op, compute_load(a), compute_load(b)));
}

bool is_contiguous_view(const FastView& f) { return f.v.ndim == 0 || (f.v.ndim == 1 && f.v.strides[0] == 1); }
bool is_scalar_view(const FastView& f) { return f.v.ndim == 0 || (f.v.ndim == 1 && f.v.strides[0] == 0); }

// ---- unary ----------------------------------------------------------------------------------------

template <typename T, int R>
__global__ void unary_same_kernel(UnaryOp op, const T* __restrict__ in, FastView iv, T* __restrict__ out,
                                  FastView ov, int64_t n) {
  int64_t is = inner_stride(iv), os = inner_stride(ov);
  LOOM_RUNS(i0, R, n) {
    int64_t x0 = at(iv, i0), o0 = at(ov, i0);
#pragma unroll
    for (int k = 0; k < R; ++k) out[o0 + k * os] = from_f<T>(unary_f(op, to_f(in[x0 + k * is])));
  }
}

template <typename T>
__global__ void unary_vec_kernel(UnaryOp op, const T* __restrict__ in, T* __restrict__ out, int64_t n) {
  constexpr int kN = Pack<T>::kN;
  int64_t packs = n / kN;
  LOOM_GRID_STRIDE(p, packs) {
    Pack<T> x = reinterpret_cast<const Pack<T>*>(in)[p];
#pragma unroll
    for (int k = 0; k < kN; ++k) x.v[k] = from_f<T>(unary_f(op, to_f(x.v[k])));
    reinterpret_cast<Pack<T>*>(out)[p] = x;
  }
  int64_t i = packs * kN + blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) out[i] = from_f<T>(unary_f(op, to_f(in[i])));
}

__global__ void unary_any_kernel(UnaryOp op, const void* __restrict__ in, Dtype idt, FastView iv,
                                 void* __restrict__ out, Dtype odt, FastView ov, int64_t n, bool in_float) {
  LOOM_GRID_STRIDE(i, n) {
    if (in_float) store_f(out, odt, at(ov, i), unary_f(op, load_f(in, idt, at(iv, i))));
    else store_i(out, odt, at(ov, i), unary_i(op, load_i(in, idt, at(iv, i))));
  }
}

// ---- binary ---------------------------------------------------------------------------------------

template <typename T, typename O, int R>
__global__ void binary_same_kernel(BinaryOp op, const T* __restrict__ a, FastView av, const T* __restrict__ b,
                                   FastView bv, O* __restrict__ out, FastView ov, int64_t n) {
  int64_t as = inner_stride(av), bs = inner_stride(bv), os = inner_stride(ov);
  LOOM_RUNS(i0, R, n) {
    int64_t a0 = at(av, i0), b0 = at(bv, i0), o0 = at(ov, i0);
#pragma unroll
    for (int k = 0; k < R; ++k) out[o0 + k * os] = binary_elem<T, O>(op, a[a0 + k * as], b[b0 + k * bs]);
  }
}

// a and b each contiguous or a broadcast scalar (a_scalar/b_scalar), out contiguous, all 16-byte
// aligned. O is T or uint8_t; a pack covers Pack<T>::kN elements of every operand.
template <typename T, typename O>
__global__ void binary_vec_kernel(BinaryOp op, const T* __restrict__ a, bool a_scalar, const T* __restrict__ b,
                                  bool b_scalar, O* __restrict__ out, int64_t n) {
  constexpr int kN = Pack<T>::kN;
  struct alignas(kN * sizeof(O)) OutPack {
    O v[kN];
  };
  int64_t packs = n / kN;
  T sa = a[0], sb = b[0];
  LOOM_GRID_STRIDE(p, packs) {
    Pack<T> x, y;
    if (a_scalar) {
#pragma unroll
      for (int k = 0; k < kN; ++k) x.v[k] = sa;
    } else {
      x = reinterpret_cast<const Pack<T>*>(a)[p];
    }
    if (b_scalar) {
#pragma unroll
      for (int k = 0; k < kN; ++k) y.v[k] = sb;
    } else {
      y = reinterpret_cast<const Pack<T>*>(b)[p];
    }
    OutPack o;
#pragma unroll
    for (int k = 0; k < kN; ++k) o.v[k] = binary_elem<T, O>(op, x.v[k], y.v[k]);
    reinterpret_cast<OutPack*>(out)[p] = o;
  }
  int64_t i = packs * kN + blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) out[i] = binary_elem<T, O>(op, a_scalar ? sa : a[i], b_scalar ? sb : b[i]);
}

__global__ void binary_any_kernel(BinaryOp op, const void* __restrict__ a, Dtype adt, FastView av,
                                  const void* __restrict__ b, Dtype bdt, FastView bv, void* __restrict__ out,
                                  Dtype odt, FastView ov, int64_t n, bool in_float) {
  LOOM_GRID_STRIDE(i, n) {
    if (in_float) {
      store_f(out, odt, at(ov, i), binary_f(op, load_f(a, adt, at(av, i)), load_f(b, bdt, at(bv, i))));
    } else {
      store_i(out, odt, at(ov, i), binary_i(op, load_i(a, adt, at(av, i)), load_i(b, bdt, at(bv, i))));
    }
  }
}

// ---- where -------------------------------------------------------------------------------------

// cond of a 1-byte integer dtype; a, b, out of one dtype: a plain selection of element bits.
template <typename B, int R>
__global__ void where_bits_kernel(const uint8_t* __restrict__ c, FastView cv, const B* __restrict__ a,
                                  FastView av, const B* __restrict__ b, FastView bv, B* __restrict__ out,
                                  FastView ov, int64_t n) {
  int64_t cs = inner_stride(cv), as = inner_stride(av), bs = inner_stride(bv), os = inner_stride(ov);
  LOOM_RUNS(i0, R, n) {
    int64_t c0 = at(cv, i0), a0 = at(av, i0), b0 = at(bv, i0), o0 = at(ov, i0);
#pragma unroll
    for (int k = 0; k < R; ++k) out[o0 + k * os] = c[c0 + k * cs] ? a[a0 + k * as] : b[b0 + k * bs];
  }
}

// cond is read as int64 (so a float cond of 0.5 truncates to 0 = false, as on the CPU).
__global__ void where_any_kernel(const void* __restrict__ c, Dtype cdt, FastView cv, const void* __restrict__ a,
                                 Dtype adt, FastView av, const void* __restrict__ b, Dtype bdt, FastView bv,
                                 void* __restrict__ out, Dtype odt, FastView ov, int64_t n, bool out_float) {
  LOOM_GRID_STRIDE(i, n) {
    bool take_a = load_i(c, cdt, at(cv, i)) != 0;
    if (out_float) store_f(out, odt, at(ov, i), take_a ? load_f(a, adt, at(av, i)) : load_f(b, bdt, at(bv, i)));
    else store_i(out, odt, at(ov, i), take_a ? load_i(a, adt, at(av, i)) : load_i(b, bdt, at(bv, i)));
  }
}

// ---- swiglu ---------------------------------------------------------------------------------------

template <typename T>
__global__ void swiglu_vec_kernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ out, int64_t n) {
  constexpr int kN = Pack<T>::kN;
  int64_t packs = n / kN;
  LOOM_GRID_STRIDE(p, packs) {
    Pack<T> x = reinterpret_cast<const Pack<T>*>(g)[p], y = reinterpret_cast<const Pack<T>*>(u)[p];
#pragma unroll
    for (int k = 0; k < kN; ++k) x.v[k] = from_f<T>(swiglu_f(to_f(x.v[k]), to_f(y.v[k])));
    reinterpret_cast<Pack<T>*>(out)[p] = x;
  }
  int64_t i = packs * kN + blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) out[i] = from_f<T>(swiglu_f(to_f(g[i]), to_f(u[i])));
}

__global__ void swiglu_any_kernel(const void* __restrict__ g, Dtype gdt, const void* __restrict__ u, Dtype udt,
                                  void* __restrict__ out, Dtype odt, int64_t n) {
  LOOM_GRID_STRIDE(i, n) store_f(out, odt, i, swiglu_f(load_f(g, gdt, i), load_f(u, udt, i)));
}

// ---- host side -------------------------------------------------------------------------------------

// Calls f(T{}) for the element types with "same" kernels; false for the rest (bool excluded: its
// arithmetic must be stored as != 0, which the any-kernels do).
template <typename F>
bool dispatch_same(Dtype dt, F&& f) {
  switch (dt) {
    case Dtype::f32: f(float{}); return true;
    case Dtype::f16: f(__half{}); return true;
    case Dtype::bf16: f(__nv_bfloat16{}); return true;
    case Dtype::i32: f(int32_t{}); return true;
    case Dtype::i64: f(int64_t{}); return true;
    default: return false;
  }
}

// Grid of a vectorized kernel: one thread per pack, and at least enough threads for the tail.
unsigned vec_grid(int64_t n, int pack) {
  int64_t threads = n / pack;
  if (threads < pack) threads = pack;
  return grid_for(threads, kThreads);
}

}  // namespace

void unary(UnaryOp op, const Array& in, Array& out) {
  int64_t n = out.size();
  if (n == 0) return;
  refuse_f8_output(out.dtype(), "unary");
  cudaStream_t stream = stream_of(out);
  FastView iv = fast_view(in), ov = fast_view(out);
  bool same = in.dtype() == out.dtype() && is_model_float(in.dtype());
  if (same) {
    dispatch_float(in.dtype(), "unary", [&](auto t) {
      using T = decltype(t);
      const T* ip = static_cast<const T*>(in.raw_data());
      T* op_ = static_cast<T*>(out.raw_data());
      if (is_contiguous_view(iv) && is_contiguous_view(ov) && aligned16(ip) && aligned16(op_)) {
        unary_vec_kernel<T><<<vec_grid(n, Pack<T>::kN), kThreads, 0, stream>>>(op, ip, op_, n);
      } else {
        if (runs_fit(n, {&iv, &ov}))
          unary_same_kernel<T, kRun><<<grid_for(n / kRun, kThreads), kThreads, 0, stream>>>(op, ip, iv, op_, ov, n);
        else
          unary_same_kernel<T, 1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(op, ip, iv, op_, ov, n);
      }
    });
  } else {
    bool in_float = is_floating(in.dtype()) || is_floating(out.dtype());
    unary_any_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(op, in.raw_data(), in.dtype(), iv, out.raw_data(),
                                                                     out.dtype(), ov, n, in_float);
  }
  check_launch("unary");
}

void binary(BinaryOp op, const Array& a, const Array& b, Array& out) {
  int64_t n = out.size();
  if (n == 0) return;
  refuse_f8_output(out.dtype(), "binary");
  cudaStream_t stream = stream_of(out);
  FastView av = fast_view(a), bv = fast_view(b), ov = fast_view(out);
  bool launched = false;
  if (a.dtype() == b.dtype() && (out.dtype() == a.dtype() || out.dtype() == Dtype::bool_)) {
    bool to_bool = out.dtype() != a.dtype();
    launched = dispatch_same(a.dtype(), [&](auto t) {
      using T = decltype(t);
      auto launch = [&](auto o) {
        using O = decltype(o);
        const T* ap = static_cast<const T*>(a.raw_data());
        const T* bp = static_cast<const T*>(b.raw_data());
        O* outp = static_cast<O*>(out.raw_data());
        bool a_sc = is_scalar_view(av), b_sc = is_scalar_view(bv);
        bool vec = (a_sc || (is_contiguous_view(av) && aligned16(ap))) &&
                   (b_sc || (is_contiguous_view(bv) && aligned16(bp))) && is_contiguous_view(ov) && aligned16(outp);
        if (vec) {
          binary_vec_kernel<T, O><<<vec_grid(n, Pack<T>::kN), kThreads, 0, stream>>>(op, ap, a_sc, bp, b_sc, outp, n);
        } else {
          if (runs_fit(n, {&av, &bv, &ov}))
            binary_same_kernel<T, O, kRun>
                <<<grid_for(n / kRun, kThreads), kThreads, 0, stream>>>(op, ap, av, bp, bv, outp, ov, n);
          else
            binary_same_kernel<T, O, 1>
                <<<grid_for(n, kThreads), kThreads, 0, stream>>>(op, ap, av, bp, bv, outp, ov, n);
        }
      };
      if (to_bool) launch(uint8_t{});
      else launch(T{});
    });
  }
  if (!launched) {
    bool in_float = is_floating(a.dtype()) || is_floating(b.dtype()) || is_floating(out.dtype());
    binary_any_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(op, a.raw_data(), a.dtype(), av, b.raw_data(),
                                                                      b.dtype(), bv, out.raw_data(), out.dtype(), ov, n,
                                                                      in_float);
  }
  check_launch("binary");
}

void where(const Array& cond, const Array& a, const Array& b, Array& out) {
  int64_t n = out.size();
  if (n == 0) return;
  refuse_f8_output(out.dtype(), "where");
  cudaStream_t stream = stream_of(out);
  FastView cv = fast_view(cond), av = fast_view(a), bv = fast_view(b), ov = fast_view(out);
  bool byte_cond = cond.dtype() == Dtype::bool_ || cond.dtype() == Dtype::u8 || cond.dtype() == Dtype::i8;
  if (byte_cond && a.dtype() == out.dtype() && b.dtype() == out.dtype()) {
    // Selecting bits equals the CPU's load-convert-store round trip for every same-dtype case.
    const auto* c = static_cast<const uint8_t*>(cond.raw_data());
    bool runs = runs_fit(n, {&cv, &av, &bv, &ov});
    auto launch = [&](auto bits) {
      using B = decltype(bits);
      const B* ap = static_cast<const B*>(a.raw_data());
      const B* bp = static_cast<const B*>(b.raw_data());
      B* outp = static_cast<B*>(out.raw_data());
      if (runs)
        where_bits_kernel<B, kRun>
            <<<grid_for(n / kRun, kThreads), kThreads, 0, stream>>>(c, cv, ap, av, bp, bv, outp, ov, n);
      else
        where_bits_kernel<B, 1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(c, cv, ap, av, bp, bv, outp, ov, n);
    };
    dispatch_bits(out.itemsize(), launch);
  } else {
    where_any_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        cond.raw_data(), cond.dtype(), cv, a.raw_data(), a.dtype(), av, b.raw_data(), b.dtype(), bv, out.raw_data(),
        out.dtype(), ov, n, is_floating(out.dtype()));
  }
  check_launch("where");
}

void swiglu(const Array& gate, const Array& up, Array& out) {
  // gate, up and out are contiguous with one shape (the ops layer makes them so), as on the CPU.
  int64_t n = out.size();
  if (n == 0) return;
  refuse_f8_output(out.dtype(), "swiglu");
  cudaStream_t stream = stream_of(out);
  bool same = gate.dtype() == out.dtype() && up.dtype() == out.dtype() && is_model_float(out.dtype()) &&
              aligned16(gate.raw_data()) && aligned16(up.raw_data()) && aligned16(out.raw_data());
  if (same) {
    dispatch_float(out.dtype(), "swiglu", [&](auto t) {
      using T = decltype(t);
      swiglu_vec_kernel<T><<<vec_grid(n, Pack<T>::kN), kThreads, 0, stream>>>(
          static_cast<const T*>(gate.raw_data()), static_cast<const T*>(up.raw_data()), static_cast<T*>(out.raw_data()),
          n);
    });
  } else {
    swiglu_any_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(gate.raw_data(), gate.dtype(), up.raw_data(),
                                                                      up.dtype(), out.raw_data(), out.dtype(), n);
  }
  check_launch("swiglu");
}

}  // namespace loom::cuda
