// CUDA row reductions over the last axis of contiguous [rows, n] data (reduce_last,
// arg_reduce_last, softmax_last, logsumexp_last) and the row gather take_rows. CPU twin:
// loom/backend/cpu/reduce.cpp. The ops layer moves reduced axes last and makes the input contiguous.
// A "team" reduces one row: a warp for short rows (several rows per block), the whole block for
// long ones; partial results combine with warp shuffles, then across warps through shared memory.
// Arg-reductions of a few very long rows (argmax over a vocabulary) split each row across blocks.
// Floating inputs accumulate in f32 (logsumexp's sum in f64, as the CPU), integers in int64. The
// summation order differs from the CPU's sequential loop, so float sums agree to rounding only.
#include <algorithm>
#include <cstdint>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {
namespace {

// ---- typed row access ------------------------------------------------------------------------------
// The common float dtypes get typed loads and stores; everything else goes through the runtime
// switch. Kernels are templated on these, so each exists in 4 variants, not one per dtype pair.

template <typename T>
struct TypedIn {
  const T* p;
  __device__ __forceinline__ float f(int64_t i) const { return to_f(p[i]); }
};
struct AnyIn {
  const void* p;
  Dtype dt;
  __device__ __forceinline__ float f(int64_t i) const { return load_f(p, dt, i); }
  __device__ __forceinline__ int64_t i(int64_t k) const { return load_i(p, dt, k); }
};
template <typename T>
struct TypedOut {
  T* p;
  __device__ __forceinline__ void f(int64_t i, float v) const { p[i] = from_f<T>(v); }
  __device__ __forceinline__ void d(int64_t i, double v) const { p[i] = from_f<T>(static_cast<float>(v)); }
};
struct AnyOut {
  void* p;
  Dtype dt;
  __device__ __forceinline__ void f(int64_t i, float v) const { store_d(p, dt, i, v); }
  __device__ __forceinline__ void d(int64_t i, double v) const { store_d(p, dt, i, v); }
  __device__ __forceinline__ void i(int64_t k, int64_t v) const { store_i(p, dt, k, v); }
};

// ---- teams -----------------------------------------------------------------------------------------

// kBlock: the whole block reduces one row at a time; otherwise each warp reduces its own row.
template <bool kBlock>
struct Team {
  static __device__ __forceinline__ int rank() { return kBlock ? threadIdx.x : threadIdx.x & 31; }
  static __device__ __forceinline__ int size() { return kBlock ? blockDim.x : 32; }
  static __device__ __forceinline__ int64_t first_row() {
    return kBlock ? blockIdx.x : int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
  }
  static __device__ __forceinline__ int64_t row_step() {
    return kBlock ? gridDim.x : int64_t{gridDim.x} * (blockDim.x / 32);
  }
};

// Combines v over the team; every thread of the team gets the result. Ops need only be
// associative and commutative up to the values they produce.
template <typename V, typename Op>
__device__ __forceinline__ V warp_reduce(V v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <bool kBlock, typename V, typename Op>
__device__ __forceinline__ V team_reduce(V v, Op op) {
  v = warp_reduce(v, op);
  if constexpr (kBlock) {
    __shared__ V partial[32];
    int warps = blockDim.x / 32;
    __syncthreads();  // the previous call's readers are done with `partial`
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    v = partial[0];
    for (int w = 1; w < warps; ++w) v = op(v, partial[w]);  // same order in every thread
  }
  return v;
}

#define LOOM_FOR_ROWS(row, rows) \
  for (int64_t row = Team<kBlock>::first_row(); row < (rows); row += Team<kBlock>::row_step())

// Calls f(i, x_i) for the team's columns i of the row starting at element `base`, each thread in
// increasing i (the arg-reductions' first-index rule relies on it). The runtime-dtype loader reads
// one element per step.
template <bool kBlock, typename In, typename F>
__device__ __forceinline__ void scan_row(const In& in, int64_t base, int64_t n, F&& f) {
  for (int64_t i = Team<kBlock>::rank(); i < n; i += Team<kBlock>::size()) f(i, in.f(base + i));
}

// Typed rows are read in 16-byte packs, kPacks per thread at a time: a long row handled by one
// block (argmax or softmax over a vocabulary) is bound by the bytes each SM keeps in flight.
// Elements before the first 16-byte boundary and after the last full pack are read one by one.
template <bool kBlock, typename T, typename F>
__device__ __forceinline__ void scan_row(const TypedIn<T>& in, int64_t base, int64_t n, F&& f) {
  constexpr int kN = Pack<T>::kN, kPacks = kBlock ? 4 : 1;  // warp rows are short (<= 1024)
  const T* row = in.p + base;
  const int64_t rank = Team<kBlock>::rank(), size = Team<kBlock>::size();
  auto addr = reinterpret_cast<uintptr_t>(row);
  int64_t head = addr % sizeof(T) != 0 ? n : static_cast<int64_t>((16 - addr % 16) % 16 / sizeof(T));
  if (head > n) head = n;
  for (int64_t i = rank; i < head; i += size) f(i, to_f(row[i]));
  const Pack<T>* packs = reinterpret_cast<const Pack<T>*>(row + head);
  int64_t np = (n - head) / kN, p = rank;
  for (; p + (kPacks - 1) * size < np; p += kPacks * size) {
    Pack<T> x[kPacks];
#pragma unroll
    for (int u = 0; u < kPacks; ++u) x[u] = packs[p + u * size];
#pragma unroll
    for (int u = 0; u < kPacks; ++u)
#pragma unroll
      for (int k = 0; k < kN; ++k) f(head + (p + u * size) * kN + k, to_f(x[u].v[k]));
  }
  for (; p < np; p += size) {
    Pack<T> x = packs[p];
#pragma unroll
    for (int k = 0; k < kN; ++k) f(head + p * kN + k, to_f(x.v[k]));
  }
  for (int64_t i = head + np * kN + rank; i < n; i += size) f(i, to_f(row[i]));
}

// out[base + i] = g(in[base + i]) over the row. Same-typed rows with the same alignment move in
// 16-byte packs both ways (scalar stores of neighbouring elements by neighbouring threads would
// touch eight times the memory sectors per instruction).
template <bool kBlock, typename In, typename Out, typename G>
__device__ __forceinline__ void map_row_scalar(const In& in, const Out& out, int64_t base, int64_t n, G&& g) {
  for (int64_t i = Team<kBlock>::rank(); i < n; i += Team<kBlock>::size()) out.f(base + i, g(in.f(base + i)));
}
template <bool kBlock, typename In, typename Out, typename G>
__device__ __forceinline__ void map_row(const In& in, const Out& out, int64_t base, int64_t n, G&& g) {
  map_row_scalar<kBlock>(in, out, base, n, g);
}
template <bool kBlock, typename T, typename G>
__device__ __forceinline__ void map_row(const TypedIn<T>& in, const TypedOut<T>& out, int64_t base, int64_t n, G&& g) {
  constexpr int kN = Pack<T>::kN;
  const T* src = in.p + base;
  T* dst = out.p + base;
  auto addr = reinterpret_cast<uintptr_t>(src);
  if (addr % sizeof(T) != 0 || addr % 16 != reinterpret_cast<uintptr_t>(dst) % 16) {
    map_row_scalar<kBlock>(in, out, base, n, g);
    return;
  }
  const int64_t rank = Team<kBlock>::rank(), size = Team<kBlock>::size();
  int64_t head = static_cast<int64_t>((16 - addr % 16) % 16 / sizeof(T));
  if (head > n) head = n;
  for (int64_t i = rank; i < head; i += size) dst[i] = from_f<T>(g(to_f(src[i])));
  int64_t np = (n - head) / kN;
  const Pack<T>* ps = reinterpret_cast<const Pack<T>*>(src + head);
  Pack<T>* pd = reinterpret_cast<Pack<T>*>(dst + head);
  for (int64_t p = rank; p < np; p += size) {
    Pack<T> x = ps[p];
#pragma unroll
    for (int k = 0; k < kN; ++k) x.v[k] = from_f<T>(g(to_f(x.v[k])));
    pd[p] = x;
  }
  for (int64_t i = head + np * kN + rank; i < n; i += size) dst[i] = from_f<T>(g(to_f(src[i])));
}

// ---- reduce_last -----------------------------------------------------------------------------------

// The CPU's float accumulation step (max/min propagate NaN).
__device__ __forceinline__ float combine_f(ReduceOp op, float a, float b) {
  switch (op) {
    case ReduceOp::sum: return a + b;
    case ReduceOp::prod: return a * b;
    case ReduceOp::max: return (b > a || b != b) ? b : a;
    case ReduceOp::min: return (b < a || b != b) ? b : a;
  }
  return a;
}
__device__ __forceinline__ float identity_f(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return 0.0f;
    case ReduceOp::prod: return 1.0f;
    case ReduceOp::max: return -INFINITY;
    case ReduceOp::min: return INFINITY;
  }
  return 0.0f;
}

// int64 accumulation with wrapping sum/prod.
__device__ __forceinline__ int64_t combine_i(ReduceOp op, int64_t a, int64_t b) {
  switch (op) {
    case ReduceOp::sum: return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
    case ReduceOp::prod: return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
    case ReduceOp::max: return a > b ? a : b;
    case ReduceOp::min: return a < b ? a : b;
  }
  return a;
}
__device__ __forceinline__ int64_t identity_i(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return 0;
    case ReduceOp::prod: return 1;
    case ReduceOp::max: return INT64_MIN;
    case ReduceOp::min: return INT64_MAX;
  }
  return 0;
}

