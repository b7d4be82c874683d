// matmul on CUDA (CPU twin: backend/cpu/matmul.cpp).
//  - Decode (M <= 8 activation rows) with the weight given as a transposed view of W [N, K] row-major
//    (the Linear layout, any of f32/bf16/f16 for both operands): a GEMV kernel that streams each weight
//    row once with 16-byte loads and accumulates in f32 (gemv_rows_kernel below; its memory plan is
//    described there). gather_mm.cu reuses it for stacked expert weights (detail::gemv_gather).
//  - Everything else: cuBLAS (cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F — never the TF32 mode —
//    with reduced-precision reductions disallowed), one handle per device bound to the device's stream.
//    Equal dtypes go straight in; mixed dtypes compute in f32 as the CPU does: the half operand is
//    converted to an f32 temporary (the weight side in column panels of bounded size, so a model is
//    never held in f32). bf16/f16 outputs are rounded once from the f32 accumulators.
// detail::sgemm_rowmajor and detail::cublas_handle serve quantized.cu's prefill path.
#include <cublas_v2.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "loom/backend/cuda/blas.cuh"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/kernels.h"
#include "loom/backend/product_group.h"

namespace loom::cuda {

namespace {

// ---------------------------------------------------------------------------------------------------
// cuBLAS glue

constexpr int kMaxBlasDevices = 16;
constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;  // cuBLAS' recommendation for Hopper

struct BlasSlot {
  std::once_flag once;
  cublasHandle_t handle = nullptr;
  Array workspace;  // from loom's allocator; a fixed workspace keeps cuBLAS calls graph-capturable
};

BlasSlot& blas_slot(int index) {
  static BlasSlot* slots = new BlasSlot[kMaxBlasDevices];  // leaked on purpose (buffers may outlive statics)
  return slots[index];
}

void blas_check(cublasStatus_t st, const char* call, const char* op) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  throw Error(format_error(op, std::string(call) + " failed: " + cublasGetStatusString(st)));
}

cudaDataType_t cuda_type(Dtype dt) {
  switch (dt) {
    case Dtype::f32:
      return CUDA_R_32F;
    case Dtype::f16:
      return CUDA_R_16F;
    case Dtype::bf16:
      return CUDA_R_16BF;
    default:
      throw NotSupportedError(format_error("matmul", "CUDA has no " + std::string(name(dt)) + " GEMM"));
  }
}

bool is_gemm_dtype(Dtype dt) { return dt == Dtype::f32 || dt == Dtype::f16 || dt == Dtype::bf16; }

void check_int(int64_t v, const char* what, const char* op) {
  if (v > INT_MAX)
    throw NotSupportedError(
        format_error(op, std::string(what) + " " + std::to_string(v) + " exceeds cuBLAS' int range"));
}

// A 2-D block [R, C] with strides (rs, cs) as BLAS sees it: row-major or column-major with a legal leading
// dimension. The op layer guarantees one of the two (ops/linalg.cpp blas_layout); a degenerate dim (one
// row or one column) may carry any stride, so the leading dimension is repaired as the CPU twin does.
struct Layout {
  bool row_major;
  int64_t ld;
};

Layout layout_of(int64_t r, int64_t c, int64_t rs, int64_t cs) {
  if ((cs == 1 || c == 1) && (rs >= c || r == 1)) return {true, std::max<int64_t>({r == 1 ? c : rs, c, 1})};
  return {false, std::max<int64_t>({c == 1 ? r : cs, r, 1})};
}

// Batch dims of an [.., R, C] operand pair and the contiguous output, size-1 dims dropped and neighbours
// merged where every stride chains; entries are (shape, a stride, b stride, out stride), outermost first.
struct BatchDim {
  int64_t n, sa, sb, so;
};

std::vector<BatchDim> batch_dims(const Array& a, const Array& b, const Array& out) {
  const int nd = out.ndim();
  std::vector<BatchDim> dims;
  int64_t so = out.shape(-2) * out.shape(-1);
  std::vector<BatchDim> rev;
  for (int d = nd - 3; d >= 0; --d) {
    rev.push_back({out.shape()[d], a.strides()[d], b.strides()[d], so});
    so *= out.shape()[d];
  }
  for (auto it = rev.rbegin(); it != rev.rend(); ++it) {
    if (it->n == 1) continue;
    if (!dims.empty()) {
      BatchDim& o = dims.back();
      // o is the outer neighbour of *it: merge when o's strides equal *it's strides times its extent.
      if (o.sa == it->sa * it->n && o.sb == it->sb * it->n && o.so == it->so * it->n) {
        o = {o.n * it->n, it->sa, it->sb, it->so};
        continue;
      }
    }
    dims.push_back(*it);
  }
  return dims;
}

}  // namespace

