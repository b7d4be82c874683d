// Sampler filters as compositions of ops on [..., V] arrays, following mlx_lm/sample_utils.py step by
// step, on whatever device the log-probabilities are on. Where mlx-lm leaves ties to its (unstable)
// sort, loom's argsort/argpartition break them by index, so results are deterministic: ranking by -x
// puts the lower id first among equal values.
#include "loom/generate/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "loom/common/error.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/random.h"

namespace loom::generate {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// x as f32 (a no-op when it already is), checked to have a vocabulary axis.
Array as_f32(const Array& x, const char* where) {
  if (!x.valid() || x.ndim() < 1) throw ValueError(format_error(where, "expected logits [..., V], got a scalar"));
  return astype(x, Dtype::f32);
}

// Indices of the `count` largest entries of each row (ties: lower index first), [..., count] uint32.
Array top_indices(const Array& x, int64_t count) {
  Array ranked = argpartition(negative(x), static_cast<int>(count - 1), -1);
  return slice_axis(ranked, -1, 0, count);
}

// A bool constant on x's device (made there, so it never needs an upload).
Array bool_const(bool v, const Array& like) { return full({}, v ? 1.0 : 0.0, Dtype::bool_, like.device()); }

}  // namespace

Array apply_top_k(const Array& logprobs, int top_k) {
  int64_t V = logprobs.ndim() ? logprobs.shape(-1) : 0;
  if (!(top_k > 0 && top_k < V))
    throw ValueError(format_error("apply_top_k", "`top_k` has to be an integer in the (0, " + std::to_string(V) +
                                                      ") interval, but is " + std::to_string(top_k)));
  Array x = as_f32(logprobs, "apply_top_k");
  // mlx-lm: argpartition(-logprobs, kth=top_k - 1)[..., top_k:] are masked to -inf.
  Array ranked = argpartition(negative(x), top_k - 1, -1);
  Array drop = slice_axis(ranked, -1, top_k, V);
  return put_along_axis(x, drop, Array::scalar(kNegInf), -1);
}

Array apply_min_p(const Array& logprobs, float min_p, int min_tokens_to_keep) {
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    throw ValueError(format_error("apply_min_p", "`min_p` has to be a float in the [0, 1] interval, but is " +
                                                      std::to_string(min_p)));
  if (min_tokens_to_keep < 1)
    throw ValueError(format_error("apply_min_p", "`min_tokens_to_keep` has to be a positive integer, but is " +
                                                      std::to_string(min_tokens_to_keep)));
  Array x = as_f32(logprobs, "apply_min_p");
  // Tokens with p < min_p * p_max, i.e. logp < max(logp) + log(min_p) (an f32 sum, as before).
  const float log_min_p = std::log(min_p);
  Array cut = add(max(x, {-1}, /*keepdims=*/true), Array::scalar(log_min_p));
  Array remove = less(x, cut);
  if (min_tokens_to_keep > 1) {
    // The min_tokens_to_keep most likely always stay (mlx-lm puts False at their indices).
    int64_t keep = std::min<int64_t>(min_tokens_to_keep, x.shape(-1));
    remove = put_along_axis(remove, top_indices(x, keep), bool_const(false, x), -1);
  }
  return where(remove, Array::scalar(kNegInf), x);
}

Array apply_top_p(const Array& logprobs, float top_p) {
  Array x = as_f32(logprobs, "apply_top_p");
  // Ascending order (stable), the cumulative probability in that order, and every token whose
  // cumulative mass (itself included) exceeds 1 - top_p kept. mlx-lm maps the cumulative sums back
  // through the inverse permutation; writing the filtered sorted values back through the permutation
  // itself gives the same array with one scatter fewer.
  Array order = argsort(x, -1);
  Array sorted = take_along_axis(x, order, -1);
  Array cum = cumsum(exp(sorted), -1);
  Array kept = where(greater(cum, Array::scalar(1.0f - top_p)), sorted, Array::scalar(kNegInf));
  return put_along_axis(x, order, kept, -1);
}

