// The logits-level check of quantized_matmul's fast tier (int8 activations) against its exact tier, shared
// by the CPU tests (tests/quant/qmm_fast_test.cpp, where the bound is argued) and the GPU's
// (tests/cuda/quant_models_test.cpp).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "loom/core/array.h"
#include "tests/nan_max.h"

namespace loom::test {

// fast (a) vs exact (b) logits [T, V]: max |a - b| / max |b| below `max_rel` (when > 0), and the argmax
// equal wherever b's top-2 margin exceeds twice that position's largest logit error. `ran`: whether the
// fast tier computed a (a differs from b somewhere), else a must equal b.
inline void expect_fast_logits_close(const Array& a, const Array& b, double max_rel, const std::string& what, bool ran = true) {
  auto x = a.to_float_vector(), y = b.to_float_vector();
  const int64_t T = b.shape(0), V = b.shape(1);
  double md = 0, mr = 0;
  for (size_t i = 0; i < x.size(); ++i)
    md = nan_max(md, double(std::abs(x[i] - y[i]))), mr = std::max(mr, double(std::abs(y[i])));
  if (max_rel > 0) EXPECT_LT(md / mr, max_rel) << what;
  if (!ran) {
    EXPECT_EQ(md, 0.0) << what << ": only the exact tier should run";
    return;
  }
  EXPECT_GT(md, 0.0) << what << ": the fast tier did not run";
  int checked = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* xa = x.data() + t * V;
    const float* yb = y.data() + t * V;
    double err = 0;
    int64_t ia = 0, ib = 0;
    for (int64_t v = 0; v < V; ++v) {
      err = nan_max(err, double(std::abs(xa[v] - yb[v])));
      if (xa[v] > xa[ia]) ia = v;
      if (yb[v] > yb[ib]) ib = v;
    }
    double second = -INFINITY;
    for (int64_t v = 0; v < V; ++v)
      if (v != ib) second = std::max(second, double(yb[v]));
    // If every logit moves by at most err, a margin above 2 * err keeps the same argmax.
    if (yb[ib] - second > 2 * err) {
      ++checked;
      EXPECT_EQ(ia, ib) << what << " position " << t;
    }
  }
  EXPECT_GT(checked, 0) << what << ": no position had a margin to check";
}

}  // namespace loom::test
