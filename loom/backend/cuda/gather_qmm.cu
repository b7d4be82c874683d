// gather_qmm on CUDA (CPU twin: backend/cpu/gather_qmm.cpp). Three paths:
//  - W transposed (the MoE layers' layout), at most 8 rows per pair and P * M <= kGemvPairRows (decode, for
//    any batch a decode step sees): one launch of quantized.cu's decode GEMV over all pairs (blockIdx.y =
//    pair; the pair's expert and x block are read from the index arrays on the device, no host sync, so a
//    CUDA graph can capture it). Each pair is one GEMV over its expert's packed rows, with the arithmetic
//    of quantized_matmul's decode kernel (results within f32 rounding of the twin).
//  - other few-row cases (W not transposed, P * M <= kDirectRows): one launch, no host sync. Each warp
//    computes one output element: its lanes stride over K, decode the selected matrix's codes in place
//    (any affine width 2-8, E2M1, E4M3; a code may straddle two words), scale them per group (affine value =
//    q * scale + bias as the CPU twin's dequantize), multiply with x and reduce by shuffles, accumulating in
//    f32 and rounding once at the store. Only the selected matrices are read.
//  - many rows (prefill only: above both thresholds): the pairs are grouped by matrix on the host (the index
//    arrays are copied back, one stream sync; decode never gets here), x's rows are gathered into expert
//    order (take_rows), each selected matrix runs once through quantized_matmul on views of its words,
//    scales and biases (dequantized panels + a GEMM), and a second take_rows puts the result rows back in
//    pair order.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"

