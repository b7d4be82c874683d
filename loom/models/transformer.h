// The standard pre-norm decoder shared by the Llama family (llama, mistral, qwen2, qwen3, and the
// many mlx-lm files that differ from Llama only by knobs): attention with optional q/k/v/o biases,
// optional per-head q/k RMSNorm, RoPE, GQA, optional per-layer sliding window; SwiGLU MLP; RMSNorm
// with the residual add fused into the next norm. Model files parse their config into DecoderArgs
// and keep only what is theirs (sanitize, registration).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/models/model.h"
#include "loom/nn/layers.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/nn/rope.h"

namespace loom::io {
class Config;
}

namespace loom::models {

struct DecoderArgs {
  int64_t hidden_size = 0, num_layers = 0, intermediate_size = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t vocab_size = 0, max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  bool rope_traditional = false;
  nn::RopeScaling rope_scaling;
  bool qkv_bias = false, o_bias = false, mlp_bias = false, qk_norm = false;
  bool tie_word_embeddings = false;
  std::vector<bool> sliding;  // per layer: sliding-window attention
  int64_t sliding_window = 0;
  std::string mlp_key = "mlp";  // weight-key name of each block's feed-forward ("block_sparse_moe" for Mixtral)
  // Llama 4 / Ministral 3 knobs; a per-layer vector shorter than num_layers means false past its end.
  std::vector<bool> chunked;          // per layer: chunked local attention of attention_chunk_size positions
  int64_t attention_chunk_size = 0;
  std::vector<bool> no_rope;          // per layer: no rotary embedding (Llama 4's NoPE layers)
  bool qk_l2_norm = false;            // weightless RMS norm (eps rms_norm_eps) of q/k after RoPE, RoPE layers only
  std::vector<bool> query_temperature;  // per layer: scale queries by QueryTemperature below
  // q *= 1 + beta * log(1 + floor((position + shift) / floor_scale)) at each query's own position
  // (Llama 4's attn_scale/floor_scale: shift 1; Ministral 3's llama_4_scaling_beta: shift 0).
  struct QueryTemperature {
    double beta = 0.0;
    int64_t floor_scale = 1, shift = 0;
  } temperature;
};

// The keys every Llama-like config shares, with transformers' defaults for the optional ones.
DecoderArgs parse_decoder_args(const io::Config& c);
// Qwen-style window config: `use_sliding_window` switches it on for the layers from
// `max_window_layers` on (unless `layer_types` already says which layers slide).
void apply_qwen_sliding_window(DecoderArgs& a, const io::Config& c);
// The normalised `rope_scaling` block (absent -> default).
nn::RopeScaling parse_rope_scaling(const io::Config& c);
// DecoderArgs::QueryTemperature's factors (f32 [B or 1, 1, L, 1]) at the step's query positions.
Array query_temperature_scale(const DecoderArgs::QueryTemperature& t, const Step& step, int64_t batch);

struct DecoderAttention : nn::Module {
  DecoderAttention(const DecoderArgs& a, bool sliding);
  Array operator()(const Array& x, KVCache& cache, const Step& step) const;
  // Applies layer `layer`'s entries of the per-layer knobs (chunked, no_rope, qk_l2_norm, query_temperature).
  void configure_layer(const DecoderArgs& a, int64_t layer);

  nn::Linear q_proj, k_proj, v_proj, o_proj;
  std::unique_ptr<nn::RMSNorm> q_norm, k_norm;
  nn::Rope rope;
  int64_t n_heads, n_kv_heads, head_dim;
  AttentionSpec spec;
  bool use_rope = true, qk_l2_norm = false;
  float qk_l2_eps = 1e-6f;
  std::optional<DecoderArgs::QueryTemperature> temperature;