template <bool kBlock, typename In, typename Out>
__global__ void reduce_float_kernel(ReduceOp op, In in, Out out, int64_t rows, int64_t n) {
  LOOM_FOR_ROWS(row, rows) {
    float a = identity_f(op);
    scan_row<kBlock>(in, row * n, n, [&](int64_t, float x) { a = combine_f(op, a, x); });
    a = team_reduce<kBlock>(a, [op](float x, float y) { return combine_f(op, x, y); });
    if (Team<kBlock>::rank() == 0) out.f(row, a);
  }
}

template <bool kBlock>
__global__ void reduce_int_kernel(ReduceOp op, AnyIn in, AnyOut out, int64_t rows, int64_t n) {
  LOOM_FOR_ROWS(row, rows) {
    int64_t a = identity_i(op);
    for (int64_t i = Team<kBlock>::rank(); i < n; i += Team<kBlock>::size()) a = combine_i(op, a, in.i(row * n + i));
    a = team_reduce<kBlock>(a, [op](int64_t x, int64_t y) { return combine_i(op, x, y); });
    if (Team<kBlock>::rank() == 0) out.i(row, a);
  }
}

// ---- arg_reduce_last -------------------------------------------------------------------------------
// The CPU keeps `best` (starting at 0) and moves it when buf[i] > buf[best] (argmax) or < (argmin):
// the first index of the extreme among non-NaN values, except that a NaN at index 0 is never
// replaced (every comparison with it is false), so the answer is then 0. Each thread scans its
// columns in increasing order keeping the first extreme; teams combine by (value, lower index).

