// Quantization kernels on CUDA (CPU twin: backend/cpu/quantized.cpp; formats in loom/core/quant.h).
//  - quantize: one thread per group, mirroring the twin operation by operation (IEEE division and rint,
//    comparisons written as std::min/std::max evaluate them, the twin's own float -> bf16/f16 rounding), so
//    codes, scales and biases are bit-identical. The one approximation: log2 of an mx scale is computed in
//    double and rounded (glibc's log2f is not correctly rounded in every case; a difference needs a scale
//    whose log2 sits within an ulp of a rounding boundary).
//  - dequantize: one thread per output element (coalesced writes), the twin's formula and rounding order:
//    f32 affine = fma(q, scale, bias) as the twin's compiled code evaluates it, half affine = round(round(q *
//    scale) + bias), fp modes = value * scale rounded once.
//  - quantized_matmul: x [M, K] and out [M, N] contiguous in f32, bf16 or f16 (any mix), affine scales and
//    biases in f32, bf16 or f16 (the same dtype), fp-mode scales uint8. Every value is converted exactly to
//    f32 where it is read (weights dequantize as the f32 twin does: fma(q, scale, bias)), accumulation is f32
//    and the result is rounded once at the store (to nearest even, as loom::cuda::copy converts): f32 in/out
//    gives the f32 kernel's bits, half inputs (and outputs) those of converting to (and from) f32 around it.
//  - quantized_matmul with W.T and M <= 8 (decode; affine group sizes >= 32, all MLX allows), and
//    gather_qmm's decode (detail::quantized_gemv: blockIdx.y is a (row block, expert) pair whose indices are
//    read on the device): one warp per R packed rows (R = 2 for one activation row, 8 for up to 4, else
//    4; see qmv_rows). Lanes split K into "packs" of 32 codes (= `bits` words) and the 32 activations a
//    lane loads per pack (L1/L2-resident, 16-byte loads in x's own dtype) serve all R rows. Codes become
//    floats exactly (f16 magic numbers for 4/8-bit and E2M1, two codes per integer op; the 2^23 trick for
//    other widths; E4M3 by bit placement), each half pack's dot product is scaled once, and the affine
//    bias enters as bias * sum(x over the half pack). A shuffle reduction ends each row. The kernel is
//    templated on x's dtype (converted in the inner loop); scales/biases are read in their stored dtype
//    behind one warp-uniform branch per pack, and the output dtype is a switch at the store. Bytes moved
//    ~= N * K * bits / 8 + the scales (and biases) + x from L2. When the row groups leave the
//    multiprocessors short of warps (fewer than 16 per SM), the 4 warps of a block split a row group's
//    packs. Measured on an H100 (bench/kernel_bench_qmv, bf16 x and scales, M = 1): W [14336, 4096]
//    4-bit g64 ~19 us (~1.7 TB/s), 8-bit ~28 us (~2.2 TB/s); W [128256, 4096] 4-bit ~2.2 TB/s, 8-bit
//    ~3.0 TB/s. (Dropped after measuring at model level: a cp.async-pipelined variant with 8 rows per warp,
//    Llama-3.1-8B 4-bit tg 203 vs 251 t/s with this kernel, 8-bit 134 vs 200; a register-streaming variant;
//    and a tensor-core variant that decoded 4-bit codes to bf16 for mma.m16n8k16 with one B column per
//    group, about as fast as the pipelined kernel.) This is the exact tier's decode kernel
//    (QmmPrecision::exact, and the fast tier for formats other than affine 4/8-bit). At 4 bits it is bound
//    by instruction issue (ncu, Llama-3.1-8B gate/up: ~79% of issue slots, ~1.4-1.8 TB/s): every code
//    and activation becomes an f32. The fast tier's kernel below (qgemv_i8_kernel, the default for affine
//    4/8-bit) keeps the same lanes, packs and reduction with int8 activations and dp4a.
//  - quantized_matmul otherwise (prefill, or W without transpose): panels of W dequantized (bounded
//    scratch; 8 values per thread when rows and groups allow, dequantize8_kernel) and multiplied by cuBLAS:
//    with bf16/f16 x and output, panels in x's dtype and a tensor-core GEMM with f32 accumulation;
//    otherwise f32 panels and an f32 GEMM (detail::sgemm_rowmajor in matmul.cu), x that is not f32
//    converted into an f32 temporary first and an output that is not f32 computed in an f32 temporary
//    and converted (loom::cuda::copy).
#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "loom/backend/cuda/act_int8.cuh"
#include "loom/backend/cuda/blas.cuh"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/kernels.h"
#include "loom/backend/product_group.h"
#include "loom/ops/quantized.h"

namespace loom::cuda {

namespace {

// Float dtypes as kernel arguments.
enum FloatCode : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

int float_code(Dtype dt, const char* op) {
  switch (dt) {
    case Dtype::f32:
      return kF32;
    case Dtype::bf16:
      return kBF16;
    case Dtype::f16:
      return kF16;
    default:
      throw NotSupportedError(format_error(op, "the CUDA kernel has no " + std::string(name(dt)) + " variant"));
  }
}

// ---------------------------------------------------------------------------------------------------
// Scalar conversions, bit for bit those of loom/core (dtype.h/.cpp) and quant_codec.

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__device__ __forceinline__ uint16_t f32_to_f16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) {  // half subnormal or zero: scale the unit 2^-24 to 1, round half to even
    const uint32_t r = static_cast<uint32_t>(rintf(__fmul_rn(__uint_as_float(a), 16777216.0f)));
    return static_cast<uint16_t>(sign | r);
  }
  const uint32_t exp = ((a >> 23) - 112) << 10, man = (a >> 13) & 0x3ffu, rest = a & 0x1fffu;
  uint32_t h = exp | man;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}
__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// Rounds v to the float dtype `code` and back (the twin's rd()).
__device__ __forceinline__ float rd(float v, int code) {
  if (code == kBF16) return bf16_bits_to_f32(f32_to_bf16_bits(v));
  if (code == kF16) return f16_bits_to_f32(f32_to_f16_bits(v));
  return v;
}

__device__ __forceinline__ float load_code(const void* base, int code, int64_t i) {
  if (code == kF32) return static_cast<const float*>(base)[i];
  const uint16_t b = static_cast<const uint16_t*>(base)[i];
  return code == kBF16 ? bf16_bits_to_f32(b) : f16_bits_to_f32(b);
}

__device__ __forceinline__ void store_code(void* base, int code, int64_t i, float v) {
  if (code == kF32)
    static_cast<float*>(base)[i] = v;
  else
    static_cast<uint16_t*>(base)[i] = code == kBF16 ? f32_to_bf16_bits(v) : f32_to_f16_bits(v);
}

// E2M1 code -> value: the 3 magnitude bits placed at float bit 22 give 2^(e-127)(1+m/2) (or m*2^-127 for
// e = 0); times 2^126 rebiases exactly (subnormals are kept: nvcc's default -ftz=false). Equals kE2M1[c].
__device__ __forceinline__ float e2m1_value(uint32_t c) {
  return __uint_as_float(((c & 7u) << 22) | ((c & 8u) << 28)) * 0x1p126f;
}

__device__ __forceinline__ float e4m3_value(uint32_t v) {
  return __uint_as_float(((v & 0x7Fu) << 20) | ((v & 0x80u) << 24)) * 0x1p120f;
}

__device__ __forceinline__ float e8m0_value(uint32_t s) { return __uint_as_float(s == 0 ? 0x00400000u : s << 23); }

