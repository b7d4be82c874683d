// Samplers with mlx-lm's semantics and order (mlx_lm/sample_utils.py): the filters run on
// log-probabilities [B, V] in the order top-p, min-p, XTC, top-k, then a categorical draw at the
// temperature; temperature 0 is argmax. Every step is an op on arrays: only the sampled token id
// ever needs to reach the host.
#pragma once

#include <cstdint>
#include <vector>

#include "loom/core/array.h"

namespace loom::generate {

// Counter-based RNG (splitmix64 over a seed and a draw counter): same seed -> same stream, on every
// thread count (each element's number depends only on the seed, the draw and its index).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : seed_(seed) {}
  // A fresh key for one draw of many numbers; advances the stream.
  uint64_t next_key() { return mix(seed_ ^ mix(++counter_)); }
  // Uniform in [0, 1) for element i of the draw with key `key` (24 random bits, like f32).
  static float uniform(uint64_t key, uint64_t i) {
    return static_cast<float>(mix(key + 0x9E3779B97F4A7C15ull * (i + 1)) >> 40) * (1.0f / 16777216.0f);
  }
  static uint64_t mix(uint64_t x) {
    x ^= x >> 30, x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27, x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  }

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
// Gumbel-max draw from softmax(logits / temp) (mx.random.categorical's method) -> int32 [B].
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

// A sampler: log-probabilities [B, V] -> token ids int32 [B]. Holds its RNG, so a sampler made with
// the same seed draws the same tokens.
class Sampler {
 public:
  explicit Sampler(SamplerSpec spec = {}, uint64_t seed = 0);
  Array operator()(const Array& logprobs);
  const SamplerSpec& spec() const { return spec_; }

 private:
  SamplerSpec spec_;
  Rng rng_;
};

}  // namespace loom::generate