namespace detail {

cublasHandle_t cublas_handle(Device d) {
  if (d.index < 0 || d.index >= kMaxBlasDevices)
    throw NotSupportedError(format_error("cublas", "device " + d.str() + " is out of range"));
  cudaStream_t stream = stream_for(d);  // also makes d current
  BlasSlot& slot = blas_slot(d.index);
  std::call_once(slot.once, [&] {
    cublasHandle_t h = nullptr;
    blas_check(cublasCreate(&h), "cublasCreate", "cublas");
    blas_check(cublasSetStream(h, stream), "cublasSetStream", "cublas");
    // f32 accumulation everywhere: no TF32 (math mode default + CUBLAS_COMPUTE_32F at each call) and no
    // reduced-precision split-K reductions for half outputs.
    blas_check(cublasSetMathMode(h, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                                              CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
               "cublasSetMathMode", "cublas");
    blas_check(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode", "cublas");
    slot.workspace = Array::empty({static_cast<int64_t>(kBlasWorkspaceBytes)}, Dtype::u8, d);
    blas_check(cublasSetWorkspace(h, slot.workspace.raw_data(), kBlasWorkspaceBytes), "cublasSetWorkspace", "cublas");
    slot.handle = h;
  });
  return slot.handle;
}

// Row-major f32 GEMM: c[m, n] = op(a) @ op(b) + beta * c, where op(a) is a [m, k] (a stored [m, k] with row
// stride lda, or [k, m] when trans_a) and likewise b [k, n] (or stored [n, k] when trans_b).
void gemm_rowmajor(Device d, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
                   const void* b, int64_t ldb, Dtype ab, float beta, void* c, int64_t ldc, Dtype cdt, const char* op) {
  if (m == 0 || n == 0) return;
  for (int64_t v : {m, n, k, lda, ldb, ldc}) check_int(v, "dimension", op);
  cublasHandle_t h = cublas_handle(d);
  const float alpha = 1.0f;
  // Column-major view: c^T [n, m] = op(b)^T @ op(a)^T.
  blas_check(cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                          static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b, cuda_type(ab),
                          static_cast<int>(ldb), a, cuda_type(ab), static_cast<int>(lda), &beta, c, cuda_type(cdt),
                          static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx", op);
}

void sgemm_rowmajor(Device d, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const char* op) {
  gemm_rowmajor(d, trans_a, trans_b, m, n, k, a, lda, b, ldb, Dtype::f32, beta, c, ldc, Dtype::f32, op);
}

}  // namespace detail

namespace {

// out[.., :, n0:n0+n] = a @ b for a [.., M, K] and b [.., K, n] of the same dtype (batch dims broadcast to
// out's, any BLAS layout); out is contiguous [.., M, ldc].
void gemm_blas(const Array& a, const Array& b, Array& out, int64_t n0, const char* op) {
  const int nd = out.ndim();
  const int64_t m = a.shape(-2), k = a.shape(-1), n = b.shape(-1), ldc = out.shape(-1);
  Layout la = layout_of(m, k, a.strides()[nd - 2], a.strides()[nd - 1]);
  Layout lb = layout_of(k, n, b.strides()[nd - 2], b.strides()[nd - 1]);
  for (int64_t v : {m, n, k, la.ld, lb.ld, ldc}) check_int(v, "dimension", op);
  std::vector<BatchDim> dims = batch_dims(a, b, out);
  // The innermost batch dim goes to cuBLAS as a strided batch; outer ones loop here.
  BatchDim inner = dims.empty() ? BatchDim{1, 0, 0, 0} : dims.back();
  if (!dims.empty()) dims.pop_back();
  check_int(inner.n, "batch", op);
  int64_t outer = 1;
  for (const BatchDim& d : dims) outer *= d.n;

  cublasHandle_t h = detail::cublas_handle(out.device());
  const cudaDataType_t t = cuda_type(a.dtype());
  const size_t isz = a.itemsize(), osz = out.itemsize();
  const float alpha = 1.0f, beta = 0.0f;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t ao = 0, bo = 0, oo = 0, r = o;
    for (int i = static_cast<int>(dims.size()) - 1; i >= 0; --i) {
      int64_t idx = r % dims[i].n;
      r /= dims[i].n;
      ao += idx * dims[i].sa;
      bo += idx * dims[i].sb;
      oo += idx * dims[i].so;
    }
    const char* ap = static_cast<const char*>(a.raw_data()) + ao * static_cast<int64_t>(isz);
    const char* bp = static_cast<const char*>(b.raw_data()) + bo * static_cast<int64_t>(isz);
    char* cp = static_cast<char*>(out.raw_data()) + (oo + n0) * static_cast<int64_t>(osz);
    // Row-major C [m, n] (ld ldc) is column-major C^T [n, m]: C^T = B^T A^T, so cuBLAS' "A" is our b.
    blas_check(cublasGemmStridedBatchedEx(h, lb.row_major ? CUBLAS_OP_N : CUBLAS_OP_T,
                                          la.row_major ? CUBLAS_OP_N : CUBLAS_OP_T, static_cast<int>(n),
                                          static_cast<int>(m), static_cast<int>(k), &alpha, bp, t,
                                          static_cast<int>(lb.ld), inner.sb, ap, t, static_cast<int>(la.ld), inner.sa,
                                          &beta, cp, cuda_type(out.dtype()), static_cast<int>(ldc), inner.so,
                                          static_cast<int>(inner.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx", op);
  }
}

// x converted to dtype dt without materializing broadcast batch dims: the copy holds one entry per
// distinct batch index and keeps x's 2-D orientation (row- or column-major), so the conversion reads and
// writes along contiguous runs; the returned view has x's shape with zero strides where x had them.
Array converted(const Array& x, Dtype dt) {
  const int nd = x.ndim();
  const int64_t r = x.shape(-2), c = x.shape(-1);
  const bool row = layout_of(r, c, x.strides()[nd - 2], x.strides()[nd - 1]).row_major;
  Shape cshape = x.shape();
  Strides cstr = x.strides();
  for (int d = 0; d < nd - 2; ++d)
    if (cstr[d] == 0) cshape[d] = 1;
  if (!row) {
    std::swap(cshape[nd - 2], cshape[nd - 1]);
    std::swap(cstr[nd - 2], cstr[nd - 1]);
  }
  Array src(x.buffer(), cshape, cstr, x.offset(), x.dtype());
  Array tmp = Array::empty(cshape, dt, x.device());
  copy(src, tmp);
  Strides st = tmp.strides();
  if (!row) std::swap(st[nd - 2], st[nd - 1]);
  for (int d = 0; d < nd - 2; ++d)
    if (x.strides()[d] == 0) st[d] = 0;
  return Array(tmp.buffer(), x.shape(), st, tmp.offset(), dt);
}

// ---------------------------------------------------------------------------------------------------
// Decode GEMV: out[p, m, n] = sum_k x[p, m, k] * w[p, n, k] for m < M <= 8, with w's rows contiguous.
//
// Memory plan. Each warp owns R consecutive weight rows (1 or 2, see gemv_rows; the x values loaded for a
// step serve all R rows) and sweeps K with its 32 lanes side by side: one load
// instruction reads 32 x 16 B = 512 contiguous bytes of a row (fully coalesced), and each lane keeps U
// such loads per row in flight (R * U = 8, i.e. 4 KiB per warp) before converting and accumulating, which
// is what an HBM3 part needs to run at bandwidth. Weight loads bypass L1 (ld.global.nc.L1::no_allocate)
// because every byte is read once; x (a few KiB to a few tens of KiB) is read through the read-only
// path and stays in L1/L2, shared by all warps of an SM. Accumulation is f32 per lane, then a
// butterfly shuffle reduction per (row, m). Bytes moved ~= N * K * sizeof(W) (+ x from L2, + M * N
// outputs). Launch: 256 threads (8 warps, 8 * R rows) per block, grid.x = ceil(N / (8 R)), grid.y
// walks the batch (or the gathered index pairs of gather_mm). When the row groups give fewer than 16
// warps per multiprocessor (a 2048-row projection of a 1B model), the 8 warps of a block split K
// instead (ks = 2, 4 or 8 warps per row group, summed in shared memory in part order; see
// gemv_split). For model weights (matmul_t_group: L.early) each warp requests its first chunk before
// the programmatic-launch wait, overlapping the previous kernel's tail (Llama-3.2-1B-shaped bf16 tg
// 719 -> 747 t/s on an H100, 8B-shaped 157.6 -> 159.3). Rows whose byte alignment does not allow
// 16-byte loads take a scalar loop (correct, slower). Measured on an H200 (4.3 TB/s device copy), bf16 W
// [14336, 4096]: 32 us at M = 1 (3.6 TB/s; launch and tail included), 3.4-4.4 TB/s from 117 MB to 1 GB
// weights; M = 4 ~3.1 TB/s; M = 8 ~1.9 TB/s (f32 FMA issue-bound: 8 FMAs per weight; tensor cores would
// be the next step).

constexpr int kGemvWarps = 8;
constexpr int kMaxGemvBatchDims = 6;

struct GemvBatch {
  int nd = 0;  // strided batch dims, outermost first
  int64_t shape[kMaxGemvBatchDims] = {};
  int64_t sx[kMaxGemvBatchDims] = {};  // element strides of x and w per batch dim
  int64_t sw[kMaxGemvBatchDims] = {};
  const int32_t* lhs = nullptr;  // gather mode: x offset lhs[p] * sx[0], w offset rhs[p] * sw[0]
  const int32_t* rhs = nullptr;
  int64_t count = 1;
};

struct GemvArgs {
  const void* x;
  const void* w;
  void* out;
  int m;
  int64_t n, k, ldx, ldw;
  bool vec;  // 16-byte loads legal for every row of x and w
  int ks;    // warps sharing a row group (parts of K), set at launch
  GemvBatch batch;
};

// Weight rows per warp (R) and 16-byte loads per row a lane keeps in flight (U = 8 / R): measured on an
// H200 at K = 4096, N = 14336 in bf16 (two rows help one activation row; with 8 rows the lower register
// count of one row wins).
template <int MT>
constexpr int gemv_rows() {
  return MT == 1 || MT == 4 ? 2 : 1;
}

__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Two 16-bit values packed in a word, as floats (the low half first).
template <typename T>
__device__ __forceinline__ void halves(uint32_t u, float& lo, float& hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    lo = __uint_as_float(u << 16);
    hi = __uint_as_float(u & 0xffff0000u);
  } else {
    lo = __half2float(__ushort_as_half(static_cast<unsigned short>(u & 0xffffu)));
    hi = __half2float(__ushort_as_half(static_cast<unsigned short>(u >> 16)));
  }
}

// The 16 bytes of v as V = 16 / sizeof(T) floats.
template <typename T, int V>
__device__ __forceinline__ void unpack16(const uint4& v, float (&f)[V]) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(u[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) halves<T>(u[i], f[2 * i], f[2 * i + 1]);
  }
}

// V consecutive values of T at p (aligned to min(16, V * sizeof(T)) bytes) as floats, read-only path.
template <typename T, int V>
__device__ __forceinline__ void load_f(const T* p, float (&f)[V]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < V / 4; ++i) {
      float4 t = __ldg(reinterpret_cast<const float4*>(p) + i);
      f[4 * i] = t.x;
      f[4 * i + 1] = t.y;
      f[4 * i + 2] = t.z;
      f[4 * i + 3] = t.w;
    }
  } else if constexpr (V == 8) {
    uint4 t = __ldg(reinterpret_cast<const uint4*>(p));
    unpack16<T, 8>(t, f);
  } else {
    static_assert(V == 4, "4 or 8 half values");
    uint2 t = __ldg(reinterpret_cast<const uint2*>(p));
    halves<T>(t.x, f[0], f[1]);
    halves<T>(t.y, f[2], f[3]);
  }
}

__device__ __forceinline__ void batch_offsets(const GemvBatch& b, int64_t p, int64_t& xo, int64_t& wo) {
  if (b.lhs) {
    xo = static_cast<int64_t>(b.lhs[p]) * b.sx[0];
    wo = static_cast<int64_t>(b.rhs[p]) * b.sw[0];
    return;
  }
  xo = 0;
  wo = 0;
  for (int d = b.nd - 1; d >= 0; --d) {
    int64_t i = p % b.shape[d];
    p /= b.shape[d];
    xo += i * b.sx[d];
    wo += i * b.sw[d];
  }
}

// One GEMV launch over up to kGemvSegs products of one x (same dtypes, K, M and ks; own W, output and N).
// Segment s owns blocks bfirst[s] .. bfirst[s + 1] - 1 (whole blocks, so the warps of a block that share
// barriers share a segment). With SPLIT = R / 2 (a swiglu), two segments (gate, up) of one N share the
// blocks: a warp's first SPLIT rows are the gate's, the others the same rows of up, and it stores
// swiglu(gate, up) (each product rounded to the output type first) into seg[0].out.
constexpr int kGemvSegs = 3;
struct GemvLaunch {
  GemvArgs seg[kGemvSegs];
  int64_t bfirst[kGemvSegs + 1];
  int nseg;
  // The weights are model weights (matmul_t_group's contract): each warp requests its first chunk of them
  // before waiting on the kernels before this one, so those loads overlap their tail.
  bool early;
};

template <typename XT, typename WT, typename OT, int MT, int R, int SPLIT>
__device__ __forceinline__ void gemv_rows(const GemvArgs& g, const GemvArgs& g2, int64_t block, bool early) {
  constexpr int U = 8 / R;
  constexpr int V = 16 / sizeof(WT);  // weight elements per 16-byte load
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = g.ks, part = warp % ks;
  // Rows past the end repeat the last one and store nothing: with ks > 1 every warp of the block
  // must reach the barriers below.
  const int64_t n0 = (block * (kGemvWarps / ks) + warp / ks) * SPLIT;
  if (ks == 1 && n0 >= g.n) return;
  __shared__ float red[kGemvWarps][R * MT];
  for (int64_t p = blockIdx.y; p < g.batch.count; p += gridDim.y) {
    int64_t xo, wo;
    batch_offsets(g.batch, p, xo, wo);
    const XT* x = static_cast<const XT*>(g.x) + xo;
    const WT* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r)
      wr[r] = static_cast<const WT*>(r < SPLIT ? g.w : g2.w) + wo + min(n0 + (r < SPLIT ? r : r - SPLIT), g.n - 1) * g.ldw;
    const XT* xr[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) xr[m] = x + (m < g.m ? m : 0) * g.ldx;  // padding rows read row 0
    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[r][m] = 0.0f;

    int64_t kdone = 0;
    if (g.vec) {
      // Chunks of 32 vectors (one load per lane) are dealt to the ks parts in turn; a part keeps U
      // chunks per row in flight.
      const int64_t nvec = g.k / V;
      uint4 wv[R][U];
      auto load = [&](int64_t v0) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t v = v0 + (u * ks + part) * 32 + lane;
#pragma unroll
          for (int r = 0; r < R; ++r) wv[r][u] = v < nvec ? ld_stream16(wr[r] + v * V) : make_uint4(0, 0, 0, 0);
        }
      };
      load(0);
      if (early) {  // weights only so far; x and the output wait for the kernels before this one
        pdl_wait();
        pdl_trigger();
        early = false;
      }
      for (int64_t v0 = 0; v0 < nvec; v0 += 32 * U * ks) {
        if (v0 > 0) load(v0);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t v = v0 + (u * ks + part) * 32 + lane;
          if (v >= nvec) break;
          float wf[R][V];
#pragma unroll
          for (int r = 0; r < R; ++r) unpack16<WT, V>(wv[r][u], wf[r]);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            float xf[V];
            load_f<XT, V>(xr[m] + v * V, xf);
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
              for (int i = 0; i < V; ++i) acc[r][m] = fmaf(xf[i], wf[r][i], acc[r][m]);
          }
        }
      }
      kdone = nvec * V;
    }
    if (early) {
      pdl_wait();
      pdl_trigger();
      early = false;
    }
    // Tail (and the whole row when 16-byte loads are not legal): lanes of part 0 take consecutive
    // elements.
    for (int64_t k = kdone + lane; part == 0 && k < g.k; k += 32) {
      float xf[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) xf[m] = to_f(xr[m][k]);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float wf = to_f(wr[r][k]);
#pragma unroll
        for (int m = 0; m < MT; ++m) acc[r][m] = fmaf(xf[m], wf, acc[r][m]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[r][m] = warp_sum(acc[r][m]);
    OT* o = static_cast<OT*>(g.out) + p * g.m * g.n;
    // Output (r, m) of the row group from its (gate and up) sums.
    auto store = [&](int r, int m, const float* v, int stride) {
      if (m >= g.m || n0 + r >= g.n) return;
      float y = v[0];
      if constexpr (SPLIT < R) y = swiglu_f(to_f(from_f<OT>(y)), to_f(from_f<OT>(v[SPLIT * stride])));
      o[m * g.n + n0 + r] = from_f<OT>(y);
    };
    if (ks == 1) {
      if (lane == 0) {
        float flat[R * MT];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int m = 0; m < MT; ++m) flat[r * MT + m] = acc[r][m];
#pragma unroll
        for (int r = 0; r < SPLIT; ++r)
#pragma unroll
          for (int m = 0; m < MT; ++m) store(r, m, &flat[r * MT + m], MT);
      }
      continue;
    }
    // The ks parts of a row group are consecutive warps: part 0 adds the others' sums in part order.
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) red[warp][r * MT + m] = acc[r][m];
    }
    __syncthreads();
    if (part == 0 && lane < R * MT) {
      float v = red[warp][lane];
      for (int i = 1; i < ks; ++i) v += red[warp + i][lane];
      red[warp][lane] = v;  // each lane rewrites only its own slot, after reading the others' parts
    }
    __syncwarp();
    if (part == 0 && lane < SPLIT * MT) store(lane / MT, lane % MT, &red[warp][lane], MT);
    __syncthreads();
  }
}

