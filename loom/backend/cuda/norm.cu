// Normalisation kernels on CUDA: rms_norm, add_rms_norm, layer_norm over the last axis of contiguous
// rows (the op makes x contiguous). CPU twin: backend/cpu/norm.cpp — same formulas and rounding points:
// statistics in f32, inv = 1 / sqrt(stat / d + eps), y = x * inv * w (f32, one rounding to the output
// dtype at the end); add_rms_norm rounds x + residual to the sum's dtype and normalises that rounded sum.
// A row belongs to `rt` threads (32 to 1024, the fewest that hold the row at V elements each: 8, or 2-4 for
// fewer rows than multiprocessors, see norm_launch; blocks of 128 threads hold several short rows). Each
// thread loads its V elements of a chunk at once into registers, so a row costs one memory round trip per
// pass instead of one per element (a loop whose stores might alias the next loads serialises them: a
// single 4096-wide add_rms_norm row took 19 us that way on an H100). Rows of up to rt * V elements (8192
// at V = 8) stay in registers between the passes; longer ones are walked in chunks and read again.
// add_rms_norm's decode rows of the common dtypes take add_rms_norm_split_kernel instead: one row over
// d / 256 blocks.
#include <climits>
#include <cmath>
#include <type_traits>

#include "loom/backend/cuda/act_int8.cuh"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

constexpr int kVpt = 8;               // row elements per thread and chunk (at most; see norm_launch)
constexpr int kMaxRowThreads = 1024;  // threads of the widest row
constexpr int kMinBlock = 128;        // short rows share blocks of this many threads

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

// out[i] = v rounded once to dtype dt.
__device__ __forceinline__ void store_as(void* p, Fdt dt, int64_t i, float v) {
  switch (dt) {
    case Fdt::f16:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      break;
    case Fdt::bf16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
  }
}

// An operand whose dtype is known at compile time (D a float type: a plain load or store) or read through
// its runtime dtype (D = void: a three-way switch per element). The common decode combinations take the
// typed form: a one-row add_rms_norm spent ~250 instructions per element in the switches and 64-bit
// index math (16k warp instructions for one 2048-wide row, issue-bound on its one SM; ncu on an H100).
template <typename D>
__device__ __forceinline__ float ldv(const FVec& v, int64_t i) {
  if constexpr (std::is_void_v<D>)
    return ld(v, i);
  else
    return to_f(static_cast<const D*>(v.p)[i * v.stride]);
}

template <typename D>
__device__ __forceinline__ void stv(void* p, Fdt dt, int64_t i, float v) {
  if constexpr (std::is_void_v<D>)
    store_as(p, dt, i, v);
  else
    static_cast<D*>(p)[i] = from_f<D>(v);
}

// v rounded to the dtype stv stores (the value a reader of the output sees).
template <typename D>
__device__ __forceinline__ float rounded(Fdt dt, float v) {
  if constexpr (std::is_void_v<D>) {
    switch (dt) {
      case Fdt::f16:
        return __half2float(__float2half_rn(v));
      case Fdt::bf16:
        return __bfloat162float(__float2bfloat16_rn(v));
      default:
        return v;
    }
  } else {
    return to_f(from_f<D>(v));
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

// Which row a thread works on and where it sits in it. Every thread of a block reaches the same
// barriers (threads of rows past the end included, with `live` false).
struct RowSlot {
  int rt;        // threads per row
  int lane;      // position in the row
  int sub;       // row within the block
  int64_t row;   // global row
  bool live;     // row < rows
  __device__ RowSlot(int rt_, int64_t rows) : rt(rt_) {
    lane = threadIdx.x % rt;
    sub = threadIdx.x / rt;
    row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / rt) + sub;
    live = row < rows;
  }
  // Element of chunk c, slot j handled by this thread (V elements per thread and chunk).
  template <int V>
  __device__ int64_t at(int64_t c, int j) const {
    return c * rt * V + j * rt + lane;
  }
};

// Sum of v over the threads of the slot's row (warp shuffles, then shared memory across its warps).
// `red` holds one float per warp of the block; the trailing barrier lets the caller reuse it.
__device__ __forceinline__ float row_sum(float v, const RowSlot& s, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (s.rt == 32) return v;
  const int warp = threadIdx.x >> 5, wpr = s.rt >> 5;
  if ((threadIdx.x & 31) == 0) red[warp] = v;
  __syncthreads();
  float t = 0;
  for (int w = 0; w < wpr; ++w) t += red[s.sub * wpr + w];
  __syncthreads();
  return t;
}

// The weight values of a single-chunk row (the common case), loaded before the reduction so that their
// latency overlaps it; longer rows read the weights where they use them.
template <int V, typename WD = void>
__device__ __forceinline__ void load_weights(const FVec& w, const RowSlot& s, int64_t chunks, int64_t d,
                                             float (&wv)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t i = s.template at<V>(0, j);
    wv[j] = w.p && chunks == 1 && s.live && i < d ? ldv<WD>(w, i) : 0.0f;
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kMaxRowThreads)
    rms_norm_kernel(const T* __restrict__ x, FVec w, float eps, T* __restrict__ out, int64_t rows, int64_t d, int rt) {
  __shared__ float red[kMaxRowThreads / 32];
  pdl_wait();
  pdl_trigger();
  const RowSlot s(rt, rows);
  const T* xr = x + (s.live ? s.row : 0) * d;
  const int64_t chunks = (d + int64_t{rt} * V - 1) / (int64_t{rt} * V);
  float v[V];
  float ss = 0;
  for (int64_t c = 0; c < chunks; ++c) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      v[j] = s.live && i < d ? to_f(xr[i]) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) ss += v[j] * v[j];
  }
  float wv[V];
  load_weights(w, s, chunks, d, wv);  // in flight during the reduction
  ss = row_sum(ss, s, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  if (!s.live) return;
  T* yr = out + s.row * d;
  for (int64_t c = 0; c < chunks; ++c) {
    if (chunks > 1) {  // the last chunk is still in registers
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const int64_t i = s.template at<V>(c, j);
        v[j] = i < d ? to_f(xr[i]) : 0.0f;
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      if (i < d) yr[i] = from_f<T>(w.p ? v[j] * inv * (chunks == 1 ? wv[j] : ld(w, i)) : v[j] * inv);
    }
  }
}