// quant_codec::float_to_e4m3 step by step.
__device__ __forceinline__ uint8_t float_to_e4m3(float f) {
  uint32_t u = __float_as_uint(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint8_t r;
  if (u >= (543u << 21)) {
    r = 0x7E;
  } else if (u < (121u << 23)) {
    r = static_cast<uint8_t>(__float_as_uint(__fadd_rn(__uint_as_float(u), __uint_as_float(141u << 23))) -
                             (141u << 23));
  } else {
    const uint32_t mant_odd = (u >> 20) & 1u;
    r = static_cast<uint8_t>((u + ((static_cast<uint32_t>(7 - 127) << 23) + 0x7FFFFu) + mant_odd) >> 20);
  }
  return r | static_cast<uint8_t>(sign >> 24);
}

// ---------------------------------------------------------------------------------------------------
// quantize

struct QuantizeArgs {
  int mode;  // QuantMode as int
  int bits, gs;
  int wcode;  // dtype of w (the fp quantizers round through it)
  int scode;  // dtype of affine scales/biases
  int64_t rows, k, groups, words;
  float enc;  // nvfp4 encode factor 448 * 6 / global_scale, else 1
};

// Appends codes to a word-aligned LSB-first bit stream.
struct BitWriter {
  uint32_t* dst;
  int bits;
  uint32_t cur = 0;
  int fill = 0;
  __device__ void put(uint32_t c) {
    cur |= c << fill;
    fill += bits;
    if (fill >= 32) {
      *dst++ = cur;
      fill -= 32;
      cur = fill ? c >> (bits - fill) : 0u;
    }
  }
  __device__ void flush() {
    if (fill) *dst = cur;
  }
};

// First index of the E2M1 value nearest v, distances computed in dtype `code` (ties to the lower index).
__device__ __forceinline__ uint32_t nearest_e2m1(float v, int code) {
  uint32_t best = 0;
  float bd = fabsf(rd(__fsub_rn(v, e2m1_value(0)), code));
#pragma unroll
  for (uint32_t j = 1; j < 16; ++j) {
    const float d = fabsf(rd(__fsub_rn(v, e2m1_value(j)), code));
    if (d < bd) {
      bd = d;
      best = j;
    }
  }
  return best;
}

template <typename T>
__global__ void quantize_kernel(const T* w, QuantizeArgs q, uint32_t* wq, void* scales, void* biases) {
  const int64_t total = q.rows * q.groups;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / q.groups, g = t - r * q.groups;
    const T* src = w + r * q.k + g * q.gs;
    BitWriter out{wq + r * q.words + g * q.gs * q.bits / 32, q.bits};
    if (q.mode == static_cast<int>(QuantMode::affine)) {
      const float n_bins = static_cast<float>((1 << q.bits) - 1), eps = 1e-7f;
      float w_min = INFINITY, w_max = -INFINITY;
      for (int j = 0; j < q.gs; ++j) {
        const float v = to_f(src[j]);
        w_max = (w_max < v) ? v : w_max;  // std::max(w_max, v)
        w_min = (v < w_min) ? v : w_min;  // std::min(w_min, v)
      }
      const bool mask = fabsf(w_min) > fabsf(w_max);
      const float spread = __fdiv_rn(__fsub_rn(w_max, w_min), n_bins);
      float scale = (spread < eps) ? eps : spread;
      scale = mask ? scale : -scale;
      const float edge = mask ? w_min : w_max;
      const float q0 = rintf(__fdiv_rn(edge, scale));
      float bias = 0.0f;
      if (q0 != 0.0f) {
        scale = __fdiv_rn(edge, q0);
        bias = edge;
      }
      for (int j = 0; j < q.gs; ++j) {
        float c = rintf(__fdiv_rn(__fsub_rn(to_f(src[j]), bias), scale));
        c = (c < 0.0f) ? 0.0f : c;
        c = (n_bins < c) ? n_bins : c;
        out.put(static_cast<uint32_t>(c));
      }
      store_code(scales, q.scode, t, scale);
      store_code(biases, q.scode, t, bias);
    } else {
      float amax = 0.0f;
      for (int j = 0; j < q.gs; ++j) {
        const float a = fabsf(to_f(src[j]));
        amax = (amax < a) ? a : amax;
      }
      const float maxval = q.bits == 4 ? 6.0f : 448.0f;
      const float s = rd(__fdiv_rn(amax, maxval), q.wcode);
      uint8_t sbyte;
      if (q.mode == static_cast<int>(QuantMode::nvfp4)) {
        sbyte = float_to_e4m3(__fmul_rn(s, q.enc));
        const float d = rd(e4m3_value(sbyte), q.wcode);
        for (int j = 0; j < q.gs; ++j)
          out.put(nearest_e2m1(__fmul_rn(rd(__fdiv_rn(to_f(src[j]), d), q.wcode), q.enc), kF32));
      } else {
        const int e =
            s == 0.0f ? 0 : static_cast<int>(rintf(rd(static_cast<float>(log2(static_cast<double>(s))), q.wcode)));
        sbyte = static_cast<uint8_t>(e + 127);
        const float p2 = rd(ldexpf(1.0f, e), q.wcode);
        for (int j = 0; j < q.gs; ++j) {
          const float v = rd(__fdiv_rn(to_f(src[j]), p2), q.wcode);
          out.put(q.bits == 4 ? nearest_e2m1(v, q.wcode) : float_to_e4m3(v));
        }
      }
      static_cast<uint8_t*>(scales)[t] = sbyte;
    }
    out.flush();
  }
}

// ---------------------------------------------------------------------------------------------------
// dequantize

struct DequantArgs {
  const uint32_t* wq;
  const void* scales;
  const void* biases;
  int mode, bits, gs;
  int scode;  // dtype of affine scales/biases
  int64_t rows, k, groups, words;
  float gmul;  // nvfp4 global factor global_scale / (448 * 6), else 1
};

// Code e of a packed row (LSB-first stream; a code may straddle two words).
__device__ __forceinline__ uint32_t code_at(const uint32_t* row, int64_t e, int bits) {
  const int64_t bit = e * bits;
  const int64_t w = bit >> 5;
  const int sh = static_cast<int>(bit & 31);
  uint32_t v = __ldg(row + w) >> sh;
  if (sh + bits > 32) v |= __ldg(row + w + 1) << (32 - sh);
  return v & ((1u << bits) - 1u);
}

// Element e of row r of the dequantized matrix as the twin computes it, for output dtype ocode; `f32`
// receives the f32 value (what an f32 output stores).
template <int OCODE>
__device__ __forceinline__ float dequant_value(const DequantArgs& a, int64_t r, int64_t e) {
  const uint32_t c = code_at(a.wq + r * a.words, e, a.bits);
  const int64_t gi = r * a.groups + e / a.gs;
  if (a.mode == static_cast<int>(QuantMode::affine)) {
    const float s = load_code(a.scales, a.scode, gi), b = load_code(a.biases, a.scode, gi);
    const float q = static_cast<float>(c);
    if constexpr (OCODE == kF32)
      return __fmaf_rn(q, s, b);
    else
      return __fadd_rn(rd(__fmul_rn(q, s), OCODE), b);  // MLX rounds q*s, then q*s + b, to the dtype
  }
  const uint32_t sb = static_cast<const uint8_t*>(a.scales)[gi];
  if (a.mode == static_cast<int>(QuantMode::nvfp4)) return __fmul_rn(e2m1_value(c), __fmul_rn(e4m3_value(sb), a.gmul));
  if (a.mode == static_cast<int>(QuantMode::mxfp4)) return __fmul_rn(e2m1_value(c), e8m0_value(sb));
  return __fmul_rn(e4m3_value(c), e8m0_value(sb));
}

template <int OCODE>
__global__ void dequantize_kernel(DequantArgs a, void* out) {
  const int64_t total = a.rows * a.k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / a.k;
    store_code(out, OCODE, i, dequant_value<OCODE>(a, r, i - r * a.k));
  }
}

// dequantize_kernel with 8 consecutive elements of a row per thread (k and the group size multiples of 8,
// out 16-byte aligned): one row/group computation, one scale (and bias) load and one 16-byte (half) or
// two 16-byte (f32) stores per 8 values, the same per-element formula. (Per element, the plain kernel's
// 64-bit divisions and 2-byte stores made a Llama-3.1-8B-shaped 4-bit prefill spend 22 of its 34 ms
// dequantizing panels on an H100.)
template <int OCODE>
__global__ void dequantize8_kernel(DequantArgs a, void* out) {
  const int64_t per_row = a.k >> 3, total = a.rows * per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, e0 = (i - r * per_row) << 3;
    const uint32_t* row = a.wq + r * a.words;
    const int64_t gi = r * a.groups + e0 / a.gs;
    float v[8];
    if (a.mode == static_cast<int>(QuantMode::affine)) {
      const float sc = load_code(a.scales, a.scode, gi), bi = load_code(a.biases, a.scode, gi);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float q = static_cast<float>(code_at(row, e0 + j, a.bits));
        if constexpr (OCODE == kF32)
          v[j] = __fmaf_rn(q, sc, bi);
        else
          v[j] = __fadd_rn(rd(__fmul_rn(q, sc), OCODE), bi);  // as dequant_value
      }
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = dequant_value<OCODE>(a, r, e0 + j);
    }
    if constexpr (OCODE == kF32) {
      float4* o = reinterpret_cast<float4*>(static_cast<float*>(out) + i * 8);
      o[0] = make_float4(v[0], v[1], v[2], v[3]);
      o[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      uint32_t h[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) h[j] = OCODE == kBF16 ? f32_to_bf16_bits(v[j]) : f32_to_f16_bits(v[j]);
      reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + i * 8)[0] =
          make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
    }
  }
}

DequantArgs dequant_args(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec,
                         float global_scale, const char* op) {
  DequantArgs a{};
  a.wq = wq.data<uint32_t>();
  a.scales = scales.raw_data();
  a.biases = biases.valid() ? biases.raw_data() : nullptr;
  a.mode = static_cast<int>(spec.mode);
  a.bits = spec.bits;
  a.gs = spec.group_size;
  a.scode = spec.mode == QuantMode::affine ? float_code(scales.dtype(), op) : kF32;
  a.words = wq.shape(-1);
  a.k = a.words * 32 / spec.bits;
  a.rows = a.words ? wq.size() / a.words : 0;
  a.groups = scales.shape(-1);
  a.gmul = global_scale > 0 ? global_scale / (448.0f * 6.0f) : 1.0f;
  if (spec.mode == QuantMode::affine && (!biases.valid() || biases.dtype() != scales.dtype()))
    throw Error(format_error(op, "affine biases must match the scales' dtype"));
  return a;
}

