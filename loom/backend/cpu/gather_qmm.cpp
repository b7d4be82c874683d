// gather_qmm on the CPU: the (x row block, quantized matrix) pairs are grouped by matrix (a stable sort
// of the pair list by rhs index), and each selected matrix runs once through the quantized_matmul
// kernel (backend/cpu/quantized.cpp) on views of its packed words, scales and biases: with few rows
// (decode: one pair per expert, M = 1) that is the fused dequantize + GEMV streaming only that
// expert's rows; with many (prefill, the sorted-tokens case) it is one dequantized-panel GEMM per
// expert; when quantized_matmul's int8 tier takes every selected expert, all of them run as one
// qmm_int8_batch pass instead (gather_int8). Only the selected matrices are read. A group of one pair
// reads x and writes out in place; larger groups gather their x rows into a scratch array and scatter the
// result rows back (gather_int8: only when their rows are not already consecutive).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/qmm_int8.h"

namespace loom::cpu {
namespace {

// A contiguous 2-d view [rows, cols] of `a`'s buffer starting `elem_offset` elements past a's offset.
Array view2d(const Array& a, int64_t elem_offset, int64_t rows, int64_t cols) {
  return Array(a.buffer(), {rows, cols}, {cols, 1}, a.offset() + elem_offset, a.dtype());
}

// The fast tier (when it takes every selected expert): all experts' products as one qmm_int8_batch pass
// (quantized_matmul's int8 kernels, so each row equals that call's). Decode's gate/up pairs, which read
// the token's row in place, share its quantization. Returns false, doing nothing, otherwise.
bool gather_int8(const Array& x, const Array& wq, const Array& scales, const Array& biases, const int32_t* li,
                 const int32_t* ri, const std::vector<int64_t>& order, bool transpose, const QuantSpec& spec,
                 float global_scale, Array& out) {
  const int64_t P = static_cast<int64_t>(order.size()), M = x.shape(1), K = x.shape(2), N = out.shape(-1);
  const int64_t rows = wq.shape(1), words = wq.shape(2), groups = scales.shape(2);
  std::vector<std::pair<int64_t, int64_t>> runs;  // [s, e) of `order` per selected matrix
  for (int64_t s = 0; s < P;) {
    int64_t e = s + 1;
    while (e < P && ri[order[e]] == ri[order[s]]) ++e;
    if (!takes_int8(scales, biases, spec, transpose, (e - s) * M)) return false;
    runs.push_back({s, e});
    s = e;
  }
  // A run reads x in place when x is f32 and its pairs' rows are consecutive (a single pair, or sorted
  // tokens), and writes out in place when out is f32 and its pairs are consecutive; else through f32
  // scratch rows.
  const bool xf32 = x.dtype() == Dtype::f32, of32 = out.dtype() == Dtype::f32;
  auto consecutive = [&](int64_t s, int64_t e, auto&& at) {
    for (int64_t i = s + 1; i < e; ++i)
      if (at(i) != at(s) + (i - s)) return false;
    return true;
  };
  std::vector<int64_t> xat(runs.size(), -1), yat(runs.size(), -1);  // scratch row offsets (-1: in place)
  int64_t xrows = 0, yrows = 0;
  for (size_t g = 0; g < runs.size(); ++g) {
    const auto [s, e] = runs[g];
    if (!xf32 || !consecutive(s, e, [&](int64_t i) { return int64_t{li[order[i]]}; }))
      xat[g] = xrows, xrows += (e - s) * M;
    if (!of32 || !consecutive(s, e, [&](int64_t i) { return order[i]; })) yat[g] = yrows, yrows += (e - s) * M;
  }
  std::vector<float> xbuf(xrows * K), ybuf(yrows * N);
  const auto* xs = static_cast<const uint8_t*>(x.raw_data());
  auto* od = static_cast<uint8_t*>(out.raw_data());
  const size_t ssz = size_of(scales.dtype());
  std::vector<QmmInt8Product> jobs;
  for (size_t g = 0; g < runs.size(); ++g) {
    const auto [s, e] = runs[g];
    const float* xp;
    if (xat[g] < 0) {
      xp = x.data<float>() + static_cast<int64_t>(li[order[s]]) * M * K;
    } else {
      for (int64_t i = s; i < e; ++i)
        convert_span(xs + static_cast<int64_t>(li[order[i]]) * M * K * x.itemsize(), x.dtype(),
                     xbuf.data() + (xat[g] + (i - s) * M) * K, Dtype::f32, M * K);
      xp = xbuf.data() + xat[g] * K;
    }
    float* yp = yat[g] < 0 ? out.data<float>() + order[s] * M * N : ybuf.data() + yat[g] * N;
    const int64_t w = ri[order[s]];
    const QmmInt8Operand op{
        wq.data<uint32_t>() + w * rows * words,
        static_cast<const uint8_t*>(scales.raw_data()) + w * rows * groups * ssz,
        biases.valid() ? static_cast<const uint8_t*>(biases.raw_data()) + w * rows * groups * ssz : nullptr,
        scales.dtype(),
        rows,
        yp,
        global_scale};
    jobs.push_back({xp, (e - s) * M, op});
  }
  qmm_int8_batch(K, spec, jobs.data(), jobs.size());
  for (size_t g = 0; g < runs.size(); ++g)
    if (yat[g] >= 0)
      for (int64_t i = runs[g].first; i < runs[g].second; ++i)
        convert_span(ybuf.data() + (yat[g] + (i - runs[g].first) * M) * N, Dtype::f32,
                     od + order[i] * M * N * out.itemsize(), out.dtype(), M * N);
  return true;
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
  if (gather_int8(x, wq, scales, biases, li, ri, order, transpose, spec, global_scale, out)) return;
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