namespace {

// The special-token ids of XTC that fall inside a vocabulary of V, as a host int32 array shaped to
// broadcast against [..., V] logits of `ndim` dims (empty when none).
Array special_ids(const std::vector<int32_t>& tokens, int64_t V, int ndim) {
  std::vector<int32_t> ids;
  for (int32_t t : tokens)
    if (t >= 0 && t < V) ids.push_back(t);
  if (ids.empty()) return Array();
  Shape shape(static_cast<size_t>(ndim), 1);
  shape.back() = static_cast<int64_t>(ids.size());
  return Array::from(ids, shape);
}

// apply_xtc with the special ids prepared (special_ids); the Sampler keeps them, so their upload to
// a GPU is cached across steps.
Array xtc(const Array& logits, float xtc_probability, float xtc_threshold, const Array& special, Rng& rng) {
  if (!(xtc_threshold >= 0.0f && xtc_threshold <= 0.5f))
    throw ValueError(format_error("apply_xtc", "`threshold` has to be a float in the [0, 0.5] interval, but is " +
                                                    std::to_string(xtc_threshold)));
  if (!(xtc_probability >= 0.0f && xtc_probability <= 1.0f))
    throw ValueError(format_error("apply_xtc", "`probability` has to be a float in the [0, 1] interval, but is " +
                                                    std::to_string(xtc_probability)));
  Array x = as_f32(logits, "apply_xtc");
  // One uniform per call decides for the whole batch, as mx.random.uniform(0, 1) does; drawn on the
  // device, so the decision never needs the host.
  Array skip = greater(random_uniform({}, rng.next_key(), x.device()), Array::scalar(xtc_probability));
  Array probs = softmax(x, -1);
  // The least probability above the threshold (inf when none is); every token more likely goes.
  Array floor_p = min(where(greater(probs, Array::scalar(xtc_threshold)), probs,
                            Array::scalar(std::numeric_limits<double>::infinity())),
                      {-1}, /*keepdims=*/true);
  Array mask = greater(probs, floor_p);
  if (special.valid()) mask = put_along_axis(mask, special, bool_const(false, x), -1);  // never removed
  return where(skip, x, where(mask, Array::scalar(kNegInf), x));
}

}  // namespace

Array apply_xtc(const Array& logits, float xtc_probability, float xtc_threshold,
                const std::vector<int32_t>& special_tokens, Rng& rng) {
  const Array special =
      logits.valid() && logits.ndim() ? special_ids(special_tokens, logits.shape(-1), logits.ndim()) : Array();
  return xtc(logits, xtc_probability, xtc_threshold, special, rng);
}

Array categorical_sampling(const Array& logits, float temp, Rng& rng) {
  Array x = as_f32(logits, "categorical_sampling");
  const float inv_t = 1.0f / temp;
  Array u = random_uniform(x.shape(), rng.next_key(), x.device());
  u = maximum(u, Array::scalar(std::numeric_limits<float>::min()));
  // -inf logits stay -inf and never win (unless a whole row is -inf: then index 0, as before).
  Array g = subtract(multiply(x, Array::scalar(inv_t)), log(negative(log(u))));
  return astype(argmax(g, -1), Dtype::i32);
}

Sampler::Sampler(SamplerSpec spec, uint64_t seed) : spec_(std::move(spec)), rng_(seed) {
  if (spec_.temp < 0) throw ValueError(format_error("sampler", "temperature must be >= 0"));
}

Array Sampler::operator()(const Array& logprobs) {
  if (spec_.temp == 0.0f) return astype(argmax(logprobs, -1), Dtype::i32);
  Array x = logprobs;
  if (spec_.top_p > 0.0f && spec_.top_p < 1.0f) x = apply_top_p(x, spec_.top_p);
  if (spec_.min_p != 0.0f) x = apply_min_p(x, spec_.min_p, spec_.min_tokens_to_keep);
  if (spec_.xtc_probability > 0.0f) {
    if (x.ndim() != xtc_ids_ndim_ || x.shape(-1) != xtc_ids_vocab_) {
      xtc_ids_ = special_ids(spec_.xtc_special_tokens, x.shape(-1), x.ndim());
      xtc_ids_ndim_ = x.ndim();
      xtc_ids_vocab_ = x.shape(-1);
    }
    x = xtc(x, spec_.xtc_probability, spec_.xtc_threshold, xtc_ids_, rng_);
  }
  if (spec_.top_k > 0) x = apply_top_k(x, spec_.top_k);
  return categorical_sampling(x, spec_.temp, rng_);
}

}  // namespace loom::generate