void launch_dequantize(const DequantArgs& a, void* out, int ocode, cudaStream_t s) {
  const int64_t total = a.rows * a.k;
  if (total == 0) return;
  const bool by8 = a.k % 8 == 0 && a.gs % 8 == 0 && (reinterpret_cast<uintptr_t>(out) & 15u) == 0;
  auto run = [&](auto code) {
    constexpr int C = decltype(code)::value;
    if (by8)
      dequantize8_kernel<C><<<grid_for(total / 8, 256), 256, 0, s>>>(a, out);
    else
      dequantize_kernel<C><<<grid_for(total, 256), 256, 0, s>>>(a, out);
  };
  if (ocode == kF32)
    run(std::integral_constant<int, kF32>{});
  else if (ocode == kBF16)
    run(std::integral_constant<int, kBF16>{});
  else
    run(std::integral_constant<int, kF16>{});
  check_launch(by8 ? "dequantize8_kernel" : "dequantize_kernel");
}

// ---------------------------------------------------------------------------------------------------
// Decode: fused dequantize + GEMV (see the file comment for the plan).

constexpr int kQmvThreads = 128;

struct QmvArgs {
  const void* x;          // [m, k] in the kernel's XT (f32, bf16 or f16), 16-byte aligned rows
  const uint32_t* wq;     // [n, words]
  const void* scales;     // affine: [n, groups] in dtype scode
  const void* biases;     // affine: [n, groups] in dtype scode
  const uint8_t* sbytes;  // fp modes: [n, groups]
  void* out;              // [m, n] in dtype ocode
  int scode, ocode;       // FloatCode of the affine scales/biases and of out
  int m;
  int64_t n, k, words, groups;
  int gs, gs_log2;  // group size (a power of two) and its log2
  float gmul;
  bool vec;  // rows 16-byte aligned: packs of 2/4/8 words load as vectors
  // gather_qmm: blockIdx.y is a pair p; x block lhs[p] ([m, k] rows lhs[p] * m ...) times matrix rhs[p]
  // (wq and the scales hold the stacked matrices [E, n, .]) into out rows p * m ... Null: block p, matrix 0.
  const int32_t* lhs;
  const int32_t* rhs;
  // Fast tier (qgemv_i8_kernel): x is the int8 activations of quantize_x_kernel and xdb their blocks' {d, d * sum q}.
  const float2* xdb;
};

// One decode-GEMV launch: up to kQmvSegs products of one x (same format, K and dtypes; own matrix, output,
// N and nvfp4 scale), their row groups numbered one after another (segment s has groups first[s] ..
// first[s + 1] - 1). With `swiglu`, two segments (gate, up) of one N share the row groups: a warp's first
// R/2 rows come from the gate, the others are the same rows of up, and the epilogue stores
// swiglu(gate, up) into seg[0].out.
constexpr int kQmvSegs = 3;
struct QmvLaunch {
  QmvArgs seg[kQmvSegs];
  int64_t first[kQmvSegs + 1];
  int nseg;
  bool swiglu;
};

__device__ __forceinline__ uint4 ld_stream16(const uint32_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ uint2 ld_stream8(const uint32_t* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Two 16-bit halves of a word as an exact float pair. Decoders build halves whose value is the code (1024 +
// code with 0x6400's exponent, then minus 1024; or an E2M1 value): one integer op yields two codes and
// the f16 arithmetic is exact, which matters because the integer pipe (half the FP32 rate on Hopper)
// otherwise bounds the decode GEMV.
__device__ __forceinline__ float2 offset_pair(uint32_t bits) {  // halves 1024 + a, 1024 + b -> (a, b)
  __half2 h;
  memcpy(&h, &bits, 4);
  return __half22float2(__hsub2(h, __half2half2(__ushort_as_half(0x6400))));
}

// Decoders: a pack is 32 consecutive codes = kWords uint32 words; decode8 yields codes 8c .. 8c+7 as
// exact floats (c a compile-time constant after unrolling, so the word indexing stays in registers).
template <int BITS>
struct DecAffine {
  static constexpr int kWords = BITS;
  static constexpr bool kAffine = true;
  __device__ static void decode8(const uint32_t (&w)[kWords], int c, float (&q)[8]) {
    if constexpr (BITS == 4) {
      // Word c holds codes 8c .. 8c+7; codes i and i+4 sit 16 bits apart, so one mask takes both.
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = offset_pair(((w[c] >> (4 * i)) & 0x000F000Fu) | 0x64006400u);
        q[i] = f.x;
        q[i + 4] = f.y;
      }
    } else if constexpr (BITS == 8) {
      // Words 2c, 2c+1 hold bytes of codes 8c .. 8c+7; a byte permute puts bytes 0, 2 (or 1, 3) under 0x64.
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float2 e = offset_pair(__byte_perm(w[2 * c + j], 0x64u, 0x4240));
        const float2 o = offset_pair(__byte_perm(w[2 * c + j], 0x64u, 0x4341));
        q[4 * j] = e.x;
        q[4 * j + 1] = o.x;
        q[4 * j + 2] = e.y;
        q[4 * j + 3] = o.y;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int bit = (8 * c + i) * BITS, wi = bit >> 5, sh = bit & 31;
        uint32_t v = w[wi] >> sh;
        if (sh + BITS > 32) v = __funnelshift_r(w[wi], w[wi + 1 < kWords ? wi + 1 : wi], sh);
        // 2^23 + code has the code in its mantissa; subtracting 2^23 leaves it exactly.
        q[i] = __fsub_rn(__uint_as_float(0x4B000000u | (v & ((1u << BITS) - 1u))), 8388608.0f);
      }
    }
  }
};

struct DecFp4 {
  static constexpr int kWords = 4;
  static constexpr bool kAffine = false;
  // E2M1 as f16: the magnitude bits at f16 bits 9-11 read 2^(e-15)(1+m/2) (or m * 2^-15), times 2^14 gives
  // the E2M1 value exactly; the sign goes to bit 15. Codes i and i+4 of word c decode together.
  __device__ static void decode8(const uint32_t (&w)[kWords], int c, float (&q)[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = w[c];
      const uint32_t mag = (i < 3 ? v << (9 - 4 * i) : v >> (4 * i - 9)) & 0x0E000E00u;
      const uint32_t sign = (v << (12 - 4 * i)) & 0x80008000u;
      __half2 h;
      const uint32_t bits = mag | sign;
      memcpy(&h, &bits, 4);
      const float2 f = __half22float2(__hmul2(h, __half2half2(__ushort_as_half(0x7400))));  // 2^14
      q[i] = f.x;
      q[i + 4] = f.y;
    }
  }
};

struct DecFp8 {
  static constexpr int kWords = 8;
  static constexpr bool kAffine = false;
  __device__ static void decode8(const uint32_t (&w)[kWords], int c, float (&q)[8]) {
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = e4m3_value(w[2 * c + i / 4] >> (8 * (i % 4)));
  }
};

// The pack p of a row into registers: vector loads when legal (bypassing L1, every byte is used once),
// else word loads; `half` loads only the first 16 codes (an nvfp4 row whose length is 16 mod 32).
template <int W>
__device__ __forceinline__ void load_pack(const uint32_t* row, int64_t p, bool vec, bool half, uint32_t (&w)[W]) {
  const uint32_t* src = row + p * W;
  if (half) {
#pragma unroll
    for (int i = 0; i < W; ++i) w[i] = i < W / 2 ? __ldg(src + i) : 0u;
    return;
  }
  if constexpr (W % 4 == 0) {
    if (vec) {
#pragma unroll
      for (int i = 0; i < W / 4; ++i) {
        const uint4 v = ld_stream16(src + 4 * i);
        w[4 * i] = v.x;
        w[4 * i + 1] = v.y;
        w[4 * i + 2] = v.z;
        w[4 * i + 3] = v.w;
      }
      return;
    }
  } else if constexpr (W == 2) {
    if (vec) {
      const uint2 v = ld_stream8(src);
      w[0] = v.x;
      w[1] = v.y;
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < W; ++i) w[i] = __ldg(src + i);
}

// Element i of an affine scale/bias array stored as ST, converted exactly to f32.
template <typename ST>
__device__ __forceinline__ float ld_param(const void* base, int64_t i) {
  if constexpr (std::is_same_v<ST, float>) {
    return __ldg(static_cast<const float*>(base) + i);
  } else {
    const unsigned short h = __ldg(static_cast<const unsigned short*>(base) + i);
    if constexpr (std::is_same_v<ST, __nv_bfloat16>)
      return bf16_bits_to_f32(h);
    else
      return f16_bits_to_f32(h);
  }
}

// Scale (and bias) of group g of row r of matrix `a` (ST: the affine scales' storage type; unused by the
// fp modes).
template <class D, typename ST>
__device__ __forceinline__ void group_params(const QmvArgs& a, int64_t r, int64_t g, bool nv, float& s, float& b) {
  const int64_t i = r * a.groups + g;
  if constexpr (D::kAffine) {
    s = ld_param<ST>(a.scales, i);
    b = ld_param<ST>(a.biases, i);
  } else {
    const uint32_t sb = __ldg(a.sbytes + i);
    s = nv ? __fmul_rn(e4m3_value(sb), a.gmul) : e8m0_value(sb);
    b = 0.0f;
  }
}

// Packed rows per warp: each x value a lane loads serves R rows. One activation row (decode): 2 rows,
// which keeps registers low and warps many (measured on an H100 at model level against 4 and 8 rows:
// Llama-3.1-8B-shaped 4-bit tg 251 vs 250 vs 223 t/s, 8-bit 200 vs 183 vs 177; 1B 4-bit 844 vs 790 vs
// 734; with 1 row 236, 196, 753). More activation rows: more rows per warp pay off (measured on an
// H200), until registers run out.
template <int MT>
constexpr int qmv_rows() {
  return MT == 1 ? 2 : (MT <= 4 ? 8 : 4);
}

// Scales (and biases) of both half packs of pack p for R rows, the affine ones stored as ST: rows r < SPLIT
// of matrix `a`, the others of `b` (a swiglu's up matrix; SPLIT = R otherwise). Only nvfp4 has 16-code
// groups (the host sends affine group sizes below 32 to the dequantize + sgemm path).
template <class D, typename ST, int R, int SPLIT>
__device__ __forceinline__ void pack_params_t(const QmvArgs& a, const QmvArgs& b2, bool nv, int64_t p,
                                              const int64_t (&row)[R], float (&s)[R][2], float (&b)[R][2]) {
  const int64_t g = (p * 32) >> a.gs_log2;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const QmvArgs& src = r < SPLIT ? a : b2;
    group_params<D, ST>(src, row[r], g, nv, s[r][0], b[r][0]);
    if (!D::kAffine && a.gs == 16) {
      group_params<D, ST>(src, row[r], g + 1 < a.groups ? g + 1 : g, nv, s[r][1], b[r][1]);
    } else {
      s[r][1] = s[r][0];
      b[r][1] = b[r][0];
    }
  }
}

// pack_params_t for the affine scales' runtime dtype: one warp-uniform branch per pack (a few loads each),
// which keeps the scale dtype out of the kernel's template parameters.
template <class D, int R, int SPLIT>
__device__ __forceinline__ void pack_params(const QmvArgs& a, const QmvArgs& b2, bool nv, int64_t p,
                                            const int64_t (&row)[R], float (&s)[R][2], float (&b)[R][2]) {
  if constexpr (D::kAffine) {
    if (a.scode == kF32)
      pack_params_t<D, float, R, SPLIT>(a, b2, nv, p, row, s, b);
    else if (a.scode == kBF16)
      pack_params_t<D, __nv_bfloat16, R, SPLIT>(a, b2, nv, p, row, s, b);
    else
      pack_params_t<D, __half, R, SPLIT>(a, b2, nv, p, row, s, b);
  } else {
    pack_params_t<D, float, R, SPLIT>(a, b2, nv, p, row, s, b);
  }
}

// out[i] = v rounded once to out's dtype: to nearest even by one conversion instruction, as loom::cuda::copy
// converts (and the twin's rounding for every value but NaN payloads).
__device__ __forceinline__ void store_out(const QmvArgs& a, int64_t i, float v) {
  if (a.ocode == kF32)
    static_cast<float*>(a.out)[i] = v;
  else if (a.ocode == kBF16)
    static_cast<__nv_bfloat16*>(a.out)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(a.out)[i] = __float2half_rn(v);
}

// acc[r][m] += (row r of pack p) . (x[m] over the pack), for the codes already in w.
template <class D, typename XT, int MT, int R>
__device__ __forceinline__ void qmv_pack(int64_t p, bool half, const uint32_t (&w)[R][D::kWords],
                                         const float (&s)[R][2], const float (&b)[R][2], const XT* const (&xr)[MT],
                                         float (&acc)[R][MT]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // half packs: 16 codes each, so nvfp4's 16-code groups fit
    if (h == 1 && half) break;
    float dot[R][MT], xs[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      xs[m] = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) dot[r][m] = 0.0f;
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int chunk = 2 * h + c;  // codes 8 * chunk .. 8 * chunk + 7 of the pack
      float xv[MT][8];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        load_x8(xr[m] + p * 32 + chunk * 8, xv[m]);
        if constexpr (D::kAffine)
          xs[m] += ((xv[m][0] + xv[m][1]) + (xv[m][2] + xv[m][3])) + ((xv[m][4] + xv[m][5]) + (xv[m][6] + xv[m][7]));
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float q[8];
        D::decode8(w[r], chunk, q);
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int i = 0; i < 8; ++i) dot[r][m] = fmaf(xv[m][i], q[i], dot[r][m]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        acc[r][m] = fmaf(s[r][h], dot[r][m], acc[r][m]);
        if constexpr (D::kAffine) acc[r][m] = fmaf(b[r][h], xs[m], acc[r][m]);
      }
  }
}