template <typename XT, typename WT, typename OT, int MT, int R, int SPLIT>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_rows_kernel(const __grid_constant__ GemvLaunch L) {
  // Launched with launch_pdl: waits here, or in gemv_rows after the first weight loads (L.early).
  const bool early = L.early && L.seg[0].batch.count == 1 && !L.seg[0].batch.lhs;
  if (!early) {
    pdl_wait();
    pdl_trigger();
  }
  const int64_t b = blockIdx.x;
  if constexpr (SPLIT < R) {
    gemv_rows<XT, WT, OT, MT, R, SPLIT>(L.seg[0], L.seg[1], b, early);
  } else {
    static_assert(kGemvSegs == 3, "one branch per segment");
    if (b < L.bfirst[1])
      gemv_rows<XT, WT, OT, MT, R, R>(L.seg[0], L.seg[0], b, early);
    else if (b < L.bfirst[2])
      gemv_rows<XT, WT, OT, MT, R, R>(L.seg[1], L.seg[1], b - L.bfirst[1], early);
    else
      gemv_rows<XT, WT, OT, MT, R, R>(L.seg[2], L.seg[2], b - L.bfirst[2], early);
  }
}

// K split of the decode GEMV: while the row groups (over the batch) give fewer than kGemvMinWarps
// warps per multiprocessor, the warps of a block share row groups (ks = 2, 4 or 8 parts of K), as long
// as every part gets at least kGemvPartChunks 32-vector chunks (one round of a lane's loads when it
// keeps 4 per row in flight). Measured on an H100 (tg128 t/s, bf16 Llama-3.2-1B / Llama-3.1-8B shapes):
// 16 warps and 1 chunk per part (before session 13) 780 / 162.8; 32 and 4: 800.5 / 165.4; 16 and 4: 791 /
// 162.7; 32 and 2: 786 / 165.3; 32 and 1: 764 / 165.4; 8 and 1: 812 / 156.
constexpr int kGemvMinWarps = 32;
constexpr int kGemvPartChunks = 4;