// sum has dtype T (the promotion of x's and r's), out dtype odt; x, r, w and out have dtypes XD, RD, WD, OD
// when those are float types, else their runtime ones (FVec, odt). With q8.q set (d a multiple of 32), the
// output's int8 activation blocks too (act_int8.cuh): the 32 lanes of a warp hold 32 consecutive elements
// of a row at every (chunk, slot), one block, whole warps in or past the row.
template <typename T, int V, typename XD = void, typename RD = void, typename WD = void, typename OD = void>
__global__ void __launch_bounds__(kMaxRowThreads)
    add_rms_norm_kernel(FVec x, FVec res, FVec w, float eps, void* out, Fdt odt, T* sum, int64_t rows, int64_t d,
                        int rt, Int8Out q8) {
  __shared__ float red[kMaxRowThreads / 32];
  pdl_wait();
  pdl_trigger();
  const RowSlot s(rt, rows);
  const int64_t base = (s.live ? s.row : 0) * d;
  const int64_t chunks = (d + int64_t{rt} * V - 1) / (int64_t{rt} * V);
  float v[V];
  float ss = 0;
  // The sum x + r rounded to T, as the unfused pair would round it (normalised from that rounding).
  auto load_sum = [&](int64_t c) {
    float a[V], b[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      const bool in = s.live && i < d;
      a[j] = in ? ldv<XD>(x, base + i) : 0.0f;
      b[j] = in ? ldv<RD>(res, base + i) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = to_f(from_f<T>(a[j] + b[j]));
  };
  for (int64_t c = 0; c < chunks; ++c) {
    load_sum(c);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      if (s.live && i < d) sum[base + i] = from_f<T>(v[j]);
      ss += v[j] * v[j];
    }
  }
  float wv[V];
  load_weights<V, WD>(w, s, chunks, d, wv);  // in flight during the reduction
  ss = row_sum(ss, s, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  if (!s.live) return;
  extern __shared__ float q8sm[];  // 32 * V floats per warp when q8.q is set
  for (int64_t c = 0; c < chunks; ++c) {
    if (chunks > 1) load_sum(c);  // recomputed rather than re-read from `sum`: the same rounding
    float y[V];
    int nvalid = 0;  // slots of this chunk inside the row: a prefix, the same for the warp's lanes
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      y[j] = 0.0f;
      if (i >= d) continue;
      ++nvalid;
      y[j] = w.p ? v[j] * inv * (chunks == 1 ? wv[j] : ldv<WD>(w, i)) : v[j] * inv;
      stv<OD>(out, odt, base + i, y[j]);
      y[j] = rounded<OD>(odt, y[j]);
    }
    if (q8.q)
      q8_store_blocks<V>(q8, (base + s.template at<V>(c, 0) - (s.lane & 31)) >> 5, s.rt >> 5, nvalid, y,
                         q8sm + (threadIdx.x >> 5) * 32 * V);
  }
}