constexpr int64_t kNone = INT64_MAX;

// A running (value, index) best: the extreme value, ties to the lower index, kNone = nothing yet.
struct ArgBest {
  bool is_max;
  float v = 0.0f;
  int64_t i = kNone;
  __device__ __forceinline__ bool better(float x, float y) const { return is_max ? x > y : x < y; }
  // Column i in increasing order within a thread: NaN never wins (the CPU's comparisons are false).
  __device__ __forceinline__ void scan(int64_t col, float x) {
    if (x == x && (i == kNone || better(x, v))) {
      v = x;
      i = col;
    }
  }
  // Another partial best, from any columns.
  __device__ __forceinline__ void pick(float ov, int64_t oi) {
    if (oi == kNone) return;
    if (i == kNone || better(ov, v) || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
  // Combines over the team (every thread ends with the team's best).
  template <bool kBlock>
  __device__ __forceinline__ void team_combine() {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, v, o);
      int64_t oi = __shfl_xor_sync(0xffffffffu, i, o);
      pick(ov, oi);
    }
    if constexpr (kBlock) {
      __shared__ float pv[32];
      __shared__ int64_t pi[32];
      int warps = blockDim.x / 32;
      __syncthreads();
      if ((threadIdx.x & 31) == 0) {
        pv[threadIdx.x / 32] = v;
        pi[threadIdx.x / 32] = i;
      }
      __syncthreads();
      for (int w = 0; w < warps; ++w) pick(pv[w], pi[w]);
    }
  }
};