int gemv_split(const GemvArgs& g, int rows_per_warp, int wsize) {
  const int64_t groups = (g.n + rows_per_warp - 1) / rows_per_warp * std::min<int64_t>(g.batch.count, 65535);
  const int64_t chunks = g.vec ? g.k / (16 / wsize) / 32 : 0;
  int dev = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&dev));
  const int64_t want = int64_t{kGemvMinWarps} * sm_count(Device::cuda(dev));
  int ks = 1;
  while (ks < kGemvWarps && groups * ks < want && chunks >= int64_t{kGemvPartChunks} * 2 * ks) ks *= 2;
  return ks;
}

// Whether a swiglu pair can share row groups: an even number of rows per warp for m activation rows.
bool gemv_swiglu_fits(int64_t m) { return m == 1 || m == 3 || m == 4; }

template <typename XT, typename WT, int MT, int R = gemv_rows<MT>()>
void launch_gemv_mt(GemvLaunch L, bool swiglu, cudaStream_t s) {
  using OT = std::conditional_t<std::is_same_v<XT, WT>, XT, float>;
  const int per_warp = swiglu ? R / 2 : R;  // output rows per row group
  GemvArgs all = L.seg[0];  // the K split is chosen for the launch's row groups together
  all.n = 0;
  for (int i = 0; i < L.nseg; ++i) all.n += swiglu && i == 1 ? 0 : L.seg[i].n;
  const int ks = gemv_split(all, per_warp, sizeof(WT));
  const int64_t rows_per_block = kGemvWarps / ks * per_warp;
  L.bfirst[0] = 0;
  for (int i = 0; i < L.nseg; ++i) {
    L.seg[i].ks = ks;
    L.bfirst[i + 1] = L.bfirst[i] + (swiglu && i == 1 ? 0 : (L.seg[i].n + rows_per_block - 1) / rows_per_block);
  }
  for (int i = L.nseg + 1; i <= kGemvSegs; ++i) L.bfirst[i] = L.bfirst[L.nseg];
  dim3 grid(static_cast<unsigned>(L.bfirst[L.nseg]), static_cast<unsigned>(std::min<int64_t>(L.seg[0].batch.count, 65535)));
  if constexpr (R % 2 == 0) {
    if (swiglu) {
      launch_pdl("gemv_rows_kernel", gemv_rows_kernel<XT, WT, OT, MT, R, R / 2>, grid, dim3(kGemvWarps * 32), 0, s, L);
      return;
    }
  }
  launch_pdl("gemv_rows_kernel", gemv_rows_kernel<XT, WT, OT, MT, R, R>, grid, dim3(kGemvWarps * 32), 0, s, L);
}