// The R packed rows, activation rows and output position of one warp's row group: rows n0 .. n0 + SPLIT - 1
// of matrix `a`, then (a swiglu's up rows, SPLIT = R/2) the same rows of `b`.
template <typename XT, int MT, int R, int SPLIT>
struct QmvRows {
  int64_t n0;    // first output column of the group
  int64_t out0;  // flat index of out[pair * m + 0, 0]
  int64_t row[R];  // rows of the (stacked) matrices (past-the-end rows repeat the last one; results dropped)
  const uint32_t* wr[R];  // their packed words
  const XT* xr[MT];  // activation rows (rows past m repeat row 0; results dropped)

  __device__ QmvRows(const QmvArgs& a, const QmvArgs& b, int64_t first) : n0(first) {
    const int64_t pair = blockIdx.y;
    const int64_t ebase = a.rhs ? static_cast<int64_t>(__ldg(a.rhs + pair)) * a.n : 0;
    const int64_t xblock = a.lhs ? static_cast<int64_t>(__ldg(a.lhs + pair)) : pair;
    out0 = pair * a.m * a.n;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      row[r] = ebase + min(n0 + (r < SPLIT ? r : r - SPLIT), a.n - 1);
      wr[r] = (r < SPLIT ? a.wq : b.wq) + row[r] * a.words;
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) xr[m] = static_cast<const XT*>(a.x) + (xblock * a.m + (m < a.m ? m : 0)) * a.k;
  }
};

// Reduces acc over the warp's lanes (and, when ks > 1, over the block's ks warps through `red`, the warp's
// scratch at red + warp * red_stride) and stores out[m, n0 + r]: lane 0 parks the R * MT sums in shared
// memory, then lane r * MT + m stores one output (one rolled store instead of R * MT unrolled ones, each a
// switch over out's dtype). With `swiglu`, rows r and r + R/2 (gate and up) are each rounded to out's dtype
// and lane r * MT + m (r < R/2) stores their swiglu.
template <typename XT, int MT, int R, int SPLIT>
__device__ __forceinline__ void qmv_finish(const QmvArgs& a, const QmvRows<XT, MT, R, SPLIT>& g, float (&acc)[R][MT],
                                           float* red, int red_stride, int ks) {
  static_assert(R * MT <= 32, "one lane per output of a row group");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], o);
    }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) red[warp * red_stride + r * MT + m] = acc[r][m];
  }
  float* mine = red + warp * red_stride;
  if (ks > 1) {  // ks consecutive warps share the row group: the first sums their parts into its own slots
    __syncthreads();
    if (warp % ks != 0) return;
    float v = 0.0f;
    if (lane < R * MT)
      for (int i = 0; i < ks; ++i) v += red[(warp + i) * red_stride + lane];
    __syncwarp();
    if (lane < R * MT) mine[lane] = v;
  }
  __syncwarp();
  if (lane < SPLIT * MT) {
    const int r = lane / MT, m = lane % MT;
    float v = mine[lane];
    if constexpr (SPLIT < R) v = swiglu_f(rd(v, a.ocode), rd(mine[lane + SPLIT * MT], a.ocode));
    if (m < a.m && g.n0 + r < a.n) store_out(a, g.out0 + m * a.n + g.n0 + r, v);
  }
}

