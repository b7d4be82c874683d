// gather_mm and argpartition_last on CUDA (CPU twin: backend/cpu/gather_mm.cpp).
//  - gather_mm: with M <= 8 and weight rows (b a transposed view of stacked experts [E, N, K], the MoE
//    case) the decode GEMV of matmul.cu runs with its batch driven by the index arrays on the device
//    (detail::gemv_gather): one pass over each selected expert's rows at memory bandwidth, sorted indices
//    letting neighbouring entries hit L2. Anything else goes to a plain tiled kernel: one 256-thread block
//    per (64 x 64 output tile, p), 16-deep K slices staged as f32 in shared memory, f32 accumulation.
//  - argpartition_last: a full ascending sort per row by (value, index) — a valid argpartition for every
//    kth (the first kth+1 entries equal the CPU's partial_sort; the rest is sorted too). Rows of up to
//    4096 entries sort in shared memory (bitonic network over 64-bit (value, index) keys, one block per
//    row); longer rows go through CUB's radix sort on (row, value) keys, stable so ties keep index order.
#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>
#include <string>
#include <type_traits>

#include "loom/backend/cuda/blas.cuh"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {

namespace {

// ---------------------------------------------------------------------------------------------------
// gather_mm, general layouts

constexpr int kTile = 64;   // output tile edge
constexpr int kSlice = 16;  // K depth staged per step

struct GatherArgs {
  const void* a;
  const void* b;
  void* out;
  const int32_t* lhs;
  const int32_t* rhs;
  int64_t p, m, n, k;
  int64_t sb, sk, sn;  // element strides of b: batch, K, N
};

template <typename AT, typename BT, typename OT>
__global__ void __launch_bounds__(256) gather_mm_tiled_kernel(GatherArgs g) {
  __shared__ float as[kSlice][kTile + 1];  // as[k][m]
  __shared__ float bs[kSlice][kTile + 1];  // bs[k][n]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const bool b_rows = g.sn == 1;  // b row-major: n is the contiguous axis; otherwise k is
  for (int64_t p = blockIdx.z; p < g.p; p += gridDim.z) {
    const AT* a = static_cast<const AT*>(g.a) + static_cast<int64_t>(g.lhs[p]) * g.m * g.k;
    const BT* b = static_cast<const BT*>(g.b) + static_cast<int64_t>(g.rhs[p]) * g.sb;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < g.k; k0 += kSlice) {
      for (int i = threadIdx.x; i < kTile * kSlice; i += 256) {
        const int mm = i / kSlice, kk = i % kSlice;  // consecutive threads walk a's contiguous k
        const int64_t m = m0 + mm, k = k0 + kk;
        as[kk][mm] = (m < g.m && k < g.k) ? to_f(a[m * g.k + k]) : 0.0f;
      }
      for (int i = threadIdx.x; i < kTile * kSlice; i += 256) {
        const int kk = b_rows ? i / kTile : i % kSlice, nn = b_rows ? i % kTile : i / kSlice;
        const int64_t k = k0 + kk, n = n0 + nn;
        bs[kk][nn] = (n < g.n && k < g.k) ? to_f(b[k * g.sk + n * g.sn]) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSlice; ++kk) {
        float av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = as[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();
    }
    OT* o = static_cast<OT*>(g.out) + p * g.m * g.n;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = m0 + ty + 16 * i;
      if (m >= g.m) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t n = n0 + tx + 16 * j;
        if (n < g.n) o[m * g.n + n] = from_f<OT>(acc[i][j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// argpartition_last

// An unsigned key ordered as the floats are: -0 and +0 map to one key (they compare equal on the CPU, so
// their order is decided by index); NaNs land past +inf (or before -inf when negative).
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t u = v == 0.0f ? 0u : __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

constexpr int64_t kSmemSortMax = 4096;

// One block per row: (key << 32 | index) in shared memory, padded to a power of two with all-ones keys,
// sorted ascending by a bitonic network.
__global__ void argsort_rows_smem_kernel(const float* in, uint32_t* out, int64_t rows, int n, int len) {
  extern __shared__ unsigned long long keys[];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* x = in + r * n;
    for (int i = threadIdx.x; i < len; i += blockDim.x)
      keys[i] = i < n ? (static_cast<unsigned long long>(order_key(x[i])) << 32) | static_cast<unsigned>(i) : ~0ull;
    __syncthreads();
    for (int size = 2; size <= len; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int t = threadIdx.x; t < len / 2; t += blockDim.x) {
          const int i = 2 * t - (t & (stride - 1));  // lower element of the pair: bit `stride` clear
          const int j = i + stride;
          const bool ascending = (i & size) == 0;
          const unsigned long long ki = keys[i], kj = keys[j];
          if ((ki > kj) == ascending) {
            keys[i] = kj;
            keys[j] = ki;
          }
        }
        __syncthreads();
      }
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[r * n + i] = static_cast<uint32_t>(keys[i] & 0xffffffffull);
    __syncthreads();
  }
}

// Long rows: composite keys (row << 32 | value key) with the column as payload, for one radix sort.
__global__ void argsort_keys_kernel(const float* in, unsigned long long* keys, uint32_t* cols, int64_t rows,
                                    int64_t n) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n;
    keys[i] = (static_cast<unsigned long long>(r) << 32) | order_key(in[i]);
    cols[i] = static_cast<uint32_t>(i - r * n);
  }
}

}  // namespace

void gather_mm(const Array& a, const Array& b, const Array& lhs, const Array& rhs, Array& out) {
  const char* op = "gather_mm";
  if (out.size() == 0) return;
  if (detail::gemv_gather(a, b, lhs, rhs, out)) return;
  GatherArgs g{};
  g.a = a.raw_data();
  g.b = b.raw_data();
  g.out = out.raw_data();
  g.lhs = lhs.data<int32_t>();
  g.rhs = rhs.data<int32_t>();
  g.p = lhs.size();
  g.m = a.shape(-2);
  g.k = a.shape(-1);
  g.n = b.shape(-1);
  g.sb = b.strides()[0];
  g.sk = b.strides()[1];
  g.sn = b.strides()[2];
  cudaStream_t s = stream_of(out);
  const Dtype want = a.dtype() == b.dtype() ? a.dtype() : Dtype::f32;
  if (out.dtype() != want)
    throw Error(format_error(
        op, "output dtype " + std::string(name(out.dtype())) + " is not the promotion " + std::string(name(want))));
  const int64_t m_tiles = (g.m + kTile - 1) / kTile, n_tiles = (g.n + kTile - 1) / kTile;
  if (m_tiles > 65535 || n_tiles > INT32_MAX)
    throw NotSupportedError(
        format_error(op, "output [" + std::to_string(g.m) + ", " + std::to_string(g.n) + "] is too large"));
  if (g.k == 0) {
    LOOM_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), s));
    return;
  }
  dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(m_tiles),
            static_cast<unsigned>(std::min<int64_t>(g.p, 65535)));
  dispatch_float(a.dtype(), op, [&](auto at) {
    dispatch_float(b.dtype(), op, [&](auto bt) {
      using AT = decltype(at);
      using BT = decltype(bt);
      using OT = std::conditional_t<std::is_same_v<AT, BT>, AT, float>;
      gather_mm_tiled_kernel<AT, BT, OT><<<grid, 256, 0, s>>>(g);
    });
  });
  check_launch("gather_mm_tiled_kernel");
}

