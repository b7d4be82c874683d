// gather_qmm on the CPU: the (x row block, quantized matrix) pairs are grouped by matrix (a stable sort
// of the pair list by rhs index), and each selected matrix runs once through the quantized_matmul
// kernel (backend/cpu/quantized.cpp) on views of its packed words, scales and biases: with few rows
// (decode: one pair per expert, M = 1) that is the fused dequantize + GEMV streaming only that
// expert's rows; with many (prefill, the sorted-tokens case) it is one dequantized-panel GEMM per
// expert; with QmmPrecision::fast and affine 4/8-bit experts both cases take quantized_matmul's int8
// tier instead (activations quantized per call, integer dot products). Only the selected matrices are
// read. A group of one pair reads x and writes out in place;
// larger groups gather their x rows into a scratch array and scatter the result rows back.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "loom/backend/cpu/kernels.h"

namespace loom::cpu {
namespace {

// A contiguous 2-d view [rows, cols] of `a`'s buffer starting `elem_offset` elements past a's offset.
Array view2d(const Array& a, int64_t elem_offset, int64_t rows, int64_t cols) {
  return Array(a.buffer(), {rows, cols}, {cols, 1}, a.offset() + elem_offset, a.dtype());
}

}  // namespace

void gather_qmm(const Array& x, const Array& wq, const Array& scales, const Array& biases, const Array& lhs,
                const Array& rhs, bool transpose, const QuantSpec& spec, float global_scale, Array& out) {
  const int64_t P = lhs.size(), M = x.shape(1), K = x.shape(2), N = out.shape(-1);
  const int64_t rows = wq.shape(1), words = wq.shape(2), groups = scales.shape(2);
  const int32_t* li = lhs.data<int32_t>();
  const int32_t* ri = rhs.data<int32_t>();
  const bool affine = spec.mode == QuantMode::affine;
  std::vector<int64_t> order(P);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [ri](int64_t a, int64_t b) { return ri[a] < ri[b]; });
  const size_t xrow = static_cast<size_t>(K) * x.itemsize(), orow = static_cast<size_t>(N) * out.itemsize();
  for (int64_t s = 0; s < P;) {
    int64_t e = s + 1;
    while (e < P && ri[order[e]] == ri[order[s]]) ++e;
    const int64_t w = ri[order[s]], cnt = e - s;
    Array wq_e = view2d(wq, w * rows * words, rows, words);
    Array sc_e = view2d(scales, w * rows * groups, rows, groups);
    Array bi_e = affine ? view2d(biases, w * rows * groups, rows, groups) : Array();
    if (cnt == 1) {
      const int64_t p = order[s];
      Array xv = view2d(x, static_cast<int64_t>(li[p]) * M * K, M, K);
      Array ov = view2d(out, p * M * N, M, N);
      quantized_matmul(xv, wq_e, sc_e, bi_e, transpose, spec, global_scale, ov);
    } else {
      Array xg = Array::empty({cnt * M, K}, x.dtype(), Device::cpu());
      Array yg = Array::empty({cnt * M, N}, out.dtype(), Device::cpu());
      auto* xd = static_cast<uint8_t*>(xg.raw_data());
      const auto* xs = static_cast<const uint8_t*>(x.raw_data());
      for (int64_t i = 0; i < cnt; ++i)
        std::memcpy(xd + i * M * xrow, xs + static_cast<int64_t>(li[order[s + i]]) * M * xrow, M * xrow);
      quantized_matmul(xg, wq_e, sc_e, bi_e, transpose, spec, global_scale, yg);
      auto* od = static_cast<uint8_t*>(out.raw_data());
      const auto* ys = static_cast<const uint8_t*>(yg.raw_data());
      for (int64_t i = 0; i < cnt; ++i) std::memcpy(od + order[s + i] * M * orow, ys + i * M * orow, M * orow);
    }
    s = e;
  }
}

}  // namespace loom::cpu