// One warp per R packed rows (or, when N is small, the block's 4 warps per R rows, splitting the packs:
// `ks` warps per row group); lane l takes packs l, l + 32 ks, ... of all R rows (a warp-wide load reads 32
// consecutive packs of a row, R packs per lane in flight); shuffles (and shared memory when ks = 4) reduce.
// Row group gi belongs to the segment whose range holds it (see QmvLaunch).
template <class D, typename XT, int MT, int R, int SPLIT>
__device__ __forceinline__ void qgemv_rows(const QmvArgs& a, const QmvArgs& b2, int64_t n0, bool nv, int ks) {
  constexpr int W = D::kWords;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % ks;
  const int64_t packs = (a.k + 31) >> 5;
  if (a.rhs || a.lhs) pdl_wait();  // the pairs' indices come from earlier kernels
  const QmvRows<XT, MT, R, SPLIT> g(a, b2, n0);
  pdl_wait();  // launched with launch_pdl
  pdl_trigger();
  float acc[R][MT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.0f;

  // Packs of the R rows are loaded, then decoded. (Prefetching the next pack into registers, or two
  // packs per step, measured no faster on an H200: the extra registers cost occupancy.)
  for (int64_t p = part * 32 + lane; p < packs; p += 32 * ks) {
    const bool half = a.k - p * 32 < 32;  // only nvfp4 rows of 16 mod 32 codes end in half a pack
    uint32_t w[R][W];
    float s[R][2], b[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r) load_pack<W>(g.wr[r], p, a.vec, half, w[r]);
    pack_params<D, R, SPLIT>(a, b2, nv, p, g.row, s, b);
    qmv_pack<D, XT, MT, R>(p, half, w, s, b, g.xr, acc);
  }
  __shared__ float red[kQmvThreads / 32][R * MT];
  qmv_finish<XT, MT, R, SPLIT>(a, g, acc, &red[0][0], R * MT, ks);
}

// The kernel: row group gi of the launch belongs to the segment whose range holds it (see QmvLaunch). Each
// segment's arguments are named by a constant index (one inlined copy of the loop per segment), so they stay
// kernel parameters instead of occupying registers.
template <class D, typename XT, int MT, int R, int SPLIT>
__global__ void __launch_bounds__(kQmvThreads) qgemv_kernel(const __grid_constant__ QmvLaunch L, bool nv, int ks) {
  const int warp = threadIdx.x >> 5;
  const int64_t gi = static_cast<int64_t>(blockIdx.x) * (kQmvThreads / 32 / ks) + warp / ks;
  if (gi >= L.first[L.nseg]) return;  // (a ks = 2 block's second group may lie past the end: see qmv_grid)
  if constexpr (SPLIT < R) {
    qgemv_rows<D, XT, MT, R, SPLIT>(L.seg[0], L.seg[1], gi * SPLIT, nv, ks);
  } else {
    static_assert(kQmvSegs == 3, "one branch per segment");
    if (gi < L.first[1])
      qgemv_rows<D, XT, MT, R, R>(L.seg[0], L.seg[0], gi * R, nv, ks);
    else if (gi < L.first[2])
      qgemv_rows<D, XT, MT, R, R>(L.seg[1], L.seg[1], (gi - L.first[1]) * R, nv, ks);
    else
      qgemv_rows<D, XT, MT, R, R>(L.seg[2], L.seg[2], (gi - L.first[2]) * R, nv, ks);
  }
}

// ---------------------------------------------------------------------------------------------------
// Decode, fast tier (QmmPrecision::fast; CPU twin backend/cpu/qmm_int8.cpp): MLX affine 4- and 8-bit
// weights times int8 activations with integer dot products (dp4a), as the CPU's fast tier and
// llama.cpp's Q8_1 activations compute them. quantize_x_kernel quantizes x exactly as the twin does for
// 4-bit weights: per block of 32 consecutive values d = max|x| / 127, id = 1 / d (0 when d is 0), q = x * id
// rounded to nearest even (f32 operations, correctly rounded), and stores {d, d * sum q} per block. (For
// 8-bit weights the CPU twin takes int16 activations, d = max|x| / 32767, which cost it nothing; here int16
// activations and dp2a made decode 8% slower, Llama-3.1-8B-shaped 8-bit tg128 270 -> 249 t/s on an H100,
// so the GPU's 8-bit products keep int8: tests/cuda/qmm_fast_test.cpp checks them against the definition.)
// Per output, y = sum_b [scale_g * (d_b * sum_{j in b} code_j q_j) + bias_g * (d_b * sum q)]: for 4-bit
// weights the integer sums are the twin's bit for bit, so the two tiers' results differ only by f32
// summation order. Lanes take packs of
// 32 codes (one activation block) as the exact kernel does; a 4-bit word's low nibbles (codes 0, 2, 4, 6
// of its 8) and high nibbles (1, 3, 5, 7) meet activations stored in that order (quantize_x_kernel writes
// each 8-value chunk as [x0 x2 x4 x6 | x1 x3 x5 x7] for 4-bit weights), so a word costs two masks and two
// dp4a; an 8-bit word is 4 codes in order, one dp4a. (The exact kernel converts every code and activation
// to f32 and is bound by instruction issue at 4 bits: ~1.8 TB/s on an H100's 8B-shaped matrices.)

// Activations of one call: x (16-byte aligned rows of K, a multiple of 32) as `blocks` blocks of 32.
struct QxArgs {
  const void* x;
  int64_t blocks;
  uint32_t* q;   // [blocks * 8] words: int8 codes, 4 per word
  float2* db;    // [blocks] {d, d * sum q}
  bool nibbles;  // 4-bit order (above) instead of natural order
};

template <typename XT>
__global__ void __launch_bounds__(128) quantize_x_kernel(QxArgs a) {
  pdl_wait();
  pdl_trigger();
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= a.blocks) return;
  float v[32];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    float t[8];
    load_x8(static_cast<const XT*>(a.x) + b * 32 + 8 * c, t);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[8 * c + i] = t[i];
  }
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 32; ++i) amax = fmaxf(amax, fabsf(v[i]));
  const float d = q8_scale(amax), id = q8_inverse(d);
  int q[32], sum = 0;
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    q[i] = q8_code(v[i], id);
    sum += q[i];
  }
  uint32_t w[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    // word j: natural order q[4j .. 4j+3]; nibble order: chunk c = j / 2, even (j even) or odd codes of it
    int e[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) e[t] = a.nibbles ? q[8 * (j / 2) + 2 * t + (j % 2)] : q[4 * j + t];
    w[j] = (e[0] & 0xFF) | ((e[1] & 0xFF) << 8) | ((e[2] & 0xFF) << 16) | (static_cast<uint32_t>(e[3] & 0xFF) << 24);
  }
  uint4* out = reinterpret_cast<uint4*>(a.q + b * 8);
  out[0] = make_uint4(w[0], w[1], w[2], w[3]);
  out[1] = make_uint4(w[4], w[5], w[6], w[7]);
  a.db[b] = make_float2(d, __fmul_rn(d, static_cast<float>(sum)));
}

// sum of the 4 byte products of a (unsigned) and b (signed), plus c.
__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// The integer dot product of one pack of a row (BITS words) with one activation block (8 words).
template <int BITS>
__device__ __forceinline__ int pack_dot(const uint32_t (&w)[BITS], const uint32_t (&x)[8]) {
  if constexpr (BITS == 4) {
    int lo = 0, hi = 0;  // hi: the high nibbles in place (16 x code), shifted down at the end (exact)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      lo = dp4a_us(w[c] & 0x0F0F0F0Fu, x[2 * c], lo);
      hi = dp4a_us(w[c] & 0xF0F0F0F0u, x[2 * c + 1], hi);
    }
    return lo + (hi >> 4);
  } else {
    static_assert(BITS == 8, "4- or 8-bit packs");
    int acc = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc = dp4a_us(w[j], x[j], acc);
    return acc;
  }
}