// The CPU's answer from the row's best: 0 when the first element is NaN.
template <typename In>
__device__ __forceinline__ uint32_t arg_result(const In& in, int64_t row_base, int64_t best) {
  float first = in.f(row_base);
  return static_cast<uint32_t>(first != first || best == kNone ? 0 : best);
}

template <bool kBlock, typename In>
__global__ void arg_reduce_kernel(ArgReduceOp op, In in, uint32_t* __restrict__ out, int64_t rows, int64_t n) {
  LOOM_FOR_ROWS(row, rows) {
    ArgBest best{op == ArgReduceOp::argmax};
    scan_row<kBlock>(in, row * n, n, [&](int64_t i, float x) { best.scan(i, x); });
    best.team_combine<kBlock>();
    if (Team<kBlock>::rank() == 0) out[row] = arg_result(in, row * n, best.i);
  }
}

// Few long rows (argmax over a vocabulary at decode): one block per row leaves the GPU idle, so
// each row is split into `splits` chunks of `chunk` columns, one block each (partials in pv/pi),
// then one warp per row combines its partials (ties still go to the lower index).
template <typename In>
__global__ void arg_partial_kernel(ArgReduceOp op, In in, int64_t n, int64_t chunk, int splits, float* __restrict__ pv,
                                   int64_t* __restrict__ pi) {
  int64_t row = blockIdx.x / splits, c0 = (blockIdx.x % splits) * chunk;
  int64_t len = n - c0 < chunk ? n - c0 : chunk;
  ArgBest best{op == ArgReduceOp::argmax};
  scan_row<true>(in, row * n + c0, len, [&](int64_t i, float x) { best.scan(c0 + i, x); });
  best.team_combine<true>();
  if (threadIdx.x == 0) {
    pv[blockIdx.x] = best.v;
    pi[blockIdx.x] = best.i;
  }
}

template <typename In>
__global__ void arg_combine_kernel(ArgReduceOp op, In in, int64_t n, int splits, const float* __restrict__ pv,
                                   const int64_t* __restrict__ pi, uint32_t* __restrict__ out) {
  int64_t row = blockIdx.x;
  ArgBest best{op == ArgReduceOp::argmax};
  for (int s = threadIdx.x; s < splits; s += 32) best.pick(pv[row * splits + s], pi[row * splits + s]);
  best.team_combine<false>();
  if (threadIdx.x == 0) out[row] = arg_result(in, row * n, best.i);
}

// ---- softmax_last / logsumexp_last -----------------------------------------------------------------

// The CPU's running max is std::max(m, v) = (m < v) ? v : m, which skips NaN.
__device__ __forceinline__ float max_skip_nan(float m, float v) { return m < v ? v : m; }

template <bool kBlock, typename In>
__device__ __forceinline__ float row_max(const In& in, int64_t base, int64_t n) {
  float m = -INFINITY;
  scan_row<kBlock>(in, base, n, [&](int64_t, float x) { m = max_skip_nan(m, x); });
  return team_reduce<kBlock>(m, [](float x, float y) { return max_skip_nan(x, y); });
}

