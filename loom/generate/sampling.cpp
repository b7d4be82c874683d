// Sampler filters as row-wise ops on [B, V] arrays. The CPU kernels sit here until the ops layer
// grows argsort/argpartition/cumsum/random (then these become compositions of those ops, as in
// mlx-lm, and gain CUDA twins). Ties are broken by index so results are deterministic.
#include "loom/generate/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/ops/ops.h"

namespace loom::generate {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// f32, contiguous, on the CPU, viewed as [rows, V].
Array as_rows(const Array& x, const char* where) {
  if (x.ndim() < 1) throw ValueError(format_error(where, "expected logits [..., V], got a scalar"));
  if (!x.device().is_cpu()) throw NotSupportedError(format_error(where, "only CPU arrays are supported so far"));
  Array f = x.dtype() == Dtype::f32 ? contiguous(x) : astype(x, Dtype::f32);
  return f;
}

// Applies fn(in_row, out_row, V, row_index) to every row of a copy of x.
template <typename Fn>
Array map_rows(const Array& x, const char* where, Fn fn) {
  Array in = as_rows(x, where);
  Array out = Array::empty(in.shape(), Dtype::f32, Device::cpu());
  int64_t V = in.shape(-1);
  int64_t rows = V == 0 ? 0 : in.size() / V;
  const float* src = in.data<float>();
  float* dst = out.data<float>();
  for (int64_t r = 0; r < rows; ++r) fn(src + r * V, dst + r * V, V, r);
  return out;
}

}  // namespace

Array apply_top_k(const Array& logprobs, int top_k) {
  int64_t V = logprobs.ndim() ? logprobs.shape(-1) : 0;
  if (!(top_k > 0 && top_k < V))
    throw ValueError(format_error("apply_top_k", "`top_k` has to be an integer in the (0, " + std::to_string(V) +
                                                      ") interval, but is " + std::to_string(top_k)));
  return map_rows(logprobs, "apply_top_k", [&](const float* in, float* out, int64_t n, int64_t) {
    std::vector<int32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    // Larger first; equal values by lower index.
    std::nth_element(idx.begin(), idx.begin() + (top_k - 1), idx.end(),
                     [&](int32_t a, int32_t b) { return in[a] > in[b] || (in[a] == in[b] && a < b); });
    std::fill(out, out + n, kNegInf);
    for (int k = 0; k < top_k; ++k) out[idx[k]] = in[idx[k]];
  });
}

Array apply_min_p(const Array& logprobs, float min_p, int min_tokens_to_keep) {
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    throw ValueError(format_error("apply_min_p", "`min_p` has to be a float in the [0, 1] interval, but is " +
                                                      std::to_string(min_p)));
  if (min_tokens_to_keep < 1)
    throw ValueError(format_error("apply_min_p", "`min_tokens_to_keep` has to be a positive integer, but is " +
                                                      std::to_string(min_tokens_to_keep)));
  const float log_min_p = std::log(min_p);
  return map_rows(logprobs, "apply_min_p", [&](const float* in, float* out, int64_t n, int64_t) {
    float top = *std::max_element(in, in + n);
    float cut = top + log_min_p;  // log(min_p * p_max)
    for (int64_t i = 0; i < n; ++i) out[i] = in[i] < cut ? kNegInf : in[i];
    if (min_tokens_to_keep > 1) {
      int64_t keep = std::min<int64_t>(min_tokens_to_keep, n);
      std::vector<int32_t> idx(n);
      std::iota(idx.begin(), idx.end(), 0);
      std::nth_element(idx.begin(), idx.begin() + (keep - 1), idx.end(),
                       [&](int32_t a, int32_t b) { return in[a] > in[b] || (in[a] == in[b] && a < b); });
      for (int64_t k = 0; k < keep; ++k) out[idx[k]] = in[idx[k]];
    }
  });
}

Array apply_top_p(const Array& logprobs, float top_p) {
  return map_rows(logprobs, "apply_top_p", [&](const float* in, float* out, int64_t n, int64_t) {
    std::vector<int32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return in[a] < in[b]; });
    // Cumulative probability in ascending order, read back per token (in f32 like mlx's cumsum).
    float cum = 0.0f;
    const float bar = 1.0f - top_p;
    for (int32_t i : idx) {
      cum += std::exp(in[i]);
      out[i] = cum > bar ? in[i] : kNegInf;
    }
  });
}

