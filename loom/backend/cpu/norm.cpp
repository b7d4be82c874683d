// Normalisation kernels over the last axis of contiguous rows, f32 math, output in out's dtype.
#include <cmath>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

void load(const Array& a, int64_t r, int64_t d, float* dst) {
  convert_span(static_cast<const uint8_t*>(a.raw_data()) + r * d * a.itemsize(), a.dtype(), dst, Dtype::f32, d);
}
void store(Array& a, int64_t r, int64_t d, const float* src) {
  convert_span(src, Dtype::f32, static_cast<uint8_t*>(a.raw_data()) + r * d * a.itemsize(), a.dtype(), d);
}
std::vector<float> vec_or_empty(const Array& w) { return w.valid() ? w.to_float_vector() : std::vector<float>{}; }

void rms_rows(const Array& src, const Array& weight, float eps, Array& out, Array* sum, const Array* residual) {
  int64_t d = src.shape().back();
  int64_t rows = d ? src.size() / d : 0;
  std::vector<float> w = vec_or_empty(weight);
  parallel_for(rows, 4, [&](int64_t b, int64_t e) {
    std::vector<float> x(d), res(residual ? d : 0);
    for (int64_t r = b; r < e; ++r) {
      load(src, r, d, x.data());
      if (residual) {
        load(*residual, r, d, res.data());
        for (int64_t i = 0; i < d; ++i) x[i] += res[i];
        store(*sum, r, d, x.data());
        load(*sum, r, d, x.data());  // normalise the rounded sum, as the unfused pair would
      }
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(x[i]) * x[i];
      float inv = 1.0f / std::sqrt(static_cast<float>(ss / d) + eps);
      if (w.empty())
        for (int64_t i = 0; i < d; ++i) x[i] *= inv;
      else
        for (int64_t i = 0; i < d; ++i) x[i] = x[i] * inv * w[i];
      store(out, r, d, x.data());
    }
  });
}

}  // namespace

void rms_norm(const Array& x, const Array& weight, float eps, Array& out) {
  rms_rows(x, weight, eps, out, nullptr, nullptr);
}

void add_rms_norm(const Array& x, const Array& residual, const Array& weight, float eps, Array& out, Array& sum) {
  rms_rows(x, weight, eps, out, &sum, &residual);
}

void layer_norm(const Array& x, const Array& weight, const Array& bias, float eps, Array& out) {
  int64_t d = x.shape().back();
  int64_t rows = d ? x.size() / d : 0;
  std::vector<float> w = vec_or_empty(weight), bv = vec_or_empty(bias);
  parallel_for(rows, 4, [&](int64_t b, int64_t e) {
    std::vector<float> v(d);
    for (int64_t r = b; r < e; ++r) {
      load(x, r, d, v.data());
      double mean = 0;
      for (float f : v) mean += f;
      mean /= d;
      double var = 0;
      for (float f : v) var += (f - mean) * (f - mean);
      var /= d;
      float inv = 1.0f / std::sqrt(static_cast<float>(var) + eps);
      for (int64_t i = 0; i < d; ++i) {
        float y = (v[i] - static_cast<float>(mean)) * inv;
        if (!w.empty()) y *= w[i];
        if (!bv.empty()) y += bv[i];
        v[i] = y;
      }
      store(out, r, d, v.data());
    }
  });
}

}  // namespace loom::cpu
