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
};

// The keys every Llama-like config shares, with transformers' defaults for the optional ones.
DecoderArgs parse_decoder_args(const io::Config& c);
// Qwen-style window config: `use_sliding_window` switches it on for the layers from
// `max_window_layers` on (unless `layer_types` already says which layers slide).
void apply_qwen_sliding_window(DecoderArgs& a, const io::Config& c);
// The normalised `rope_scaling` block (absent -> default).
nn::RopeScaling parse_rope_scaling(const io::Config& c);

struct DecoderAttention : nn::Module {
  DecoderAttention(const DecoderArgs& a, bool sliding);
  Array operator()(const Array& x, KVCache& cache, const Step& step) const;

  nn::Linear q_proj, k_proj, v_proj, o_proj;
  std::unique_ptr<nn::RMSNorm> q_norm, k_norm;
  nn::Rope rope;
  int64_t n_heads, n_kv_heads, head_dim;
  AttentionSpec spec;

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

}  // namespace loom::models