 protected:
  void members(nn::Members& m) override;
};

// A block's feed-forward: the dense SwiGLU MLP below or a model's mixture-of-experts layer.
struct FeedForward : nn::Module {
  virtual Array operator()(const Array& x) const = 0;
  // MoE layers record the experts they chose on their last call (uint32 [B, L, k]); for tests and tools.
  mutable Array last_routing;
};
// Builds layer `layer`'s feed-forward; the default builds DecoderMLP.
using FeedForwardFactory = std::function<std::unique_ptr<FeedForward>(const DecoderArgs&, int64_t layer)>;

struct DecoderMLP : FeedForward {
  DecoderMLP(int64_t dim, int64_t hidden, bool bias);
  Array operator()(const Array& x) const override;
  nn::Linear gate_proj, down_proj, up_proj;

 protected:
  void members(nn::Members& m) override;
};

// The sparse mixture-of-experts feed-forward shared by the MoE decoders (mixtral, qwen2_moe,
// qwen3_moe, ...): a router `gate` over the experts, SwiGLU experts stacked in `switch_mlp`, the
// selected experts' outputs combined with the router weights.
struct SparseMoeBlock : FeedForward {
  SparseMoeBlock(int64_t hidden, int64_t expert_hidden, int64_t num_experts, const nn::RouterSpec& router);
  Array operator()(const Array& x) const override;

  nn::Linear gate;
  nn::SwitchGLU switch_mlp;
  nn::RouterSpec router;

 protected:
  void members(nn::Members& m) override;
};

struct DecoderBlock : nn::Module {
  DecoderBlock(const DecoderArgs& a, int64_t layer, const FeedForwardFactory& ff = {});
  DecoderAttention self_attn;
  std::unique_ptr<FeedForward> mlp;  // weight key: args.mlp_key
  nn::RMSNorm input_layernorm, post_attention_layernorm;
  std::string mlp_key;

 protected:
  void members(nn::Members& m) override;
};

struct DecoderBody : nn::Module {
  explicit DecoderBody(const DecoderArgs& a, const FeedForwardFactory& ff = {});
  // Returns the final-normed hidden states [B, L', D] (L' = 1 when only_last).
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const;

  nn::Embedding embed_tokens;
  std::vector<std::unique_ptr<DecoderBlock>> layers;
  nn::RMSNorm norm;

 protected:
  void members(nn::Members& m) override;
};

// A decoder-only LM: `model` body plus `lm_head` (or the tied embedding).
class DecoderLM : public LanguageModel {
 public:
  explicit DecoderLM(DecoderArgs a, const FeedForwardFactory& ff = {});
  Array forward(const Array& tokens, Cache& cache, LogitsMode mode) override;
  void sanitize(WeightMap& weights) const override;
  int num_layers() const override { return static_cast<int>(args.num_layers); }
  int64_t vocab_size() const override { return args.vocab_size; }
  int64_t context_length() const override { return args.max_position_embeddings; }

  DecoderArgs args;
  DecoderBody model;
  std::unique_ptr<nn::Linear> lm_head;

 protected:
  void members(nn::Members& m) override;
};

// A vision-language checkpoint run as a text-only LM (mlx-lm's VLM model files that keep only the
// language model): the text LM sits under `language_model`, so its keys are language_model.model.*
// and language_model.lm_head.* (the pre-4.52 transformers and mlx-community layout). sanitize maps
// the transformers >= 4.52 layout (model.language_model.*, lm_head.*) onto that, drops every key
// under `dropped` (vision tower, projector; also under `model.`), and then runs the text LM's own
// sanitize on its keys.
class VisionLanguageWrapper : public LanguageModel {
 public:
  VisionLanguageWrapper(std::unique_ptr<LanguageModel> text, std::vector<std::string> dropped);
  Array forward(const Array& tokens, Cache& cache, LogitsMode mode) override;
  void sanitize(WeightMap& weights) const override;
  Cache make_cache(const CacheOptions& options) const override { return language_model->make_cache(options); }
  int num_layers() const override { return language_model->num_layers(); }
  int64_t vocab_size() const override { return language_model->vocab_size(); }
  int64_t context_length() const override { return language_model->context_length(); }

  std::unique_ptr<LanguageModel> language_model;
  std::vector<std::string> dropped;  // top-level prefixes of the non-text weights

 protected:
  void members(nn::Members& m) override;
};

}  // namespace loom::models