template <bool kBlock, typename In, typename Out>
__global__ void softmax_kernel(In in, Out out, int64_t rows, int64_t n) {
  LOOM_FOR_ROWS(row, rows) {
    int64_t base = row * n;
    float m = row_max<kBlock>(in, base, n);
    float s = 0.0f;
    scan_row<kBlock>(in, base, n, [&](int64_t, float x) { s += expf(x - m); });
    s = team_reduce<kBlock>(s, [](float x, float y) { return x + y; });
    float inv = 1.0f / s;
    map_row<kBlock>(in, out, base, n, [&](float x) { return expf(x - m) * inv; });
  }
}

template <bool kBlock, typename In, typename Out>
__global__ void logsumexp_kernel(In in, Out out, int64_t rows, int64_t n) {
  LOOM_FOR_ROWS(row, rows) {
    int64_t base = row * n;
    float m = row_max<kBlock>(in, base, n);
    double s = 0.0;  // the CPU sums the f32 exponentials in double
    scan_row<kBlock>(in, base, n, [&](int64_t, float x) { s += static_cast<double>(expf(x - m)); });
    s = team_reduce<kBlock>(s, [](double x, double y) { return x + y; });
    if (Team<kBlock>::rank() == 0) out.d(row, isinf(m) ? static_cast<double>(m) : static_cast<double>(m) + log(s));
  }
}

// ---- take_rows -------------------------------------------------------------------------------------

// Index r of `indices` as a table row: negative indices wrap once (as the CPU), then the result is
// clamped into [0, rows) because device indices are not validated on the host (the CPU twin
// trusts them; a host-side check in ops/take covers CPU indices).
__device__ __forceinline__ int64_t table_row(const void* idx, Dtype idt, const FastView& iv, int64_t r, int64_t rows) {
  int64_t v = load_i(idx, idt, at(iv, r));
  if (v < 0) v += rows;
  return v < 0 ? 0 : v >= rows ? rows - 1 : v;
}

// Same dtype, block per index (long rows): B is the element, or a 16-byte unit when rows allow.
template <typename B>
__global__ void take_rows_block_kernel(const B* __restrict__ table, int64_t rows, int64_t inner, const void* idx,
                                       Dtype idt, FastView iv, B* __restrict__ out, int64_t n_idx) {
  for (int64_t r = blockIdx.x; r < n_idx; r += gridDim.x) {
    const B* src = table + table_row(idx, idt, iv, r, rows) * inner;
    B* dst = out + r * inner;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) dst[j] = src[j];
  }
}

// Same dtype, flat over out's elements (short rows, e.g. a gather of scalars).
template <typename B>
__global__ void take_rows_flat_kernel(const B* __restrict__ table, int64_t rows, int64_t inner, const void* idx,
                                      Dtype idt, FastView iv, B* __restrict__ out, int64_t total) {
  LOOM_GRID_STRIDE(t, total) {
    int64_t r = t / inner, j = t - r * inner;
    out[t] = table[table_row(idx, idt, iv, r, rows) * inner + j];
  }
}

// Converting gather (table and out dtypes differ; the ops layer never asks, the API allows it).
__global__ void take_rows_any_kernel(const void* __restrict__ table, Dtype tdt, int64_t rows, int64_t inner,
                                     const void* idx, Dtype idt, FastView iv, void* __restrict__ out, Dtype odt,
                                     int64_t total) {
  bool ints = integral_dtype(tdt) && integral_dtype(odt);
  LOOM_GRID_STRIDE(t, total) {
    int64_t r = t / inner, j = t - r * inner;
    int64_t s = table_row(idx, idt, iv, r, rows) * inner + j;
    if (ints) store_i(out, odt, t, load_i(table, tdt, s));
    else store_d(out, odt, t, load_d(table, tdt, s));
  }
}

// ---- host side -------------------------------------------------------------------------------------

constexpr int64_t kWarpRowMax = 1024;  // rows up to this long go one per warp

// Launches kernel<kBlock> for `rows` rows of length n with a team size suited to n.
template <typename Launch>
void launch_rows(int64_t rows, int64_t n, Launch&& launch) {
  if (rows <= 0) return;
  if (n <= kWarpRowMax) {
    constexpr int kThreads = 256;  // 8 rows per block
    launch(std::true_type{} /*warp team*/, grid_for(rows, kThreads / 32), kThreads);
  } else {
    int threads = n >= 16384 ? 1024 : 256;
    launch(std::false_type{} /*block team*/, grid_for(rows, 1), threads);
  }
}

