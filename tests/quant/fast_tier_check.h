// Checks of quantized_matmul's fast tier (integer activations) shared by the CPU tests
// (tests/quant/qmm_fast_test.cpp, where the bounds are argued) and the GPU's (tests/cuda/): the activation
// quantizer and the product as the tier defines them, and the logits-level check against the exact tier.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "loom/core/array.h"
#include "tests/nan_max.h"

namespace loom::test {

// The activation quantizer as specified, in f32 steps: per block of 32, d = max|x| / qmax, id = 1 / d (0
// when d is 0), q = nearest-even of x * id. qmax: 127 (int8 codes: llama.cpp's Q8_0 quantizer), or 32767
// (the CPU's int16 codes for 8-bit weights).
inline void quantize_x_ref(const float* x, int64_t k, std::vector<int>& q, std::vector<float>& d, float qmax) {
  q.assign(k, 0);
  d.assign(k / 32, 0.0f);
  for (int64_t b = 0; b < k / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::abs(x[b * 32 + j]));
    float db = amax / qmax;
    float id = db != 0.0f ? 1.0f / db : 0.0f;
    d[b] = db;
    for (int j = 0; j < 32; ++j) q[b * 32 + j] = static_cast<int>(std::nearbyint(x[b * 32 + j] * id));
  }
}

// The fast tier's product from its definition, in f64: out[i, r] = sum_j w[r, j] * d_b(j) * q_j with x's row
// i quantized by quantize_x_ref. x [m, k] (any float dtype, k a multiple of 32), w [n, k] the dequantized
// weights; out [m, n] f32.
inline Array fast_tier_product(const Array& x, const Array& w, float qmax) {
  const int64_t k = x.shape(-1), m = x.size() / k, n = w.size() / k;
  const std::vector<float> xv = x.to_float_vector(), wv = w.to_float_vector();
  std::vector<float> out(m * n);
  std::vector<int> q;
  std::vector<float> d;
  for (int64_t i = 0; i < m; ++i) {
    quantize_x_ref(xv.data() + i * k, k, q, d, qmax);
    for (int64_t r = 0; r < n; ++r) {
      double y = 0;
      for (int64_t j = 0; j < k; ++j) y += double(wv[r * k + j]) * (double(d[j / 32]) * q[j]);
      out[i * n + r] = static_cast<float>(y);
    }
  }
  return Array::from(out, {m, n});
}

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