template <typename XT, typename WT>
void launch_gemv(const GemvLaunch& L, bool swiglu, cudaStream_t s) {
  const int m = L.seg[0].m;
  if (m == 1)
    launch_gemv_mt<XT, WT, 1>(L, swiglu, s);
  else if (m == 2)
    launch_gemv_mt<XT, WT, 2>(L, swiglu, s);
  else if (m <= 4)
    launch_gemv_mt<XT, WT, 4>(L, swiglu, s);
  else
    launch_gemv_mt<XT, WT, 8>(L, swiglu, s);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Whether g's rows allow 16-byte loads (every row start of x and w 16-byte aligned).
bool gemv_vec(const GemvArgs& g, Dtype xdt, Dtype wdt) {
  const int64_t xs = static_cast<int64_t>(size_of(xdt)), ws = static_cast<int64_t>(size_of(wdt));
  bool vec =
      aligned16(g.x) && aligned16(g.w) && (g.m == 1 || (g.ldx * xs) % 16 == 0) && (g.n == 1 || (g.ldw * ws) % 16 == 0);
  for (int d = 0; d < (g.batch.lhs ? 1 : g.batch.nd); ++d)
    vec = vec && (g.batch.sx[d] * xs) % 16 == 0 && (g.batch.sw[d] * ws) % 16 == 0;
  return vec;
}

// Launches the GEMV of L's segments for x (dtype xdt) and w (dtype wdt) into outputs whose dtype must be
// their promotion.
void run_gemv(GemvLaunch L, bool swiglu, Dtype xdt, Dtype wdt, Dtype odt, cudaStream_t s, const char* op) {
  const GemvArgs& g = L.seg[0];
  if (g.n == 0 || g.m == 0 || g.batch.count == 0) return;
  const Dtype want = xdt == wdt ? xdt : Dtype::f32;
  if (odt != want)
    throw Error(format_error(
        op, "GEMV output dtype " + std::string(name(odt)) + " is not the promotion " + std::string(name(want))));
  dispatch_float(xdt, op, [&](auto xt) {
    dispatch_float(wdt, op, [&](auto wt) { launch_gemv<decltype(xt), decltype(wt)>(L, swiglu, s); });
  });
}

void run_gemv(GemvArgs g, Dtype xdt, Dtype wdt, Dtype odt, cudaStream_t s, const char* op) {
  g.vec = gemv_vec(g, xdt, wdt);
  GemvLaunch L{};
  L.seg[0] = g;
  L.nseg = 1;
  run_gemv(L, false, xdt, wdt, odt, s, op);
}

// The GEMV path of matmul: M <= 8, a with unit column stride, b a transposed view of row-major W [N, K].
bool try_gemv(const Array& a, const Array& b, Array& out) {
  const int nd = out.ndim();
  const int64_t m = a.shape(-2), k = a.shape(-1), n = b.shape(-1);
  if (m > 8) return false;
  if (k != 1 && (b.strides()[nd - 2] != 1 || a.strides()[nd - 1] != 1)) return false;
  std::vector<BatchDim> dims = batch_dims(a, b, out);
  if (static_cast<int>(dims.size()) > kMaxGemvBatchDims) return false;
  GemvArgs g{};
  g.x = a.raw_data();
  g.w = b.raw_data();
  g.out = out.raw_data();
  g.m = static_cast<int>(m);
  g.n = n;
  g.k = k;
  g.ldx = m == 1 ? k : a.strides()[nd - 2];
  g.ldw = n == 1 ? k : b.strides()[nd - 1];
  g.batch.nd = static_cast<int>(dims.size());
  g.batch.count = 1;
  for (int i = 0; i < g.batch.nd; ++i) {
    g.batch.shape[i] = dims[i].n;
    g.batch.sx[i] = dims[i].sa;
    g.batch.sw[i] = dims[i].sb;
    g.batch.count *= dims[i].n;
  }
  run_gemv(g, a.dtype(), b.dtype(), out.dtype(), stream_of(out), "matmul");
  return true;
}

// Elements of f32 weight panel held at once when a half operand must be widened for cuBLAS.
constexpr int64_t kPanelElems = int64_t{1} << 25;  // 128 MiB of f32

}  // namespace