// qgemv_rows for the fast tier: the same row groups, lanes and reduction; x rows are the int8 activations.
// A lane's first pack is requested before waiting on the kernels before this one (weights are never
// written during a step), so its latency overlaps their tail (Llama-3.1-8B-shaped 4-bit tg +2% on an
// H100). (Measured there and dropped: 2 or 4 packs per lane in flight, 8B 4-bit tg 326 and 295 t/s vs
// 347 with one; 4 rows per warp, 336 vs 347 on 8B, 1162 vs 1138 on the 1B shape. Also dropped: a one-row
// variant that quantizes x itself into shared memory, saving quantize_x_kernel's launch and dependency
// wait: 1024-thread blocks, one per multiprocessor (56-62 registers), looping over row groups. 1B 4-bit
// tg 1373 vs 1312 t/s, but 8B 4-bit 341 vs 371 and 8-bit 239 vs 258; requesting the next group's first
// pack before each reduction made it slower still (1259 and 327), and using it only below 4-40 MB of
// weights gained nothing. With quantize_x_kernel's launches skipped outright (wrong results, timing only)
// tg is 1488 and 392: the launch is worth 5-13%, which a kernel that quantizes x in each block does not
// recover. Its cost is the boundary, not its work: four threads per block of 32 instead of one measured
// the same, 1316 and 376.5 t/s. Session 13, also dropped: an L2 bulk prefetch of each warp's next 1, 2 or
// 4 steps of packs (8B 4-bit 411 -> 385, 376, 371; 8-bit 274 -> 268, 257, 251), and one wave of blocks
// looping over the row groups, which removes the partial last wave (8B 4-bit 397 -> 384, 8-bit 271 -> 259;
// 1B 4-bit 1481 -> 1497). Session 14: ncu's stall samples put 54% of the gate/up kernel's at the first use
// of a pack's scale, i.e. each warp waits out a load per step; double-buffering the pack, scale and bias
// registers (the next step's loads issued before this step's math; 56 -> 64 registers) measured 8B 4-bit
// 420 -> 383 t/s and 1B 4-bit 1563 -> 1515, 8-bit unchanged, with DRAM at ~67% of peak in both.)
template <int BITS, int MT, int R, int SPLIT>
__device__ __forceinline__ void qgemv_i8_rows(const QmvArgs& a, const QmvArgs& b2, int64_t n0, int ks) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % ks;
  const int64_t packs = a.k >> 5;
  if (a.rhs || a.lhs) pdl_wait();  // the pairs' indices come from earlier kernels
  // xr[m]: activation row m's k codes
  const QmvRows<int8_t, MT, R, SPLIT> g(a, b2, n0);
  uint32_t w[R][BITS];
  float s[R][2], b[R][2];
  auto load = [&](int64_t p) {
#pragma unroll
    for (int r = 0; r < R; ++r) load_pack<BITS>(g.wr[r], p, a.vec, false, w[r]);
    pack_params<DecAffine<BITS>, R, SPLIT>(a, b2, false, p, g.row, s, b);
  };
  int64_t p = part * 32 + lane;
  if (p < packs) load(p);
  pdl_wait();  // launched with launch_pdl
  pdl_trigger();
  const float2* xdb[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) xdb[m] = a.xdb + (g.xr[m] - static_cast<const int8_t*>(a.x)) / 32;
  float acc[R][MT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.0f;
  for (; p < packs; p += 32 * ks) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const uint4* xp = reinterpret_cast<const uint4*>(g.xr[m] + p * 32);
      const uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
      const uint32_t x[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
      const float2 db = __ldg(xdb[m] + p);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float dot = __fmul_rn(db.x, static_cast<float>(pack_dot<BITS>(w[r], x)));
        acc[r][m] = fmaf(s[r][0], dot, fmaf(b[r][0], db.y, acc[r][m]));
      }
    }
    if (p + 32 * ks < packs) load(p + 32 * ks);
  }
  __shared__ float red[kQmvThreads / 32][R * MT];
  qmv_finish<int8_t, MT, R, SPLIT>(a, g, acc, &red[0][0], R * MT, ks);
}

template <int BITS, int MT, int R, int SPLIT>
__global__ void __launch_bounds__(kQmvThreads) qgemv_i8_kernel(const __grid_constant__ QmvLaunch L, int ks) {
  const int warp = threadIdx.x >> 5;
  const int64_t gi = static_cast<int64_t>(blockIdx.x) * (kQmvThreads / 32 / ks) + warp / ks;
  if (gi >= L.first[L.nseg]) return;  // (a ks = 2 block's second group may lie past the end: see qmv_grid)
  if constexpr (SPLIT < R) {
    qgemv_i8_rows<BITS, MT, R, SPLIT>(L.seg[0], L.seg[1], gi * SPLIT, ks);
  } else {
    if (gi < L.first[1])
      qgemv_i8_rows<BITS, MT, R, R>(L.seg[0], L.seg[0], gi * R, ks);
    else if (gi < L.first[2])
      qgemv_i8_rows<BITS, MT, R, R>(L.seg[1], L.seg[1], (gi - L.first[1]) * R, ks);
    else
      qgemv_i8_rows<BITS, MT, R, R>(L.seg[2], L.seg[2], (gi - L.first[2]) * R, ks);
  }
}

int sm_count_here() {
  int dev = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&dev));
  return sm_count(Device::cuda(dev));
}

// Grid of the decode kernels for `groups` row groups (of R rows per warp) per pair, over rows of `packs`
// packs: with fewer than `warps_per_sm` row-group warps per multiprocessor (over all pairs), the 4 warps of
// a block share each row group (ks = 4, or 2 for rows of fewer than 128 packs) and split its packs. (Thresholds 24, 32
// and 60 measured no faster than 16 for the fast tier on an H100: Llama-3.1-8B-shaped 4-bit tg 345 vs 349 t/s, 8-bit
// 247 vs 246.)
struct QmvGrid {
  dim3 grid;
  int ks;
};

QmvGrid qmv_grid(int64_t groups, int64_t pairs, int64_t packs, int warps_per_sm = 16) {
  int ks = groups * pairs < int64_t{warps_per_sm} * sm_count_here() ? kQmvThreads / 32 : 1;
  // Every part gets at least one whole step of 32 packs: with K = 2048 (64 packs), 4 parts left two
  // warps of each block idle; 2 parts measured on an H100 (1B 4-bit tg128 1312 -> 1384 t/s). Smaller ks
  // for longer rows measured slower (ks 2 instead of 4 for the 8B shape's o_proj and down_proj: 4-bit 409
  // -> 388, 8-bit 270 -> 264). The last block of a ks = 2 launch may hold one row group: its other warps
  // exit, and a barrier waits only for threads that have not exited.
  while (ks > 1 && packs < 32 * ks) ks /= 2;
  const int64_t per_block = kQmvThreads / 32 / ks;
  const int64_t blocks = (groups + per_block - 1) / per_block;
  if (blocks > INT32_MAX || pairs > 65535)
    throw NotSupportedError(format_error("quantized_matmul", "too many output columns or pairs"));
  return {dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(pairs)), ks};
}

// Row groups per segment (see QmvLaunch) and the grid, for R rows per warp.
QmvGrid qmv_layout(QmvLaunch& L, int R, int64_t pairs) {
  const int per_group = L.swiglu ? R / 2 : R;  // output rows per row group
  L.first[0] = 0;
  for (int i = 0; i < L.nseg; ++i)
    L.first[i + 1] = L.first[i] + (L.swiglu && i == 1 ? 0 : (L.seg[i].n + per_group - 1) / per_group);
  for (int i = L.nseg + 1; i <= kQmvSegs; ++i) L.first[i] = L.first[L.nseg];
  return qmv_grid(L.first[L.nseg], pairs, (L.seg[0].k + 31) / 32);
}

template <class D, typename XT, int MT>
void launch_qgemv_mt(QmvLaunch L, bool nv, int64_t pairs, cudaStream_t s) {
  constexpr int R = qmv_rows<MT>();
  const QmvGrid g = qmv_layout(L, R, pairs);
  if constexpr (!std::is_same_v<XT, float>) {
    if (L.swiglu) {
      launch_pdl("qgemv_kernel", qgemv_kernel<D, XT, MT, R, R / 2>, g.grid, dim3(kQmvThreads), 0, s, L, nv, g.ks);
      return;
    }
  }
  launch_pdl("qgemv_kernel", qgemv_kernel<D, XT, MT, R, R>, g.grid, dim3(kQmvThreads), 0, s, L, nv, g.ks);
}

template <class D, typename XT>
void launch_qgemv_x(const QmvLaunch& L, bool nv, int64_t pairs, cudaStream_t s) {
  const int m = L.seg[0].m;
  if (m == 1)
    launch_qgemv_mt<D, XT, 1>(L, nv, pairs, s);
  else if (m == 2)
    launch_qgemv_mt<D, XT, 2>(L, nv, pairs, s);
  else if (m <= 4)
    launch_qgemv_mt<D, XT, 4>(L, nv, pairs, s);
  else
    launch_qgemv_mt<D, XT, 8>(L, nv, pairs, s);
}

// Instantiations: 8 decoders x 3 x dtypes x 4 row counts, plus the swiglu epilogue for bf16/f16 x (the
// scale and output dtypes are runtime).
template <class D>
void launch_qgemv(const QmvLaunch& L, int xcode, bool nv, int64_t pairs, cudaStream_t s) {
  if (xcode == kF32)
    launch_qgemv_x<D, float>(L, nv, pairs, s);
  else if (xcode == kBF16)
    launch_qgemv_x<D, __nv_bfloat16>(L, nv, pairs, s);
  else
    launch_qgemv_x<D, __half>(L, nv, pairs, s);
}

template <int BITS, int MT>
void launch_qgemv_i8_mt(QmvLaunch L, int64_t pairs, cudaStream_t s) {
  constexpr int R = qmv_rows<MT>();
  const QmvGrid g = qmv_layout(L, R, pairs);
  if (L.swiglu)
    launch_pdl("qgemv_i8_kernel", qgemv_i8_kernel<BITS, MT, R, R / 2>, g.grid, dim3(kQmvThreads), 0, s, L, g.ks);
  else
    launch_pdl("qgemv_i8_kernel", qgemv_i8_kernel<BITS, MT, R, R>, g.grid, dim3(kQmvThreads), 0, s, L, g.ks);
}

template <int BITS>
void launch_qgemv_i8(const QmvLaunch& L, int64_t pairs, cudaStream_t s) {
  const int m = L.seg[0].m;
  if (m == 1)
    launch_qgemv_i8_mt<BITS, 1>(L, pairs, s);
  else if (m == 2)
    launch_qgemv_i8_mt<BITS, 2>(L, pairs, s);
  else if (m <= 4)
    launch_qgemv_i8_mt<BITS, 4>(L, pairs, s);
  else
    launch_qgemv_i8_mt<BITS, 8>(L, pairs, s);
}