// add_rms_norm for decode rows, one row over several blocks (d a multiple of kSplitSlice; typed operands,
// 16-byte aligned rows): block b of row r (grid d / kSplitSlice x rows) first takes the whole row's sum
// of squares, every block in the same order (so all blocks of a row find the same inv, bit for bit), then
// writes only its slice of kSplitSlice elements: the sum, the output and its int8 blocks. A row on one
// block of 1024 threads issues all of its instructions on one multiprocessor (ncu: 7.2 us for a 4096-wide
// row, against a ~3 us floor for any kernel); here a 4096-wide row is spread over 16, and each re-reads
// the 24 KB row from L2. Measured on an H100 (tg128 t/s, one block per row -> split): Llama-3.1-8B-shaped
// 4-bit 375 -> 409, 8-bit 258 -> 270; Llama-3.2-1B-shaped 4-bit 1384 -> 1535, 8-bit 1086 -> 1177, bf16
// 740 -> 780.
constexpr int kSplitThreads = 128, kSplitV = 2, kSplitSlice = kSplitThreads * kSplitV;

template <typename T, typename XD, typename RD, typename WD, typename OD>
__global__ void __launch_bounds__(kSplitThreads)
    add_rms_norm_split_kernel(const XD* __restrict__ x, const RD* __restrict__ res, const WD* __restrict__ w, float eps,
                              OD* __restrict__ out, T* __restrict__ sum, int64_t d, Int8Out q8) {
  __shared__ float red[kSplitThreads / 32];
  __shared__ float q8sm[kSplitThreads * kSplitV];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t base = static_cast<int64_t>(blockIdx.y) * d, first = static_cast<int64_t>(blockIdx.x) * kSplitSlice;
  // this block's slice: element first + j * kSplitThreads + threadIdx.x of slot j (32 consecutive per warp)
  pdl_wait();
  pdl_trigger();
  float wv[kSplitV];  // in flight during the first pass
#pragma unroll
  for (int j = 0; j < kSplitV; ++j) wv[j] = to_f(w[first + j * kSplitThreads + threadIdx.x]);
  auto rounded_sum = [](float a, float b) { return to_f(from_f<T>(a + b)); };
  float ss = 0.0f;
  for (int64_t i = int64_t{threadIdx.x} * 8; i < d; i += kSplitThreads * 8) {
    float a[8], b[8];
    load_x8(x + base + i, a);
    load_x8(res + base + i, b);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float v = rounded_sum(a[j], b[j]);
      ss += v * v;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (lane == 0) red[warp] = ss;
  __syncthreads();
  ss = 0.0f;
#pragma unroll
  for (int i = 0; i < kSplitThreads / 32; ++i) ss += red[i];
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  float y[kSplitV];
#pragma unroll
  for (int j = 0; j < kSplitV; ++j) {
    const int64_t i = base + first + j * kSplitThreads + threadIdx.x;
    const float v = rounded_sum(to_f(x[i]), to_f(res[i]));
    sum[i] = from_f<T>(v);
    const OD o = from_f<OD>(v * inv * wv[j]);
    out[i] = o;
    y[j] = to_f(o);
  }
  if (q8.q)
    q8_store_blocks<kSplitV>(q8, (base + first + warp * 32) >> 5, kSplitThreads / 32, kSplitV, y,
                             q8sm + warp * 32 * kSplitV);
}

template <typename T, int V>
__global__ void __launch_bounds__(kMaxRowThreads)
    layer_norm_kernel(const T* __restrict__ x, FVec w, FVec b, float eps, T* __restrict__ out, int64_t rows, int64_t d,
                      int rt) {
  __shared__ float red[kMaxRowThreads / 32];
  const RowSlot s(rt, rows);
  const T* xr = x + (s.live ? s.row : 0) * d;
  const int64_t chunks = (d + int64_t{rt} * V - 1) / (int64_t{rt} * V);
  float v[V];
  auto load = [&](int64_t c) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      v[j] = s.live && i < d ? to_f(xr[i]) : 0.0f;
    }
  };
  // Two passes (mean, then the centred sum of squares) as the CPU does: no cancellation for rows
  // with a large mean.
  float sm = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    load(c);
#pragma unroll
    for (int j = 0; j < V; ++j) sm += v[j];
  }
  const float mean = row_sum(sm, s, red) / static_cast<float>(d);
  float var = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    if (chunks > 1) load(c);
