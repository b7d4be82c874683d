// Helpers shared by the op tests: deterministic random arrays, non-contiguous views of them, and a
// tolerance check that reports the worst mismatch (index, values, error) when it fails.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "loom/core/array.h"
#include "loom/ops/ops.h"

namespace loom::test {

// Uniform values in [lo, hi) from a fixed seed, stored as `dtype`.
inline Array rand_array(const Shape& shape, uint32_t seed, Dtype dtype = Dtype::f32, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(shape_size(shape)));
  for (auto& x : v) x = dist(rng);
  return Array::from(v, shape, dtype);
}

// A non-contiguous array of `shape` whose last axis is a slice of a wider buffer (row gaps).
inline Array rand_gapped(const Shape& shape, uint32_t seed, Dtype dtype = Dtype::f32, float lo = -1.0f, float hi = 1.0f) {
  Shape wide = shape;
  wide.back() += 3;
  Array base = rand_array(wide, seed, dtype, lo, hi);
  Array v = slice_axis(base, -1, 2, 2 + shape.back());
  return v;
}

// A non-contiguous array of `shape` (ndim >= 2) made by swapping axes `a1` and `a2` of a contiguous array.
inline Array rand_swapped(const Shape& shape, uint32_t seed, int a1, int a2, Dtype dtype = Dtype::f32, float lo = -1.0f,
                          float hi = 1.0f) {
  Shape s = shape;
  int n = static_cast<int>(s.size());
  int x1 = a1 < 0 ? a1 + n : a1, x2 = a2 < 0 ? a2 + n : a2;
  std::swap(s[x1], s[x2]);
  return swapaxes(rand_array(s, seed, dtype, lo, hi), a1, a2);
}

inline std::string index_str(const Shape& shape, int64_t flat) {
  std::vector<int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return shape_str(idx);
}

// Compares two value lists: max |a - e| must be <= rel_tol * max |e| (or <= abs_floor when max |e| is 0).
// NaN must match NaN, infinities must match exactly. Returns a failure message naming the worst element.
inline ::testing::AssertionResult close_values(const std::vector<double>& a, const std::vector<double>& e,
                                               const Shape& shape, double rel_tol, double abs_floor = 1e-30) {
  if (a.size() != e.size())
    return ::testing::AssertionFailure() << "size " << a.size() << " vs expected " << e.size();
  double emax = 0;
  for (double x : e)
    if (std::isfinite(x)) emax = std::max(emax, std::fabs(x));
  double bound = std::max(rel_tol * emax, abs_floor);
  double worst = -1;
  int64_t wi = -1;
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double err;
    if (std::isnan(e[i]) || std::isnan(a[i])) err = (std::isnan(e[i]) && std::isnan(a[i])) ? 0 : INFINITY;
    else if (std::isinf(e[i]) || std::isinf(a[i])) err = a[i] == e[i] ? 0 : INFINITY;
    else err = std::fabs(a[i] - e[i]);
    if (err > bound) ++bad;
    if (err > worst) {
      worst = err;
      wi = static_cast<int64_t>(i);
    }
  }
  std::ostringstream msg;
  msg.precision(9);
  if (wi >= 0)
    msg << "worst |diff| " << worst << " at " << index_str(shape, wi) << " (flat " << wi << "): got " << a[wi]
        << ", expected " << e[wi] << "; bound " << bound << " (rel " << rel_tol << " x max|ref| " << emax << "), "
        << bad << " of " << a.size() << " elements out of bound";
  if (bad > 0) return ::testing::AssertionFailure() << msg.str();
  return ::testing::AssertionSuccess() << msg.str();
}

// Arrays: same shape, values within rel_tol * max|expected|.
inline ::testing::AssertionResult all_close(const Array& actual, const Array& expected, double rel_tol,
                                            double abs_floor = 1e-30) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(actual.shape()) << " vs expected "
                                         << shape_str(expected.shape());
  return close_values(actual.to_vector<double>(), expected.to_vector<double>(), actual.shape(), rel_tol, abs_floor);
}

}  // namespace loom::test