// Rows of W dequantized to f32 at a time in the prefill path (128 MiB).
constexpr int64_t kPanelElems = int64_t{1} << 25;

}  // namespace

void quantize(const Array& w, const QuantSpec& spec, float global_scale, Array& wq, Array& scales, Array& biases) {
  const char* op = "quantize";
  QuantizeArgs q{};
  q.mode = static_cast<int>(spec.mode);
  q.bits = spec.bits;
  q.gs = spec.group_size;
  q.wcode = float_code(w.dtype(), op);
  q.scode = spec.mode == QuantMode::affine ? float_code(scales.dtype(), op) : kF32;
  q.k = w.shape(-1);
  q.rows = q.k ? w.size() / q.k : 0;
  q.groups = q.k / q.gs;
  q.words = wq.shape(-1);
  q.enc = global_scale > 0 ? 448.0f * 6.0f / global_scale : 1.0f;  // the twin's expression, in float
  const int64_t total = q.rows * q.groups;
  if (total == 0) return;
  if (spec.mode == QuantMode::affine && (!biases.valid() || biases.dtype() != scales.dtype()))
    throw Error(format_error(op, "affine biases must match the scales' dtype"));
  cudaStream_t s = stream_of(wq);
  void* bp = biases.valid() ? biases.raw_data() : nullptr;
  dispatch_float(w.dtype(), op, [&](auto t) {
    using T = decltype(t);
    quantize_kernel<T><<<grid_for(total, 128), 128, 0, s>>>(w.data<T>(), q, wq.data<uint32_t>(), scales.raw_data(), bp);
  });
  check_launch("quantize_kernel");
}

void dequantize(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec, float global_scale,
                Array& out) {
  const char* op = "dequantize";
  DequantArgs a = dequant_args(wq, scales, biases, spec, global_scale, op);
  launch_dequantize(a, out.raw_data(), float_code(out.dtype(), op), stream_of(out));
}

namespace detail {

// (Declared where used: gather_qmm.cu.)
bool quantized_gemv_fits(const QuantSpec& spec, int64_t m) {
  return m >= 1 && m <= 8 && (spec.mode != QuantMode::affine || spec.group_size >= 32);
}

// The decode kernel's arguments for out [pairs * m, n] = x [., K] times the transposed matrices of wq (see
// quantized_gemv). `xa` receives x or, when x is not 16-byte aligned, an aligned copy (the activations' rows
// are read 16 bytes at a time; row lengths K * itemsize are multiples of 16, K being a multiple of the group
// size); the caller keeps it until the launch is queued.
QmvArgs qmv_args(const Array& x, const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec,
                 float global_scale, const Array& lhs, const Array& rhs, int64_t m, int64_t n, Array& out, Array& xa) {
  const char* op = "quantized_matmul";
  const bool affine = spec.mode == QuantMode::affine;
  xa = x;
  if (!aligned16(x.raw_data())) {
    xa = Array::empty(x.shape(), x.dtype(), x.device());
    LOOM_CUDA_CHECK(
        cudaMemcpyAsync(xa.raw_data(), x.raw_data(), x.nbytes(), cudaMemcpyDeviceToDevice, stream_of(out)));
  }
  const int64_t words = wq.shape(-1);
  QmvArgs a{};
  a.x = xa.raw_data();
  a.wq = wq.data<uint32_t>();
  a.scales = affine ? scales.raw_data() : nullptr;
  a.biases = affine ? biases.raw_data() : nullptr;
  a.sbytes = affine ? nullptr : scales.data<uint8_t>();
  a.out = out.raw_data();
  a.scode = affine ? float_code(scales.dtype(), op) : kF32;
  a.ocode = float_code(out.dtype(), op);
  a.m = static_cast<int>(m);
  a.n = n;
  a.k = words * 32 / spec.bits;
  a.words = words;
  a.groups = scales.shape(-1);
  a.gs = spec.group_size;
  a.gs_log2 = std::countr_zero(static_cast<unsigned>(spec.group_size));
  a.gmul = global_scale > 0 ? global_scale / (448.0f * 6.0f) : 1.0f;
  a.vec = aligned16(wq.raw_data()) && (words * 4) % 16 == 0;
  a.lhs = lhs.valid() ? lhs.data<int32_t>() : nullptr;
  a.rhs = rhs.valid() ? rhs.data<int32_t>() : nullptr;
  return a;
}

// Launches the decode kernel of `spec`'s format.
void launch_qgemv_spec(const QmvLaunch& L, const QuantSpec& spec, int xcode, int64_t pairs, cudaStream_t s) {
  switch (spec.mode) {
    case QuantMode::affine:
      switch (spec.bits) {
        case 2:
          return launch_qgemv<DecAffine<2>>(L, xcode, false, pairs, s);
        case 3:
          return launch_qgemv<DecAffine<3>>(L, xcode, false, pairs, s);
        case 4:
          return launch_qgemv<DecAffine<4>>(L, xcode, false, pairs, s);
        case 5:
          return launch_qgemv<DecAffine<5>>(L, xcode, false, pairs, s);
        case 6:
          return launch_qgemv<DecAffine<6>>(L, xcode, false, pairs, s);
        case 8:
          return launch_qgemv<DecAffine<8>>(L, xcode, false, pairs, s);
        default:
          break;
      }
      break;
    case QuantMode::mxfp4:
      return launch_qgemv<DecFp4>(L, xcode, false, pairs, s);
    case QuantMode::nvfp4:
      return launch_qgemv<DecFp4>(L, xcode, true, pairs, s);
    case QuantMode::mxfp8:
      return launch_qgemv<DecFp8>(L, xcode, false, pairs, s);
  }
  throw NotSupportedError(format_error("quantized_matmul", "no CUDA decode kernel for " + quant_spec_str(spec)));
}

// Whether the fast tier's decode kernel computes these products: QmmPrecision::fast (the default), affine 4
// or 8 bits with biases in the scales' dtype (group sizes >= 32, so K is a multiple of 32).
bool qgemv_fast_applies(const QuantSpec& spec, const Array& scales, const Array& biases) {
  return qmm_precision() == QmmPrecision::fast && spec.mode == QuantMode::affine &&
         (spec.bits == 4 || spec.bits == 8) && spec.group_size >= 32 && biases.valid() &&
         biases.dtype() == scales.dtype();
}

// The fast tier for L: quantizes every row of x (contiguous; L.seg[0].x is x or qmv_args' aligned copy) into
// stream-ordered temporaries, then launches the dp4a kernel over them.
void launch_qgemv_fast(QmvLaunch& L, const Array& x, int xcode, const QuantSpec& spec, int64_t pairs, cudaStream_t s) {
  const int64_t blocks = x.size() / 32;
  Array q, db;
  // The codes the kernel that wrote x stored beside it (act_int8.cuh), else a quantize_x_kernel launch.
  if (!act_int8::find(x, spec.bits == 4, q, db)) {
    q = Array::empty({blocks * 8}, Dtype::u32, x.device());
    db = Array::empty({blocks * 2}, Dtype::f32, x.device());
    const QxArgs qa{L.seg[0].x, blocks, q.data<uint32_t>(), reinterpret_cast<float2*>(db.data<float>()),
                    spec.bits == 4};
    const dim3 grid(static_cast<unsigned>((blocks + 127) / 128));
    if (xcode == kF32)
      launch_pdl("quantize_x_kernel", quantize_x_kernel<float>, grid, dim3(128), 0, s, qa);
    else if (xcode == kBF16)
      launch_pdl("quantize_x_kernel", quantize_x_kernel<__nv_bfloat16>, grid, dim3(128), 0, s, qa);
    else
      launch_pdl("quantize_x_kernel", quantize_x_kernel<__half>, grid, dim3(128), 0, s, qa);
  }
  for (int i = 0; i < L.nseg; ++i) {
    L.seg[i].x = q.raw_data();
    L.seg[i].xdb = reinterpret_cast<const float2*>(db.data<float>());
  }
  if (spec.bits == 4)
    launch_qgemv_i8<4>(L, pairs, s);
  else
    launch_qgemv_i8<8>(L, pairs, s);
}

// The decode kernels: out [pairs * m, n] = for each pair p, x rows lhs[p] * m .. (lhs[p] + 1) * m - 1 of
// x [., K] times matrix rhs[p] of wq [E * n, words] (scales/biases [E * n, groups]) transposed; without
// index arrays one pair, block 0, matrix 0. Every array contiguous; indices int32 on the device (read
// there, no host synchronisation). Dtypes as quantized_matmul takes them.
void quantized_gemv(const Array& x, const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec,
                    float global_scale, const Array& lhs, const Array& rhs, int64_t m, int64_t n, Array& out) {
  const int xcode = float_code(x.dtype(), "quantized_matmul");
  const int64_t pairs = lhs.valid() ? lhs.size() : 1;
  if (pairs == 0 || m == 0 || n == 0) return;
  Array xa;
  QmvLaunch L{};
  L.seg[0] = qmv_args(x, wq, scales, biases, spec, global_scale, lhs, rhs, m, n, out, xa);
  L.nseg = 1;
  if (qgemv_fast_applies(spec, scales, biases))
    launch_qgemv_fast(L, x, xcode, spec, pairs, stream_of(out));
  else
    launch_qgemv_spec(L, spec, xcode, pairs, stream_of(out));
}

}  // namespace detail

