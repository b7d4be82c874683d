// Iteration over strided operands that share one shape: dims are collapsed where every operand is
// contiguous across them, then fn(offsets, n, inner_strides) runs once per innermost row.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "loom/core/array.h"

namespace loom::cpu {

template <size_t N>
struct StridedLoop {
  std::vector<int64_t> shape;
  std::array<std::vector<int64_t>, N> strides;

  StridedLoop(const Shape& s, const std::array<const Strides*, N>& st) {
    // Drop size-1 dims, then merge dim d into d+1 when every operand is contiguous across them.
    for (size_t d = 0; d < s.size(); ++d) {
      if (s[d] == 1) continue;
      shape.push_back(s[d]);
      for (size_t k = 0; k < N; ++k) strides[k].push_back((*st[k])[d]);
    }
    if (shape.empty()) {
      shape.push_back(1);
      for (size_t k = 0; k < N; ++k) strides[k].push_back(0);
    }
    std::vector<int64_t> ms{shape[0]};
    std::array<std::vector<int64_t>, N> mst;
    for (size_t k = 0; k < N; ++k) mst[k].push_back(strides[k][0]);
    for (size_t d = 1; d < shape.size(); ++d) {
      bool merge = true;
      for (size_t k = 0; k < N; ++k)
        if (mst[k].back() != strides[k][d] * shape[d]) merge = false;
      if (merge) {
        ms.back() *= shape[d];
        for (size_t k = 0; k < N; ++k) mst[k].back() = strides[k][d];
      } else {
        ms.push_back(shape[d]);
        for (size_t k = 0; k < N; ++k) mst[k].push_back(strides[k][d]);
      }
    }
    shape = ms;
    strides = mst;
  }

  int64_t rows() const {
    int64_t r = 1;
    for (size_t d = 0; d + 1 < shape.size(); ++d) r *= shape[d];
    return r;
  }
  int64_t inner() const { return shape.back(); }

  // Offsets (in elements) of row `r` for every operand.
  std::array<int64_t, N> row_offsets(int64_t r) const {
    std::array<int64_t, N> off{};
    for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) {
      int64_t i = r % shape[d];
      r /= shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * strides[k][d];
    }
    return off;
  }

  template <typename F>
  void for_rows(int64_t begin, int64_t end, F&& fn) const {
    std::array<int64_t, N> inner_st;
    for (size_t k = 0; k < N; ++k) inner_st[k] = strides[k].back();
    for (int64_t r = begin; r < end; ++r) fn(row_offsets(r), inner(), inner_st);
  }
};

}  // namespace loom::cpu