// Calls f(in, out) with typed accessors when `in` and `out` share one of f32/f16/bf16, else with
// the runtime-dtype accessors.
template <typename F>
void with_float_io(const Array& in, Array& out, const char* op, F&& f) {
  if (in.dtype() == out.dtype() && is_model_float(in.dtype())) {
    dispatch_float(in.dtype(), op, [&](auto t) {
      using T = decltype(t);
      f(TypedIn<T>{static_cast<const T*>(in.raw_data())}, TypedOut<T>{static_cast<T*>(out.raw_data())});
    });
  } else {
    f(AnyIn{in.raw_data(), in.dtype()}, AnyOut{out.raw_data(), out.dtype()});
  }
}

int64_t last_dim(const Array& in) { return in.ndim() ? in.shape().back() : 1; }

}  // namespace

void reduce_last(ReduceOp op, const Array& in, Array& out) {
  int64_t n = last_dim(in), rows = out.size();
  if (rows == 0) return;
  refuse_f8_output(out.dtype(), "reduce");
  cudaStream_t stream = stream_of(out);
  if (!is_floating(in.dtype())) {
    launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
      constexpr bool kBlock = !decltype(warp)::value;
      reduce_int_kernel<kBlock><<<grid, threads, 0, stream>>>(op, AnyIn{in.raw_data(), in.dtype()},
                                                              AnyOut{out.raw_data(), out.dtype()}, rows, n);
    });
  } else {
    with_float_io(in, out, "reduce", [&](auto io_in, auto io_out) {
      launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
        constexpr bool kBlock = !decltype(warp)::value;
        reduce_float_kernel<kBlock><<<grid, threads, 0, stream>>>(op, io_in, io_out, rows, n);
      });
    });
  }
  check_launch("reduce_last");
}

void arg_reduce_last(ArgReduceOp op, const Array& in, Array& out) {
  int64_t n = last_dim(in);
  int64_t rows = n == 0 ? 0 : in.size() / n;  // the ops layer refuses empty axes
  if (rows == 0) return;
  if (out.dtype() != Dtype::u32)
    throw NotSupportedError(format_error("arg_reduce", "output must be uint32, got " + std::string(name(out.dtype()))));
  cudaStream_t stream = stream_of(out);
  auto* o = static_cast<uint32_t*>(out.raw_data());
  // Split rows when there are too few of them to fill the GPU (chunks of >= 4096 columns).
  constexpr int64_t kChunkMin = 4096, kSplitBlocks = 256;
  int splits = 1;
  if (rows < kSplitBlocks / 4 && n >= 4 * kChunkMin)
    splits = static_cast<int>(std::min<int64_t>(n / kChunkMin, kSplitBlocks / rows));
  Array partial_v, partial_i;
  if (splits > 1) {
    partial_v = Array::empty({rows * splits}, Dtype::f32, out.device());
    partial_i = Array::empty({rows * splits}, Dtype::i64, out.device());
  }
  auto run = [&](auto io_in) {
    if (splits > 1) {
      int64_t chunk = (n + splits - 1) / splits;
      auto* pv = static_cast<float*>(partial_v.raw_data());
      auto* pi = static_cast<int64_t*>(partial_i.raw_data());
      arg_partial_kernel<<<static_cast<unsigned>(rows * splits), 256, 0, stream>>>(op, io_in, n, chunk, splits, pv, pi);
      arg_combine_kernel<<<static_cast<unsigned>(rows), 32, 0, stream>>>(op, io_in, n, splits, pv, pi, o);
      return;
    }
    launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
      constexpr bool kBlock = !decltype(warp)::value;
      arg_reduce_kernel<kBlock><<<grid, threads, 0, stream>>>(op, io_in, o, rows, n);
    });
  };
  if (is_model_float(in.dtype())) {
    dispatch_float(in.dtype(), "arg_reduce", [&](auto t) {
      using T = decltype(t);
      run(TypedIn<T>{static_cast<const T*>(in.raw_data())});
    });
  } else {
    run(AnyIn{in.raw_data(), in.dtype()});
  }
  check_launch("arg_reduce_last");
}