Array apply_xtc(const Array& logits, float xtc_probability, float xtc_threshold,
                const std::vector<int32_t>& special_tokens, Rng& rng) {
  if (!(xtc_threshold >= 0.0f && xtc_threshold <= 0.5f))
    throw ValueError(format_error("apply_xtc", "`threshold` has to be a float in the [0, 0.5] interval, but is " +
                                                    std::to_string(xtc_threshold)));
  if (!(xtc_probability >= 0.0f && xtc_probability <= 1.0f))
    throw ValueError(format_error("apply_xtc", "`probability` has to be a float in the [0, 1] interval, but is " +
                                                    std::to_string(xtc_probability)));
  // One uniform per call decides for the whole batch, as mx.random.uniform(0, 1) does.
  const bool skip = Rng::uniform(rng.next_key(), 0) > xtc_probability;
  Array probs = as_rows(softmax(as_rows(logits, "apply_xtc"), -1), "apply_xtc");
  const float* p = probs.data<float>();
  return map_rows(logits, "apply_xtc", [&](const float* in, float* out, int64_t n, int64_t r) {
    std::copy(in, in + n, out);
    if (skip) return;
    const float* pr = p + r * n;
    float floor_p = std::numeric_limits<float>::infinity();  // least probability above the threshold
    for (int64_t i = 0; i < n; ++i)
      if (pr[i] > xtc_threshold) floor_p = std::min(floor_p, pr[i]);
    std::vector<char> keep(n, 0);
    for (int32_t t : special_tokens)
      if (t >= 0 && t < n) keep[t] = 1;
    for (int64_t i = 0; i < n; ++i)
      if (pr[i] > floor_p && !keep[i]) out[i] = kNegInf;
  });
}

Array categorical_sampling(const Array& logits, float temp, Rng& rng) {
  Array x = as_rows(logits, "categorical_sampling");
  int64_t V = x.shape(-1);
  int64_t rows = V == 0 ? 0 : x.size() / V;
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Array out = Array::empty(out_shape, Dtype::i32, Device::cpu());
  const float* src = x.data<float>();
  int32_t* dst = out.data<int32_t>();
  const float inv_t = 1.0f / temp;
  const uint64_t key = rng.next_key();
  for (int64_t r = 0; r < rows; ++r) {
    // argmax(logits / temp + Gumbel noise); -inf entries can never win.
    float best = -std::numeric_limits<float>::infinity();
    int32_t arg = 0;
    for (int64_t i = 0; i < V; ++i) {
      float l = src[r * V + i];
      if (l == kNegInf) continue;
      float u = Rng::uniform(key, static_cast<uint64_t>(r * V + i));
      u = std::max(u, std::numeric_limits<float>::min());
      float g = l * inv_t - std::log(-std::log(u));
      if (g > best) best = g, arg = static_cast<int32_t>(i);
    }
    dst[r] = arg;
  }
  return out;
}

Sampler::Sampler(SamplerSpec spec, uint64_t seed) : spec_(std::move(spec)), rng_(seed) {
  if (spec_.temp < 0) throw ValueError(format_error("sampler", "temperature must be >= 0"));
}

Array Sampler::operator()(const Array& logprobs) {
  if (spec_.temp == 0.0f) return astype(argmax(logprobs, -1), Dtype::i32);
  Array x = logprobs;
  if (spec_.top_p > 0.0f && spec_.top_p < 1.0f) x = apply_top_p(x, spec_.top_p);
  if (spec_.min_p != 0.0f) x = apply_min_p(x, spec_.min_p, spec_.min_tokens_to_keep);
  if (spec_.xtc_probability > 0.0f)
    x = apply_xtc(x, spec_.xtc_probability, spec_.xtc_threshold, spec_.xtc_special_tokens, rng_);
  if (spec_.top_k > 0) x = apply_top_k(x, spec_.top_k);
  return categorical_sampling(x, spec_.temp, rng_);
}

}  // namespace loom::generate