void argpartition_last(const Array& in, int64_t kth, Array& out) {
  const char* op = "argpartition";
  const int64_t n = in.shape(-1), rows = n ? in.size() / n : 0;
  if (rows == 0 || n == 0) return;
  if (in.dtype() != Dtype::f32 || out.dtype() != Dtype::u32)
    throw Error(format_error(op, "the CUDA kernel takes float32 rows and writes uint32 indices"));
  if (n > UINT32_MAX) throw NotSupportedError(format_error(op, "rows longer than 2^32 entries"));
  cudaStream_t s = stream_of(out);
  const float* x = in.data<float>();
  uint32_t* o = out.data<uint32_t>();
  if (n <= kSmemSortMax) {
    const int len = static_cast<int>(std::bit_ceil(static_cast<uint64_t>(std::max<int64_t>(n, 2))));
    const int threads = std::min(1024, std::max(32, len / 2));
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 20));
    argsort_rows_smem_kernel<<<blocks, threads, len * sizeof(unsigned long long), s>>>(x, o, rows, static_cast<int>(n),
                                                                                       len);
    check_launch("argsort_rows_smem_kernel");
    return;
  }
  // Radix sort over (row, value key): rows keep their order, ties keep ascending column order.
  const int64_t total = rows * n;
  if (total > INT32_MAX) throw NotSupportedError(format_error(op, "more than 2^31 elements in one sort"));
  const int row_bits = rows > 1 ? std::bit_width(static_cast<uint64_t>(rows - 1)) : 0;
  Array keys_in = Array::empty({total}, Dtype::u64, out.device());
  Array keys_out = Array::empty({total}, Dtype::u64, out.device());
  Array cols = Array::empty({total}, Dtype::u32, out.device());
  auto* kin = static_cast<unsigned long long*>(keys_in.raw_data());
  auto* kout = static_cast<unsigned long long*>(keys_out.raw_data());
  argsort_keys_kernel<<<grid_for(total, 256), 256, 0, s>>>(x, kin, cols.data<uint32_t>(), rows, n);
  check_launch("argsort_keys_kernel");
  size_t temp_bytes = 0;
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, kin, kout, cols.data<uint32_t>(), o,
                                                  static_cast<int>(total), 0, 32 + row_bits, s));
  Array temp = Array::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, Dtype::u8, out.device());
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, kin, kout, cols.data<uint32_t>(), o,
                                                  static_cast<int>(total), 0, 32 + row_bits, s));
  (void)kth;  // every kth is served by the full sort
}

}  // namespace loom::cuda