void matmul(const Array& a, const Array& b, Array& out) {
  const char* op = "matmul";
  for (Dtype dt : {a.dtype(), b.dtype(), out.dtype()})
    if (!is_gemm_dtype(dt))
      throw NotSupportedError(
          format_error(op, "the CUDA kernel supports float32, float16 and bfloat16, got " + std::string(name(dt))));
  if (out.size() == 0) return;
  const int nd = out.ndim();
  const int64_t k = a.shape(-1), n = b.shape(-1);
  cudaStream_t s = stream_of(out);
  if (k == 0) {
    LOOM_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), s));  // zero bits are 0.0 in every float type
    return;
  }
  if (try_gemv(a, b, out)) return;

  // cuBLAS: equal dtypes go in as they are; mixed ones meet in f32 (the output is then f32 too).
  const Dtype ct = a.dtype() == b.dtype() ? a.dtype() : Dtype::f32;
  if (out.dtype() != ct)
    throw Error(format_error(
        op, "output dtype " + std::string(name(out.dtype())) + " is not the promotion " + std::string(name(ct))));
  Array ac = a.dtype() == ct ? a : converted(a, ct);
  if (b.dtype() == ct) {
    gemm_blas(ac, b, out, 0, op);
    return;
  }
  // b widened to f32 a column panel at a time (weights are never held in f32 whole).
  int64_t distinct = 1;  // b entries actually stored (broadcast batch dims count once)
  for (int d = 0; d < nd - 2; ++d)
    if (b.strides()[d] != 0) distinct *= b.shape()[d];
  const int64_t panel = std::min(n, std::max<int64_t>(64, kPanelElems / std::max<int64_t>(1, k * distinct)));
  for (int64_t n0 = 0; n0 < n; n0 += panel) {
    const int64_t nb = std::min(panel, n - n0);
    Shape ps = b.shape();
    ps.back() = nb;
    Array bp(b.buffer(), ps, b.strides(), b.offset() + n0 * b.strides()[nd - 1], b.dtype());
    gemm_blas(ac, converted(bp, ct), out, n0, op);
  }
}