void softmax_last(const Array& in, Array& out) {
  int64_t n = last_dim(in);
  int64_t rows = n == 0 ? 0 : in.size() / n;
  if (rows == 0) return;
  refuse_f8_output(out.dtype(), "softmax");
  cudaStream_t stream = stream_of(out);
  with_float_io(in, out, "softmax", [&](auto io_in, auto io_out) {
    launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
      constexpr bool kBlock = !decltype(warp)::value;
      softmax_kernel<kBlock><<<grid, threads, 0, stream>>>(io_in, io_out, rows, n);
    });
  });
  check_launch("softmax_last");
}

void logsumexp_last(const Array& in, Array& out) {
  // One result per row of out. An empty row (n == 0) gives -inf, the log of an empty sum; the CPU
  // twin leaves such outputs unwritten.
  int64_t n = last_dim(in), rows = out.size();
  if (rows == 0) return;
  refuse_f8_output(out.dtype(), "logsumexp");
  cudaStream_t stream = stream_of(out);
  with_float_io(in, out, "logsumexp", [&](auto io_in, auto io_out) {
    launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
      constexpr bool kBlock = !decltype(warp)::value;
      logsumexp_kernel<kBlock><<<grid, threads, 0, stream>>>(io_in, io_out, rows, n);
    });
  });
  check_launch("logsumexp_last");
}

void take_rows(const Array& table, const Array& indices, Array& out) {
  int64_t n_idx = indices.size();
  int64_t rows = table.ndim() ? table.shape(0) : 1;
  int64_t inner = table.ndim() > 1 ? shape_size(Shape(table.shape().begin() + 1, table.shape().end())) : 1;
  int64_t total = n_idx * inner;
  if (total == 0) return;
  refuse_f8_output(out.dtype(), "take");
  cudaStream_t stream = stream_of(out);
  if (rows == 0) {
    // Nothing to gather from (only unvalidated device indices get here): zeros, not a wild read.
    LOOM_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), stream));
    return;
  }
  FastView iv = fast_view(indices);
  if (table.dtype() != out.dtype()) {
    take_rows_any_kernel<<<grid_for(total, 256), 256, 0, stream>>>(table.raw_data(), table.dtype(), rows, inner,
                                                                    indices.raw_data(), indices.dtype(), iv,
                                                                    out.raw_data(), out.dtype(), total);
    check_launch("take_rows");
    return;
  }
  // Same dtype: move element bits, as 16-byte units when every row starts 16-byte aligned.
  int64_t row_bytes = inner * static_cast<int64_t>(table.itemsize());
  bool wide = row_bytes % 16 == 0 && aligned16(table.raw_data()) && aligned16(out.raw_data());
  auto launch = [&](auto unit, int64_t units_per_row) {
    using B = decltype(unit);
    const B* src = static_cast<const B*>(table.raw_data());
    B* dst = static_cast<B*>(out.raw_data());
    if (units_per_row >= 64) {
      int threads = units_per_row >= 256 ? 256 : 64;
      take_rows_block_kernel<B><<<grid_for(n_idx, 1), threads, 0, stream>>>(
          src, rows, units_per_row, indices.raw_data(), indices.dtype(), iv, dst, n_idx);
    } else {
      int64_t units = n_idx * units_per_row;
      take_rows_flat_kernel<B><<<grid_for(units, 256), 256, 0, stream>>>(src, rows, units_per_row, indices.raw_data(),
                                                                          indices.dtype(), iv, dst, units);
    }
  };
  if (wide) launch(uint4{}, row_bytes / 16);
  else dispatch_bits(table.itemsize(), [&](auto bits) { launch(bits, inner); });
  check_launch("take_rows");
}

}  // namespace loom::cuda