namespace loom::cuda {

namespace {

constexpr int64_t kGemvPairRows = 1024;  // P * M up to which transposed pairs take the decode GEMV
constexpr int64_t kDirectRows = 64;
constexpr int kWarps = 8;  // warps (output elements) per block of the direct kernel

struct QmmArgs {
  const void* x;       // [Bx, M, K]
  const uint32_t* wq;  // [E, rows, words]
  const void* scales;  // [E, rows, groups]: affine scales (ST) or fp-mode bytes
  const void* biases;  // affine: [E, rows, groups] (ST)
  const int32_t* lhs;  // [P]
  const int32_t* rhs;  // [P]
  void* out;           // [P, M, N]
  int64_t p, m, k, n, rows, words, groups;
  int bits, gs, mode;  // mode: QuantMode as int
  bool transpose;
  float gmul;  // nvfp4 global scale factor, else 1
};

__device__ __forceinline__ float e2m1_value(uint32_t c) {
  const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float v = mag[c & 7u];
  return (c & 8u) ? -v : v;
}

__device__ __forceinline__ float e4m3_value(uint32_t c) {
  const float v = __uint_as_float((c & 0x7Fu) << 20) * 0x1p120f;
  return (c & 0x80u) ? -v : v;
}

__device__ __forceinline__ float e8m0_value(uint32_t s) { return __uint_as_float(s == 0 ? 0x00400000u : s << 23); }

// Code `col` of a packed row (LSB-first bit stream of `bits`-wide codes).
__device__ __forceinline__ uint32_t code_at(const uint32_t* row, int64_t col, int bits, int64_t words) {
  const int64_t bit = col * bits;
  const int64_t w = bit >> 5;
  const int sh = static_cast<int>(bit & 31);
  uint64_t two = row[w];
  if (sh + bits > 32 && w + 1 < words) two |= static_cast<uint64_t>(row[w + 1]) << 32;
  return static_cast<uint32_t>(two >> sh) & ((1u << bits) - 1u);
}

// Element (r, c) of matrix e, dequantized to f32.
template <typename ST>
__device__ __forceinline__ float weight_at(const QmmArgs& a, int64_t e, int64_t r, int64_t c) {
  const int64_t row = e * a.rows + r;
  const uint32_t q = code_at(a.wq + row * a.words, c, a.bits, a.words);
  const int64_t gi = row * a.groups + c / a.gs;
  if (a.mode == static_cast<int>(QuantMode::affine)) {
    const float s = to_f(static_cast<const ST*>(a.scales)[gi]), b = to_f(static_cast<const ST*>(a.biases)[gi]);
    return static_cast<float>(q) * s + b;
  }
  const uint32_t sb = static_cast<const uint8_t*>(a.scales)[gi];
  if (a.mode == static_cast<int>(QuantMode::mxfp8)) return e4m3_value(q) * e8m0_value(sb);
  if (a.mode == static_cast<int>(QuantMode::nvfp4)) return e2m1_value(q) * (e4m3_value(sb) * a.gmul);
  return e2m1_value(q) * e8m0_value(sb);  // mxfp4
}

// One warp per output element (p, m, n).
template <typename XT, typename ST, typename OT>
__global__ void __launch_bounds__(kWarps * 32) gather_qmm_direct_kernel(QmmArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t pm = blockIdx.y;  // p * M + m
  if (n >= a.n) return;
  const int64_t p = pm / a.m, m = pm - p * a.m;
  const int64_t e = a.rhs[p];
  const XT* x = static_cast<const XT*>(a.x) + (static_cast<int64_t>(a.lhs[p]) * a.m + m) * a.k;
  float acc = 0.0f;
  for (int64_t k = lane; k < a.k; k += 32) {
    const float w = a.transpose ? weight_at<ST>(a, e, n, k) : weight_at<ST>(a, e, k, n);
    acc = fmaf(to_f(x[k]), w, acc);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) static_cast<OT*>(a.out)[pm * a.n + n] = from_f<OT>(acc);
}

// A contiguous 2-d view [rows, cols] of `a`'s buffer starting `elem_offset` elements past a's offset.
Array view2d(const Array& a, int64_t elem_offset, int64_t rows, int64_t cols) {
  return Array(a.buffer(), {rows, cols}, {cols, 1}, a.offset() + elem_offset, a.dtype());
}

// An int32 device array holding `v`.
Array upload_i32(const std::vector<int32_t>& v, Device d, cudaStream_t s) {
  Array out = Array::empty({static_cast<int64_t>(v.size())}, Dtype::i32, d);
  // Pageable source: the call returns once the bytes are staged, so `v` may go away afterwards.
  LOOM_CUDA_CHECK(cudaMemcpyAsync(out.raw_data(), v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s));
  return out;
}

}  // namespace

namespace detail {  // defined in quantized.cu
bool quantized_gemv_fits(const QuantSpec& spec, int64_t m);
void quantized_gemv(const Array& x, const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec,
                    float global_scale, const Array& lhs, const Array& rhs, int64_t m, int64_t n, Array& out);
}  // namespace detail

void gather_qmm(const Array& x, const Array& wq, const Array& scales, const Array& biases, const Array& lhs,
                const Array& rhs, bool transpose, const QuantSpec& spec, float global_scale, Array& out) {
  const char* op = "gather_qmm";
  const int64_t P = lhs.size(), M = x.shape(1), K = x.shape(2), N = out.shape(-1);
  const int64_t rows = wq.shape(1), words = wq.shape(2), groups = scales.shape(2);
  const bool affine = spec.mode == QuantMode::affine;
  if (P == 0 || M == 0 || N == 0) return;
  cudaStream_t s = stream_of(out);
  if (affine && (!biases.valid() || biases.dtype() != scales.dtype()))
    throw Error(format_error(op, "affine biases must match the scales' dtype"));

  if (transpose && P * M <= kGemvPairRows && detail::quantized_gemv_fits(spec, M)) {
    const int64_t E = wq.shape(0);
    Array out2 = view2d(out, 0, P * M, N);
    detail::quantized_gemv(view2d(x, 0, x.shape(0) * M, K), view2d(wq, 0, E * rows, words),
                           view2d(scales, 0, E * rows, groups),
                           affine ? view2d(biases, 0, E * rows, groups) : Array(), spec, global_scale, lhs, rhs, M, N,
                           out2);
    return;
  }

  if (P * M <= kDirectRows) {
    QmmArgs a{};
    a.x = x.raw_data();
    a.wq = wq.data<uint32_t>();
    a.scales = scales.raw_data();
    a.biases = affine ? biases.raw_data() : nullptr;
    a.lhs = lhs.data<int32_t>();
    a.rhs = rhs.data<int32_t>();
    a.out = out.raw_data();
    a.p = P;
    a.m = M;
    a.k = K;
    a.n = N;
    a.rows = rows;
    a.words = words;
    a.groups = groups;
    a.bits = spec.bits;
    a.gs = spec.group_size;
    a.mode = static_cast<int>(spec.mode);
    a.transpose = transpose;
    a.gmul = global_scale > 0 ? global_scale / (448.0f * 6.0f) : 1.0f;
    dim3 grid(static_cast<unsigned>((N + kWarps - 1) / kWarps), static_cast<unsigned>(P * M));
    dispatch_float(x.dtype(), op, [&](auto xt) {
      dispatch_float(out.dtype(), op, [&](auto ot) {
        using XT = decltype(xt);
        using OT = decltype(ot);
        if (affine) {
          dispatch_float(scales.dtype(), op, [&](auto st) {
            gather_qmm_direct_kernel<XT, decltype(st), OT><<<grid, kWarps * 32, 0, s>>>(a);
          });
        } else {
          gather_qmm_direct_kernel<XT, float, OT><<<grid, kWarps * 32, 0, s>>>(a);
        }
      });
    });
    check_launch("gather_qmm_direct_kernel");
    return;
  }

  // Group the pairs by matrix on the host.
  std::vector<int32_t> hl(P), hr(P);
  LOOM_CUDA_CHECK(cudaMemcpyAsync(hl.data(), lhs.raw_data(), P * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaMemcpyAsync(hr.data(), rhs.raw_data(), P * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<int64_t> order(P);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&hr](int64_t a, int64_t b) { return hr[a] < hr[b]; });
  // Row i * M + m of the gathered x is x row lhs[order[i]] * M + m; result row p * M + m sits at pos[p * M + m].
  std::vector<int32_t> xrows(P * M), pos(P * M);
  for (int64_t i = 0; i < P; ++i)
    for (int64_t m = 0; m < M; ++m) {
      xrows[i * M + m] = static_cast<int32_t>(static_cast<int64_t>(hl[order[i]]) * M + m);
      pos[order[i] * M + m] = static_cast<int32_t>(i * M + m);
    }
  const Device dev = out.device();
  Array xi = upload_i32(xrows, dev, s), pi = upload_i32(pos, dev, s);
  Array xs = Array::empty({P * M, K}, x.dtype(), dev);
  loom::cuda::take_rows(view2d(x, 0, x.shape(0) * M, K), xi, xs);
  Array ys = Array::empty({P * M, N}, out.dtype(), dev);
  for (int64_t b = 0; b < P;) {
    int64_t e = b + 1;
    while (e < P && hr[order[e]] == hr[order[b]]) ++e;
    const int64_t w = hr[order[b]], cnt = e - b;
    Array sc_e = view2d(scales, w * rows * groups, rows, groups);
    Array bi_e = affine ? view2d(biases, w * rows * groups, rows, groups) : Array();
    Array y_e = view2d(ys, b * M * N, cnt * M, N);
    loom::cuda::quantized_matmul(view2d(xs, b * M * K, cnt * M, K), view2d(wq, w * rows * words, rows, words), sc_e,
                                 bi_e, transpose, spec, global_scale, y_e);
    b = e;
  }
  Array out2 = view2d(out, 0, P * M, N);
  loom::cuda::take_rows(ys, pi, out2);
}

}  // namespace loom::cuda
