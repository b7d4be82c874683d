// The interface every architecture implements, and the per-step position state shared by its
// layers. A model is an nn::Module whose member names are the checkpoint's weight keys.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/quant.h"
#include "loom/models/cache.h"
#include "loom/nn/layers.h"
#include "loom/nn/module.h"
#include "loom/nn/rope.h"

namespace loom::io {
class Config;
}
namespace loom::nn {
class Quantizable;
}

namespace loom::models {

// Which positions get LM-head logits: none (prefill that only fills the cache), the last position
// (generation), or every position (`loom logits`, perplexity).
enum class LogitsMode { none, last, all };

// Weights by checkpoint key; sanitize() renames/drops/stacks entries before the strict match.
using WeightMap = std::map<std::string, Array>;

// Positions of one forward step, computed once from the cache and shared by every layer.
struct Step {
  int64_t offset = 0;          // storage index of the first new token
  Array rope_offsets;          // int32 [B]: offset - left_padding (only when left-padded)
  AttentionPositions attn;     // q_offset = offset, kv_start = left_padding
  int64_t length = 0;          // new tokens this step
  Array scan_padding;          // int32 [B]: max(0, left_padding - offset), the padding inside this step,
                               // for the recurrent scans (loom/ops/ssm.h); only when left-padded
  Array device_offset;         // int32 [B]: `offset` on the device, only for a captured decode step
                               // (Cache::device_offset); rope_offsets and attn.q_offsets derive from it
};
Step make_step(const Cache& cache, int64_t length);

// Applies rope at the step's positions.
Array apply_rope(const nn::Rope& rope, const Array& x, const Step& step);
// Appends k/v to the layer's KV cache and attends over everything stored. A RotatingKVCache
// returns its positions in temporal order; attention then runs in its storage coordinates (see there).
// A QuantizedKVCache goes through quantized_attention. With `rope`, q and k are not rotated yet:
// they are rotated here at the step's positions (as apply_rope), in one op with the cache write
// (fast::rope_kv_write) for a captured step on a plain KVCache.
Array cached_attention(const Array& q, const Array& k, const Array& v, KVCache& cache, const Step& step,
                       const AttentionSpec& spec, const nn::Rope* rope = nullptr);
// Attention over a QuantizedKVCache (mlx-lm's quantized_scaled_dot_product_attention): k/v are
// quantized into the cache, the stored positions are dequantized and attended exactly as the float
// path does (same spec and step positions, so causal/window/chunk masks and left padding behave
// identically).
Array quantized_attention(const Array& q, const Array& k, const Array& v, QuantizedKVCache& cache, const Step& step,
                          const AttentionSpec& spec);

// The cache of one attention layer as LanguageModel::make_cache builds it: a KVCache, or with
// options.max_kv_size a RotatingKVCache(max_kv_size, keep).
std::unique_ptr<LayerCache> attention_layer_cache(const CacheOptions& options);
// The cache of a hybrid model: an ArraysCache(n_state) for each recurrent layer (recurrent[i]), an
// attention_layer_cache for the others.
Cache make_hybrid_cache(const std::vector<bool>& recurrent, size_t n_state, const CacheOptions& options);

class LanguageModel : public nn::Module {
 public:
  // tokens int32 [B, L] -> logits [B, L or 1, vocab] (f32 compute unless dtype says otherwise);
  // with LogitsMode::none returns the final hidden states of the last position.
  virtual Array forward(const Array& tokens, Cache& cache, LogitsMode mode) = 0;
  // Checkpoint key fixes before strict loading (drop rotary caches, tied heads, ...).
  virtual void sanitize(WeightMap& weights) const {}
  // A fresh cache for this model: make_cache(CacheOptions{}).
  Cache make_cache() const { return make_cache(CacheOptions{}); }
  // A fresh cache built as `options` say (mlx-lm's make_prompt_cache). Default: one KVCache per
  // layer, or with options.max_kv_size one RotatingKVCache(max_kv_size, options.keep) per layer.
  virtual Cache make_cache(const CacheOptions& options) const;
  virtual int num_layers() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t context_length() const { return 0; }
  // mlx-lm's per-model `quant_predicate`: the format the quantizable layer at `path` gets when the
  // model is quantized to `base` (loom convert, quantize_model), or nullopt to keep it dense. The
  // default quantizes every layer with `base`; qwen3_moe (as mlx-lm) keeps its router gates at 8 bits.
  virtual std::optional<QuantSpec> quant_predicate(const std::string& path, const nn::Quantizable& layer,
                                                   const QuantSpec& base) const {
    (void)path, (void)layer;
    return base;
  }

  // Activation dtype (f32 by default on CPU).
  Dtype dtype = Dtype::f32;
};

// Quantizes `model` in memory as mlx_lm.convert does (utils.quantize_model): each quantizable layer
// not yet quantized whose input size base.group_size divides gets model.quant_predicate's format.
// Returns the layers given a format other than `base` (the per-layer entries mlx-lm writes into
// config["quantization"]), by path. Defined in loader.cpp.
std::map<std::string, QuantSpec> quantize_model(LanguageModel& model, const QuantSpec& base);

// The shell shared by architecture files with their own decoder body: `model` (the body, with
// `embed_tokens` and `operator()(tokens, cache, only_last, dtype)` -> final-normed hidden states)
// and an untied `lm_head`, or the tied embedding when the checkpoint ties them.
template <typename Body>
class BodyLM : public LanguageModel {
 public:
  template <typename BodyArgs>
  BodyLM(const BodyArgs& body_args, int64_t hidden, int64_t vocab, bool tied, bool head_bias = false)
      : model(body_args) {
    if (!tied) lm_head = std::make_unique<nn::Linear>(hidden, vocab, head_bias);
  }
  Array forward(const Array& tokens, Cache& cache, LogitsMode mode) override {
    Array h = model(tokens, cache, mode != LogitsMode::all, dtype);
    return mode == LogitsMode::none ? h : head(h);
  }
  // Vocabulary logits of final hidden states.
  Array head(const Array& h) const { return lm_head ? (*lm_head)(h) : model.embed_tokens.as_linear(h); }

  Body model;
  std::unique_ptr<nn::Linear> lm_head;

 protected:
  void members(nn::Members& m) override {
    m.child("model", model);
    if (lm_head) m.child("lm_head", *lm_head);
  }
};

// One architecture: its model_type, the aliases that map to it, and its factory.
struct ModelRegistration {
  std::string model_type;
  std::vector<std::string> aliases;
  std::function<std::unique_ptr<LanguageModel>(const io::Config&)> create;
};

}  // namespace loom::models