#pragma unroll
    for (int j = 0; j < V; ++j)
      if (s.template at<V>(c, j) < d) var += (v[j] - mean) * (v[j] - mean);
  }
  var = row_sum(var, s, red) / static_cast<float>(d);
  const float inv = 1.0f / sqrtf(var + eps);
  if (!s.live) return;
  T* yr = out + s.row * d;
  for (int64_t c = 0; c < chunks; ++c) {
    if (chunks > 1) load(c);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t i = s.template at<V>(c, j);
      if (i >= d) continue;
      float y = (v[j] - mean) * inv;
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

// Threads per row, elements per thread (vpt), threads per block and blocks for `rows` rows of width d.
struct NormLaunch {
  int rt, vpt, threads;
  unsigned blocks;
};

// Many rows: 8 elements per thread (fewer threads per row, more rows per SM). Fewer rows than the device
// has multiprocessors (decode: one row per token): the row's latency is the kernel's, so it gets up to
// 1024 threads at 2 or 4 elements each, its instructions spread over 32 warps instead of 8 (measured on
// an H100 at model level: 1B 4-bit tg +2%, 8B ~+1%; the larger cost was the per-element instruction
// count, which the typed add_rms_norm instances below remove).
NormLaunch norm_launch(int64_t rows, int64_t d, int sms) {
  int vpt = kVpt;
  if (rows < sms) vpt = d <= 2 * kMaxRowThreads ? 2 : (d <= 4 * kMaxRowThreads ? 4 : kVpt);
  int rt = 32;
  while (rt < kMaxRowThreads && int64_t{rt} * vpt < d) rt *= 2;
  const int threads = rt < kMinBlock ? kMinBlock : rt;
  const int64_t per_block = threads / rt;
  const int64_t blocks = (rows + per_block - 1) / per_block;
  if (blocks > INT32_MAX) throw NotSupportedError("normalisation: too many rows for one CUDA launch");
  return {rt, vpt, threads, static_cast<unsigned>(blocks)};
}

// Dynamic shared memory of add_rms_norm_kernel: q8_store_blocks' 32 * V floats per warp, when it stores codes.
size_t q8_smem(const Int8Out& q8, const NormLaunch& l) {
  return q8.q ? static_cast<size_t>(l.threads) * l.vpt * sizeof(float) : 0;
}

// Calls f(std::integral_constant<int, V>) for the launch's elements per thread.
template <typename F>
void with_vpt(const NormLaunch& l, F&& f) {
  if (l.vpt == 2)
    f(std::integral_constant<int, 2>{});
  else if (l.vpt == 4)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, kVpt>{});
}

}  // namespace

void rms_norm(const Array& x, const Array& weight, float eps, Array& out) {
  int64_t d = x.shape().back(), rows = row_count(x);
  if (rows == 0 || d == 0) return;
  FVec w = fvec_of(weight, "rms_norm", "weight");
  const NormLaunch l = norm_launch(rows, d, sm_count(out.device()));
  cudaStream_t st = stream_of(out);
  dispatch_float(out.dtype(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    with_vpt(l, [&](auto v) {
      launch_pdl("rms_norm", rms_norm_kernel<T, decltype(v)::value>, l.blocks, l.threads, 0, st,
                 static_cast<const T*>(x.raw_data()), w, eps, static_cast<T*>(out.raw_data()), rows, d, l.rt);
    });
  });
  check_launch("rms_norm");
}