// out [M, N] = x [M, K] @ W.T (transpose) or x @ W. x and out: contiguous f32, bf16 or f16 (independently);
// affine scales/biases: contiguous f32, bf16 or f16 (the same dtype); fp modes: uint8 scales. Accumulates in
// f32 and rounds once into out's dtype (see the file comment).
void quantized_matmul(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                      const QuantSpec& spec, float global_scale, Array& out) {
  const char* op = "quantized_matmul";
  const auto io_code = [op](Dtype dt, const char* what) {
    if (dt != Dtype::f32 && dt != Dtype::bf16 && dt != Dtype::f16)
      throw NotSupportedError(format_error(op, std::string("the CUDA kernel takes ") + what +
                                                   " in float32, bfloat16 or float16, got " + std::string(name(dt))));
    return float_code(dt, op);
  };
  const int xcode = io_code(x.dtype(), "activations");
  const int ocode = io_code(out.dtype(), "an output");
  const bool affine = spec.mode == QuantMode::affine;
  if (affine) {
    io_code(scales.dtype(), "affine scales");
    if (!biases.valid() || biases.dtype() != scales.dtype())
      throw Error(format_error(op, "affine biases must match the scales' dtype"));
  } else if (scales.dtype() != Dtype::u8) {
    throw NotSupportedError(format_error(op, "the CUDA kernel takes uint8 scales for " +
                                                 std::string(quant_mode_name(spec.mode)) + ", got " +
                                                 std::string(name(scales.dtype()))));
  }
  const int64_t kx = x.shape(-1), m = kx ? x.size() / kx : 0;
  const int64_t words = wq.shape(-1), kq = words * 32 / spec.bits, wrows = wq.shape(0);
  const int64_t n = transpose ? wrows : kq;
  if (m == 0 || n == 0) return;
  cudaStream_t s = stream_of(out);
  if (kx == 0) {  // zero bits are +0 in every float dtype
    LOOM_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), s));
    return;
  }
  if (transpose && detail::quantized_gemv_fits(spec, m)) {
    detail::quantized_gemv(x, wq, scales, biases, spec, global_scale, Array(), Array(), m, n, out);
    return;
  }
  // A prefill's products tell the decode steps' producers which int8 layout to store (act_int8.cuh), so
  // that the first recorded step already has them.
  if (transpose && detail::qgemv_fast_applies(spec, scales, biases)) act_int8::want(spec.bits == 4);

  DequantArgs da = dequant_args(wq, scales, biases, spec, global_scale, op);
  const int64_t panel_rows = std::min(wrows, std::max<int64_t>(64, kPanelElems / std::max<int64_t>(1, kq)));
  auto panel_args = [&](int64_t r0, int64_t nb) {
    DequantArgs pa = da;
    pa.wq += r0 * words;
    pa.scales = static_cast<const char*>(da.scales) + r0 * da.groups * static_cast<int64_t>(scales.itemsize());
    if (pa.biases)
      pa.biases = static_cast<const char*>(da.biases) + r0 * da.groups * static_cast<int64_t>(biases.itemsize());
    pa.rows = nb;
    return pa;
  };
  if (transpose && xcode != kF32 && ocode == xcode) {
    // Half-precision prefill (bf16/f16 compute): panels of W dequantized to x's dtype and a tensor-core
    // GEMM with f32 accumulation, as the dense bf16 path multiplies (the weights take one rounding to
    // x's dtype, within the half-precision tolerance of the f32 twin).
    // (Panels as large as kPanelElems: smaller ones that would stay in L2 measured slower, the GEMMs
    // losing more than the traffic saved: Llama-3.1-8B-shaped 4-bit pp512 7.6k t/s at 2^25 elements,
    // 5.7-6.0k at 2^22-2^23, on an H100.)
    Array wp = Array::empty({panel_rows, kq}, x.dtype(), out.device());
    for (int64_t r0 = 0; r0 < wrows; r0 += panel_rows) {
      const int64_t nb = std::min(panel_rows, wrows - r0);
      launch_dequantize(panel_args(r0, nb), wp.raw_data(), xcode, s);
      // out[:, r0:r0+nb] = x [m, k] @ panel[nb, k]^T
      detail::gemm_rowmajor(out.device(), false, true, m, nb, kx, x.raw_data(), kx, wp.raw_data(), kq, x.dtype(), 0.0f,
                            static_cast<char*>(out.raw_data()) + r0 * static_cast<int64_t>(out.itemsize()), n,
                            out.dtype(), op);
    }
    return;
  }

  // Prefill in f32 / W without transpose: f32 panels of W (rows of the packed matrix), then cuBLAS in
  // f32, with x and the result in f32 temporaries when they are not f32.
  Array xf = x;
  if (xcode != kF32) {
    xf = Array::empty(x.shape(), Dtype::f32, out.device());
    loom::cuda::copy(x, xf);
  }
  Array of = out;
  if (ocode != kF32) of = Array::empty(out.shape(), Dtype::f32, out.device());
  const float* xp = xf.data<float>();
  float* outp = of.data<float>();
  const int64_t panel = panel_rows;
  Array wp = Array::empty({panel, kq}, Dtype::f32, out.device());
  for (int64_t r0 = 0; r0 < wrows; r0 += panel) {
    const int64_t nb = std::min(panel, wrows - r0);
    launch_dequantize(panel_args(r0, nb), wp.raw_data(), kF32, s);
    if (transpose) {
      // out[:, r0:r0+nb] = x [m, k] @ panel[nb, k]^T
      detail::sgemm_rowmajor(out.device(), false, true, m, nb, kx, xp, kx, wp.data<float>(), kq, 0.0f, outp + r0, n,
                             op);
    } else {
      // out += x[:, r0:r0+nb] @ panel[nb, n]
      detail::sgemm_rowmajor(out.device(), false, false, m, n, nb, xp + r0, kx, wp.data<float>(), kq,
                             r0 == 0 ? 0.0f : 1.0f, outp, n, op);
    }
  }
  if (ocode != kF32) loom::cuda::copy(of, out);
}

// Decode shapes (M <= 8 rows, as quantized_matmul's decode path takes them; up to kQmvSegs products) run
// as one launch of the decode kernel, the row groups of all products side by side (see QmvLaunch); other
// shapes run one quantized_matmul per product (and the swiglu kernel).
void quantized_matmul_group(const Array& x, const std::vector<QuantizedOperand>& ws, bool swiglu,
                            std::vector<Array>& outs) {
  const QuantSpec& spec = ws.front().spec;
  const int64_t kx = x.shape(-1), m = kx ? x.size() / kx : 0;
  const float gs0 = ws.front().global_scale;
  bool fused = kx > 0 && static_cast<int>(ws.size()) <= kQmvSegs && detail::quantized_gemv_fits(spec, m) &&
               (!swiglu || x.dtype() != Dtype::f32);  // (f32 x has no swiglu instantiation)
  for (const QuantizedOperand& w : ws) fused = fused && (!swiglu || w.global_scale == gs0);
  if (!fused) {
    run_product_group(
        ws.size(), swiglu, outs,
        [&](size_t i, Array& out) {
          quantized_matmul(x, ws[i].wq, ws[i].scales, ws[i].biases, true, ws[i].spec, ws[i].global_scale, out);
        },
        [](const Array& g, const Array& u, Array& out) { loom::cuda::swiglu(g, u, out); });
    return;
  }
  if (m == 0) return;
  std::vector<Array> xa(ws.size());
  QmvLaunch L{};
  L.nseg = static_cast<int>(ws.size());
  L.swiglu = swiglu;
  bool fast = true;
  for (size_t i = 0; i < ws.size(); ++i) {
    Array& o = outs[swiglu ? 0 : i];
    L.seg[i] = detail::qmv_args(x, ws[i].wq, ws[i].scales, ws[i].biases, ws[i].spec, ws[i].global_scale, Array(), Array(), m,
                        ws[i].wq.shape(0), o, xa[i]);
    fast = fast && detail::qgemv_fast_applies(ws[i].spec, ws[i].scales, ws[i].biases);
  }
  const int xcode = float_code(x.dtype(), "quantized_matmul");
  if (fast)
    detail::launch_qgemv_fast(L, x, xcode, spec, 1, stream_of(outs.front()));
  else
    detail::launch_qgemv_spec(L, spec, xcode, 1, stream_of(outs.front()));
}

}  // namespace loom::cuda