namespace detail {

// gather_mm's decode path (see gather_mm.cu): out [P, M, N] = a[lhs[p]] @ b[rhs[p]] for a contiguous
// [Ba, M, K] and b [Bb, K, N] whose K stride is 1 (stacked expert weights [E, N, K] seen transposed).
// Returns false (and does nothing) when M > 8 or b's layout does not fit.
bool gemv_gather(const Array& a, const Array& b, const Array& lhs, const Array& rhs, Array& out) {
  const int64_t m = a.shape(-2), k = a.shape(-1), n = b.shape(-1);
  if (m > 8 || (k != 1 && b.strides()[1] != 1)) return false;
  GemvArgs g{};
  g.x = a.raw_data();
  g.w = b.raw_data();
  g.out = out.raw_data();
  g.m = static_cast<int>(m);
  g.n = n;
  g.k = k;
  g.ldx = k;
  g.ldw = n == 1 ? k : b.strides()[2];
  g.batch.nd = 1;
  g.batch.shape[0] = lhs.size();
  g.batch.sx[0] = m * k;
  g.batch.sw[0] = b.strides()[0];
  g.batch.lhs = lhs.data<int32_t>();
  g.batch.rhs = rhs.data<int32_t>();
  g.batch.count = lhs.size();
  if (k == 0) {
    LOOM_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), stream_of(out)));
    return true;
  }
  run_gemv(g, a.dtype(), b.dtype(), out.dtype(), stream_of(out), "gather_mm");
  return true;
}

}  // namespace detail