void add_rms_norm(const Array& x, const Array& residual, const Array& weight, float eps, Array& out, Array& sum) {
  int64_t d = x.shape().back(), rows = row_count(x);
  if (rows == 0 || d == 0) return;
  FVec xv = fvec_of(x, "add_rms_norm", "input"), rv = fvec_of(residual, "add_rms_norm", "residual");
  xv.stride = rv.stride = 1;  // contiguous rows, indexed flat
  FVec w = fvec_of(weight, "add_rms_norm", "weight");
  const NormLaunch l = norm_launch(rows, d, sm_count(out.device()));
  const Fdt odt = fdt_of(out.dtype(), "add_rms_norm", "output");
  cudaStream_t stream = stream_of(out);
  // Decode rows also give the fast tier's int8 activations when it wants them (act_int8.cuh).
  const Int8Out q8 = rows <= 8 && d % 32 == 0 ? act_int8::offer(out) : Int8Out{};
  // Typed instances for the decode step's combinations (bf16 compute: a bf16 branch output onto the f32
  // residual stream, or everything bf16; f32 compute), the runtime-dtype kernel for the rest. Decode rows
  // of a typed combination with a contiguous weight and 16-byte aligned rows take the split kernel.
  const Dtype xd = x.dtype(), rd = residual.dtype(), sd = sum.dtype(), od = out.dtype();
  const Dtype wd = weight.valid() ? weight.dtype() : Dtype::bool_;
  auto run = [&](auto tag, auto xt, auto rt, auto wt, auto ot) {
    using T = decltype(tag);
    with_vpt(l, [&](auto v) {
      launch_pdl("add_rms_norm",
                 add_rms_norm_kernel<T, decltype(v)::value, decltype(xt), decltype(rt), decltype(wt), decltype(ot)>,
                 l.blocks, l.threads, q8_smem(q8, l), stream, xv, rv, w, eps, out.raw_data(), odt,
                 static_cast<T*>(sum.raw_data()), rows, d, l.rt, q8);
    });
  };
  // Calls f(T, XD, RD, WD, OD) for the typed combinations; false for the others.
  auto typed = [&](auto&& f) {
    using bf16 = __nv_bfloat16;
    if (xd == Dtype::bf16 && rd == Dtype::f32 && sd == Dtype::f32 && wd == Dtype::bf16 && od == Dtype::bf16)
      f(float{}, bf16{}, float{}, bf16{}, bf16{});
    else if (xd == Dtype::bf16 && rd == Dtype::bf16 && sd == Dtype::bf16 && wd == Dtype::bf16 && od == Dtype::bf16)
      f(bf16{}, bf16{}, bf16{}, bf16{}, bf16{});
    else if (xd == Dtype::f32 && rd == Dtype::f32 && sd == Dtype::f32 && wd == Dtype::f32 && od == Dtype::f32)
      f(float{}, float{}, float{}, float{}, float{});
    else
      return false;
    return true;
  };
  auto split = [&](auto tag, auto xt, auto rt, auto wt, auto ot) {
    using T = decltype(tag);
    using XD = decltype(xt);
    using RD = decltype(rt);
    using WD = decltype(wt);
    using OD = decltype(ot);
    launch_pdl("add_rms_norm", add_rms_norm_split_kernel<T, XD, RD, WD, OD>,
               dim3(static_cast<unsigned>(d / kSplitSlice), static_cast<unsigned>(rows)), dim3(kSplitThreads), 0,
               stream, static_cast<const XD*>(x.raw_data()), static_cast<const RD*>(residual.raw_data()),
               static_cast<const WD*>(weight.raw_data()), eps, static_cast<OD*>(out.raw_data()),
               static_cast<T*>(sum.raw_data()), d, q8);
  };
  auto aligned = [](const Array& a) { return reinterpret_cast<uintptr_t>(a.raw_data()) % 16 == 0; };
  const bool splits = rows < sm_count(out.device()) && d % kSplitSlice == 0 && d >= 4 * kSplitSlice && aligned(x) &&
                      aligned(residual) && weight.valid() && weight.ndim() == 1 && weight.strides()[0] == 1;
  if (!(splits && typed(split)) && !typed(run)) {
    dispatch_float(sd, "add_rms_norm", [&](auto tag) {
      using T = decltype(tag);
      with_vpt(l, [&](auto v) {
        launch_pdl("add_rms_norm", add_rms_norm_kernel<T, decltype(v)::value>, l.blocks, l.threads, q8_smem(q8, l),
                   stream, xv, rv, w, eps, out.raw_data(), odt, static_cast<T*>(sum.raw_data()), rows, d, l.rt, q8);
      });
    });
  }
  check_launch("add_rms_norm");
}

void layer_norm(const Array& x, const Array& weight, const Array& bias, float eps, Array& out) {
  int64_t d = x.shape().back(), rows = row_count(x);
  if (rows == 0 || d == 0) return;
  // The op passes weight and bias as given (possibly strided 1-D views): FVec carries the stride.
  FVec w = fvec_of(weight, "layer_norm", "weight"), b = fvec_of(bias, "layer_norm", "bias");
  const NormLaunch l = norm_launch(rows, d, sm_count(out.device()));
  cudaStream_t st = stream_of(out);
  dispatch_float(out.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    with_vpt(l, [&](auto v) {
      layer_norm_kernel<T, decltype(v)::value><<<l.blocks, l.threads, 0, st>>>(
          static_cast<const T*>(x.raw_data()), w, b, eps, static_cast<T*>(out.raw_data()), rows, d, l.rt);
    });
  });
  check_launch("layer_norm");
}

}  // namespace loom::cuda
