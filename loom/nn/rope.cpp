#include "loom/nn/rope.h"

#include <algorithm>
#include <cmath>

#include "loom/common/error.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

std::vector<double> base_periods(int dims, double base) {
  std::vector<double> f(dims / 2);
  for (int i = 0; i < dims / 2; ++i) f[i] = std::pow(base, 2.0 * i / dims);
  return f;
}

Array to_array(const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  return Array::from(f, {static_cast<int64_t>(f.size())});
}

// transformers' _compute_llama3_parameters, written as periods (1 / inv_freq).
std::vector<double> llama3_periods(int dims, double base, const RopeScaling& s) {
  double old_len = s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings : 8192;
  double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
  std::vector<double> p = base_periods(dims, base);
  for (auto& period : p) {
    double inv = 1.0 / period, wavelen = 2 * M_PI / inv;
    double scaled = wavelen > low_wavelen ? inv / s.factor : inv;
    double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    double smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    period = 1.0 / (medium ? smoothed : scaled);
  }
  return p;
}

double yarn_get_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// transformers' _compute_yarn_parameters (truncate = true), as periods.
std::vector<double> yarn_periods(int dims, double base, const RopeScaling& s, int64_t max_pos, float* mscale) {
  double orig = s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings : max_pos;
  auto correction_dim = [&](double rot) { return dims * std::log(orig / (rot * 2 * M_PI)) / (2 * std::log(base)); };
  double low = std::max(0.0, std::floor(correction_dim(s.beta_fast)));
  double high = std::min(static_cast<double>(dims - 1), std::ceil(correction_dim(s.beta_slow)));
  if (low == high) high += 0.001;
  std::vector<double> p(dims / 2);
  for (int i = 0; i < dims / 2; ++i) {
    double extra = 1.0 / std::pow(base, 2.0 * i / dims);  // inv freq, extrapolation
    double inter = extra / s.factor;                       // inv freq, interpolation
    double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    double extra_factor = 1.0 - ramp;
    double inv = inter * (1 - extra_factor) + extra * extra_factor;
    p[i] = 1.0 / inv;
  }
  if (s.attention_factor > 0) {
    *mscale = static_cast<float>(s.attention_factor);
  } else if (s.mscale_all_dim != 0) {
    *mscale = static_cast<float>(yarn_get_mscale(s.factor, s.mscale) / yarn_get_mscale(s.factor, s.mscale_all_dim));
  } else {
    *mscale = static_cast<float>(yarn_get_mscale(s.factor, 1.0));
  }
  return p;
}

}  // namespace

Rope::Rope(int dims, double base, bool traditional, const RopeScaling& s, int64_t max_pos)
    : dims_(dims), base_(base), traditional_(traditional), scaling_(s), max_pos_(max_pos) {
  const std::string& t = s.type;
  if (t == "default") {
  } else if (t == "linear") {
    scale_ = static_cast<float>(1.0 / s.factor);
  } else if (t == "dynamic") {
    if (max_pos <= 0) throw ConfigError(format_error("rope", "dynamic scaling needs max_position_embeddings"));
  } else if (t == "llama3") {
    freqs_ = to_array(llama3_periods(dims, base, s));
  } else if (t == "yarn" || t == "deepseek_yarn") {
    freqs_ = to_array(yarn_periods(dims, base, s, max_pos, &mscale_));
  } else if (t == "longrope" || t == "su") {
    // transformers: short factors while the sequence fits the original context, long ones beyond.
    if (s.short_factor.size() != static_cast<size_t>(dims / 2) || s.long_factor.size() != static_cast<size_t>(dims / 2))
      throw ConfigError(format_error("rope", "longrope needs short_factor and long_factor of length " + std::to_string(dims / 2)));
    std::vector<double> b = base_periods(dims, base), lf = b, sf = b;
    for (int i = 0; i < dims / 2; ++i) lf[i] *= s.long_factor[i], sf[i] *= s.short_factor[i];
    freqs_ = to_array(lf);
    short_freqs_ = to_array(sf);
    double orig = s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings : max_pos;
    double factor = orig > 0 ? static_cast<double>(max_pos) / orig : 1.0;
    if (s.attention_factor > 0) mscale_ = static_cast<float>(s.attention_factor);
    else mscale_ = factor <= 1.0 ? 1.0f : static_cast<float>(std::sqrt(1 + std::log(factor) / std::log(orig)));
  } else {
    throw NotSupportedError(format_error("rope", "unsupported rope_scaling type '" + t +
                                                     "' (supported: default, linear, dynamic, llama3, yarn, longrope)"));
  }
}

Array Rope::freqs_for(int64_t total_len) const {
  if (short_freqs_.valid()) {
    int64_t orig = scaling_.original_max_position_embeddings > 0 ? scaling_.original_max_position_embeddings : max_pos_;
    return total_len > orig ? freqs_ : short_freqs_;
  }
  return freqs_;
}

RopeSpec Rope::spec_for(int64_t total_len) const {
  RopeSpec spec{.dims = dims_, .traditional = traditional_, .base = static_cast<float>(base_), .scale = scale_,
                .freqs = freqs_for(total_len)};
  if (scaling_.type == "dynamic") {
    double seq = std::max<double>(static_cast<double>(total_len), static_cast<double>(max_pos_));
    double f = scaling_.factor;
    spec.base = static_cast<float>(base_ * std::pow(f * seq / max_pos_ - (f - 1), dims_ / (dims_ - 2.0)));
  }
  return spec;
}

std::vector<double> Rope::inv_freq(int64_t total_len) const {
  RopeSpec spec = spec_for(total_len);
  std::vector<double> out(dims_ / 2);
  std::vector<float> periods = spec.freqs.valid() ? spec.freqs.to_float_vector() : std::vector<float>{};
  for (int i = 0; i < dims_ / 2; ++i)
    out[i] = spec.scale * (periods.empty() ? std::pow(static_cast<double>(spec.base), -2.0 * i / dims_) : 1.0 / periods[i]);
  return out;
}

Array Rope::apply(const Array& x_in, int64_t offset, const Array* offsets, int64_t total_len) const {
  Array x = x_in;
  if (mscale_ != 1.0f) {
    // Scale the rotated features only (the pass-through part of a partial rotary stays as is).
    if (dims_ == x.shape(-1)) {
      x = x * static_cast<double>(mscale_);
    } else {
      x = concatenate({slice_axis(x, -1, 0, dims_) * static_cast<double>(mscale_), slice_axis(x, -1, dims_, x.shape(-1))}, -1);
    }
  }
  RopeSpec spec = spec_for(total_len);
  return offsets ? fast::rope(x, spec, *offsets) : fast::rope(x, spec, offset);
}

Array Rope::operator()(const Array& x, int64_t offset) const { return apply(x, offset, nullptr, offset + x.shape(-2)); }

Array Rope::operator()(const Array& x, const Array& offsets, std::optional<int64_t> total_len) const {
  const bool length_dependent = short_freqs_.valid() || scaling_.type == "dynamic";
  if (!total_len && length_dependent) {
    int64_t mx = 0;
    for (int64_t o : offsets.to_vector<int64_t>()) mx = std::max(mx, o);
    total_len = mx + x.shape(-2);
  }
  return apply(x, 0, &offsets, total_len.value_or(0));
}

}  // namespace loom::nn