// Decode shapes (M <= 8, up to kGemvSegs weights of one dtype, 16-byte aligned rows; swiglu pairs when
// the rows per warp are even) run as one GEMV launch; the rest as one matmul per weight (and the swiglu
// kernel).
void matmul_t_group(const Array& x, const std::vector<Array>& ws, bool swiglu, std::vector<Array>& outs) {
  const int64_t k = x.shape(-1), m = k ? x.size() / k : 0;
  auto wt = [](const Array& w) {  // the transposed view matmul takes
    return Array(w.buffer(), Shape{w.shape(1), w.shape(0)}, Strides{1, w.shape(1)}, w.offset(), w.dtype());
  };
  GemvLaunch L{};
  L.nseg = static_cast<int>(ws.size());
  bool fused = m >= 1 && m <= 8 && k > 0 && L.nseg <= kGemvSegs && (!swiglu || gemv_swiglu_fits(m));
  for (int i = 0; fused && i < L.nseg; ++i) {
    GemvArgs& g = L.seg[i];
    g.x = x.raw_data();
    g.w = ws[i].raw_data();
    g.out = outs[swiglu ? 0 : i].raw_data();
    g.m = static_cast<int>(m);
    g.n = ws[i].shape(0);
    g.k = k;
    g.ldx = k;
    g.ldw = k;
    g.batch.count = 1;
    g.vec = gemv_vec(g, x.dtype(), ws[i].dtype());
    fused = g.vec;
  }
  if (!fused) {
    run_product_group(
        ws.size(), swiglu, outs, [&](size_t i, Array& out) { matmul(x, wt(ws[i]), out); },
        [](const Array& g, const Array& u, Array& out) { loom::cuda::swiglu(g, u, out); });
    return;
  }
  L.early = true;  // model weights (kernel_api.inc)
  run_gemv(L, swiglu, x.dtype(), ws[0].dtype(), outs[0].dtype(), stream_of(outs[0]), "matmul");
}

}  // namespace loom::cuda
