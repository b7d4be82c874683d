// Samplers with mlx-lm's semantics and order (mlx_lm/sample_utils.py): the filters run on
// log-probabilities [..., V] in the order top-p, min-p, XTC, top-k, then a categorical draw at the
// temperature; temperature 0 is argmax. Each is a composition of ops (argsort/argpartition,
// take/put_along_axis, cumsum, softmax, random_uniform, argmax) that runs on the device the
// log-probabilities live on and never reads them back: only the sampled ids reach the host, when the
// caller asks. Filters compute in f32 and return f32; ties are broken by index (the lower id counts as
// the larger), so a filter's result is the same on every device; the random draws are the same bits on
// every device (loom/ops/random.h).
#pragma once

#include <cstdint>
#include <vector>

#include "loom/core/array.h"
#include "loom/ops/random.h"

namespace loom::generate {

// Counter-based RNG: a host-side stream of 64-bit keys (splitmix64 over the seed and a draw counter),
// one per draw; the numbers of a draw are random::uniform_at(key, i), computed on the arrays' device.
// Same seed -> same stream, on every device and thread count.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : seed_(seed) {}
  // A fresh key for one draw of many numbers; advances the stream.
  uint64_t next_key() { return mix(seed_ ^ mix(++counter_)); }
  // Uniform in [0, 1) for element i of the draw with key `key` (24 random bits, like f32).
  static float uniform(uint64_t key, uint64_t i) { return random::uniform_at(key, i); }
  static uint64_t mix(uint64_t x) { return random::mix64(x); }

 private:
  uint64_t seed_;
  uint64_t counter_ = 0;
};

// Keeps the top_k largest log-probs of each row; the rest become -inf. 0 < top_k < V.
Array apply_top_k(const Array& logprobs, int top_k);
// Drops tokens with p < min_p * p_max, always keeping the min_tokens_to_keep most likely.
Array apply_min_p(const Array& logprobs, float min_p, int min_tokens_to_keep = 1);
// Nucleus: keeps token i when the probability mass of tokens ranked at or below it (ascending
// order, i included) exceeds 1 - top_p, exactly as mlx-lm (and transformers) do.
Array apply_top_p(const Array& logprobs, float top_p);
// Exclude-top-choices: with probability xtc_probability, removes every token more likely than the
// least likely token above xtc_threshold (so that one survives); special tokens are never removed.
Array apply_xtc(const Array& logits, float xtc_probability, float xtc_threshold,
                const std::vector<int32_t>& special_tokens, Rng& rng);
// Gumbel-max draw from softmax(logits / temp) (mx.random.categorical's method) -> int32 [...]: the
// first argmax of logits / temp - log(-log(max(u, FLT_MIN))), u = random_uniform(logits.shape, key).
Array categorical_sampling(const Array& logits, float temp, Rng& rng);

// mlx-lm's make_sampler arguments.
struct SamplerSpec {
  float temp = 0.0f;
  float top_p = 0.0f;  // active when 0 < top_p < 1
  float min_p = 0.0f;
  int min_tokens_to_keep = 1;
  int top_k = 0;
  float xtc_probability = 0.0f;
  float xtc_threshold = 0.1f;
  std::vector<int32_t> xtc_special_tokens;
};

// A sampler: log-probabilities [B, V] -> token ids int32 [B], on the log-probabilities' device (the
// call queues work and returns; reading the ids synchronizes). Holds its RNG, so a sampler made with
// the same seed draws the same tokens, on the CPU and on a GPU alike up to float rounding: the filters'
// exp/softmax and the Gumbel noise's log may differ by an ulp between devices, which only matters where
// a value sits on a filter's boundary or two candidates tie within that ulp.
class Sampler {
 public:
  explicit Sampler(SamplerSpec spec = {}, uint64_t seed = 0);
  Array operator()(const Array& logprobs);
  const SamplerSpec& spec() const { return spec_; }

 private:
  SamplerSpec spec_;
  Rng rng_;
  // XTC's special ids as a host array made once per logits layout (so a GPU upload of it is cached).
  Array xtc_ids_;
  int xtc_ids_ndim_ = -1;
  int64_t xtc_ids_vocab_ = -1;
};

}  // namespace loom::generate
