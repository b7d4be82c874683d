// Jamba: a hybrid decoder whose layers mix with either attention (GQA, no positional encoding) or a
// Mamba-1 mixer (with RMSNorms of dt, B and C), each followed by a dense SwiGLU MLP or a mixture of
// SwiGLU experts. Layer i attends when i % attn_layer_period == attn_layer_offset, and its
// feed-forward is the MoE when i % expert_layer_period == expert_layer_offset (transformers'
// JambaConfig.layers_block_type / layers_num_experts). The router takes the softmax over all
// experts and keeps the top-k probabilities as they are (no renormalisation; transformers'
// JambaSparseMoeBlock). mlx-lm: models/jamba.py, which differs from transformers in two places that
// real Jamba checkpoints (period 2, offset 1) never reach or that change its numbers: it selects MoE
// layers by (i + offset) % period == 0, and softmaxes over the selected logits only.
//
// Caches: a KVCache (RotatingKVCache with --max-kv-size) per attention layer, an ArraysCache of
// [conv state [B, K-1, Di], SSM state f32 [B, Di, N]] per Mamba layer.
#include <cmath>
#include <string>
#include <tuple>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/io/config.h"
#include "loom/models/model.h"
#include "loom/models/ssm_backbone.h"
#include "loom/models/transformer.h"
#include "loom/nn/layers.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/ssm.h"

namespace loom::models::jamba {

struct ModelArgs {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0, max_position_embeddings = 0;
  int64_t num_experts = 1, num_experts_per_tok = 1;
  int64_t mamba_d_conv = 4, mamba_d_state = 16, mamba_inner = 0, mamba_dt_rank = 0;
  bool mamba_proj_bias = false, mamba_conv_bias = true, tie_word_embeddings = false;
  float rms_norm_eps = 1e-6f;
  std::vector<bool> attention;  // per layer: attention (else Mamba)
  std::vector<bool> moe;        // per layer: mixture of experts (else dense MLP)
};

// mamba_dt_rank: an integer or "auto" (= ceil(hidden_size / 16)).
int64_t dt_rank(const io::Config& c, int64_t hidden) {
  if (!c.has("mamba_dt_rank")) return (hidden + 15) / 16;
  try {
    return c.get_int("mamba_dt_rank");
  } catch (const ConfigError&) {
    if (c.get_string("mamba_dt_rank") == "auto") return (hidden + 15) / 16;
    throw;
  }
}

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.vocab_size = c.get_int("vocab_size");
  a.hidden_size = c.get_int("hidden_size");
  a.intermediate_size = c.get_int("intermediate_size");
  a.num_layers = c.get_int("num_hidden_layers");
  a.num_heads = c.get_int("num_attention_heads");
  a.num_kv_heads = c.get_int("num_key_value_heads", a.num_heads);
  a.head_dim = c.get_int("head_dim", a.hidden_size / a.num_heads);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 0);
  a.num_experts = c.get_int("num_experts", 1);
  a.num_experts_per_tok = c.get_int("num_experts_per_tok", 1);
  a.mamba_d_conv = c.get_int("mamba_d_conv", 4);
  a.mamba_d_state = c.get_int("mamba_d_state", 16);
  a.mamba_inner = c.get_int("mamba_expand", 2) * a.hidden_size;
  a.mamba_dt_rank = dt_rank(c, a.hidden_size);
  a.mamba_proj_bias = c.get_bool("mamba_proj_bias", false);
  a.mamba_conv_bias = c.get_bool("mamba_conv_bias", true);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", false);
  a.rms_norm_eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  int64_t attn_period = c.get_int("attn_layer_period", 8), attn_offset = c.get_int("attn_layer_offset", 4);
  int64_t expert_period = c.get_int("expert_layer_period", 2), expert_offset = c.get_int("expert_layer_offset", 1);
  if (attn_period < 1 || expert_period < 1)
    throw ConfigError(
        format_error("config", "attn_layer_period and expert_layer_period must be >= 1 in " + c.source()));
  std::vector<std::string> types;
  if (c.has("layers_block_type")) {
    types = c.get_string_list("layers_block_type");
    if (static_cast<int64_t>(types.size()) != a.num_layers)
      throw ConfigError(format_error("config", "layers_block_type has " + std::to_string(types.size()) +
                                                   " entries for " + std::to_string(a.num_layers) + " layers in " +
                                                   c.source()));
  }
  for (int64_t i = 0; i < a.num_layers; ++i) {
    std::string t = types.empty() ? (i % attn_period == attn_offset ? "attention" : "mamba") : types[i];
    if (t != "attention" && t != "mamba")
      throw ConfigError(
          format_error("config", "layer type '" + t + "' is neither attention nor mamba in " + c.source()));
    a.attention.push_back(t == "attention");
    a.moe.push_back(a.num_experts > 1 && i % expert_period == expert_offset);
  }
  if (a.num_heads % a.num_kv_heads)
    throw ConfigError(format_error("config", "num_attention_heads " + std::to_string(a.num_heads) +
                                                 " is not a multiple of num_key_value_heads " +
                                                 std::to_string(a.num_kv_heads)));
  return a;
}

// Attention without positional encoding (Jamba's attention layers see positions only through the
// Mamba layers around them).
struct JambaAttention : nn::Module {
  explicit JambaAttention(const ModelArgs& a)
      : q_proj(a.hidden_size, a.num_heads * a.head_dim, false),
        k_proj(a.hidden_size, a.num_kv_heads * a.head_dim, false),
        v_proj(a.hidden_size, a.num_kv_heads * a.head_dim, false),
        o_proj(a.num_heads * a.head_dim, a.hidden_size, false),
        n_heads(a.num_heads),
        n_kv_heads(a.num_kv_heads),
        head_dim(a.head_dim) {
    spec.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  }

  Array operator()(const Array& x, KVCache& cache, const Step& step) const {
    int64_t B = x.shape(0), L = x.shape(1);
    auto heads = [&](const Array& t, int64_t h) { return transpose(reshape(t, {B, L, h, head_dim}), {0, 2, 1, 3}); };
    Array o = cached_attention(heads(q_proj(x), n_heads), heads(k_proj(x), n_kv_heads), heads(v_proj(x), n_kv_heads),
                               cache, step, spec);
    return o_proj(reshape(transpose(o, {0, 2, 1, 3}), {B, L, n_heads * head_dim}));
  }

  nn::Linear q_proj, k_proj, v_proj, o_proj;
  int64_t n_heads, n_kv_heads, head_dim;
  AttentionSpec spec;

 protected:
  void members(nn::Members& m) override {
    m.child("q_proj", q_proj).child("k_proj", k_proj).child("v_proj", v_proj).child("o_proj", o_proj);
  }
};

// The Mamba-1 mixer of mamba.cpp with weighted RMSNorms of dt, B and C (rms_norm_eps).
struct JambaMambaMixer : nn::Module {
  explicit JambaMambaMixer(const ModelArgs& a)
      : in_proj(a.hidden_size, 2 * a.mamba_inner, a.mamba_proj_bias),
        conv1d(a.mamba_inner, a.mamba_d_conv, a.mamba_conv_bias),
        x_proj(a.mamba_inner, a.mamba_dt_rank + 2 * a.mamba_d_state, false),
        dt_proj(a.mamba_dt_rank, a.mamba_inner, true),
        out_proj(a.mamba_inner, a.hidden_size, a.mamba_proj_bias),
        dt_layernorm(a.mamba_dt_rank, a.rms_norm_eps),
        b_layernorm(a.mamba_d_state, a.rms_norm_eps),
        c_layernorm(a.mamba_d_state, a.rms_norm_eps),
        inner(a.mamba_inner),
        rank(a.mamba_dt_rank),
        state(a.mamba_d_state) {}

  // x [B, L, hidden] (compute dtype) -> [B, L, hidden]; updates and advances the layer's cache.
  Array operator()(const Array& x, ArraysCache& cache, const Array& left_padding) const {
    const int64_t Di = inner, R = rank, N = state;
    Array xz = in_proj(x);
    Array z = slice_axis(xz, -1, Di, 2 * Di);
    fast::ScanResult conv = conv1d(slice_axis(xz, -1, 0, Di), on_device_of(cache[0], x), left_padding);
    Array u = silu(conv.y);
    Array dbc = x_proj(u);
    Array dt = dt_layernorm(slice_axis(dbc, -1, 0, R));
    Array Bm = b_layernorm(slice_axis(dbc, -1, R, R + N)), Cm = c_layernorm(slice_axis(dbc, -1, R + N, R + 2 * N));
    return mamba1_scan_output(dt_proj, out_proj, A_log, D, u, dt, Bm, Cm, z, conv.state, cache, left_padding, x);
  }

  nn::Linear in_proj;
  nn::DepthwiseConv1d conv1d;
  nn::Linear x_proj, dt_proj, out_proj;
  Array A_log, D;  // [Di, N], [Di]
  nn::RMSNorm dt_layernorm, b_layernorm, c_layernorm;
  int64_t inner, rank, state;

 protected:
  void members(nn::Members& m) override {
    m.child("in_proj", in_proj).child("conv1d", conv1d).child("x_proj", x_proj).child("dt_proj", dt_proj);
    m.param("A_log", A_log, {inner, state}).param("D", D, {inner});
    m.child("out_proj", out_proj).child("dt_layernorm", dt_layernorm).child("b_layernorm", b_layernorm);
    m.child("c_layernorm", c_layernorm);
  }
};

// transformers' JambaSparseMoeBlock: softmax over all experts, the top-k probabilities as weights.
struct JambaSparseMoeBlock : FeedForward {
  explicit JambaSparseMoeBlock(const ModelArgs& a)
      : router(a.hidden_size, a.num_experts, false),
        switch_mlp(a.hidden_size, a.intermediate_size, a.num_experts),
        spec{.top_k = static_cast<int>(a.num_experts_per_tok), .weights = nn::RouterWeights::scores} {}

  Array operator()(const Array& x) const override {
    nn::Routing r = nn::route(router(x), spec);
    last_routing = r.indices;
    return nn::combine_experts(switch_mlp(x, r.indices), r.weights);
  }

  nn::Linear router;
  nn::SwitchGLU switch_mlp;
  nn::RouterSpec spec;

 protected:
  void members(nn::Members& m) override { m.child("router", router).child("switch_mlp", switch_mlp); }
};

struct DecoderLayer : nn::Module {
  DecoderLayer(const ModelArgs& a, int64_t layer)
      : input_layernorm(a.hidden_size, a.rms_norm_eps), pre_ff_layernorm(a.hidden_size, a.rms_norm_eps) {
    if (a.attention[layer])
      self_attn = std::make_unique<JambaAttention>(a);
    else
      mamba = std::make_unique<JambaMambaMixer>(a);
    if (a.moe[layer])
      feed_forward = std::make_unique<JambaSparseMoeBlock>(a);
    else
      feed_forward = std::make_unique<DecoderMLP>(a.hidden_size, a.intermediate_size, false);
  }

  std::unique_ptr<JambaAttention> self_attn;
  std::unique_ptr<JambaMambaMixer> mamba;
  std::unique_ptr<FeedForward> feed_forward;
  nn::RMSNorm input_layernorm, pre_ff_layernorm;

 protected:
  void members(nn::Members& m) override {
    if (self_attn) m.child("self_attn", *self_attn);
    if (mamba) m.child("mamba", *mamba);
    m.child("feed_forward", *feed_forward).child("input_layernorm", input_layernorm);
    m.child("pre_ff_layernorm", pre_ff_layernorm);
  }
};

struct JambaModel : nn::Module {
  explicit JambaModel(const ModelArgs& a)
      : embed_tokens(a.vocab_size, a.hidden_size), final_layernorm(a.hidden_size, a.rms_norm_eps) {
    for (int64_t i = 0; i < a.num_layers; ++i) layers.push_back(std::make_unique<DecoderLayer>(a, i));
  }

  // Final-normed hidden states [B, L', hidden] (L' = 1 when only_last), in `dtype`.
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
    Step step = make_step(cache, tokens.shape(1));
    // As DecoderBody: the residual stream stays f32; the normed activations are in `dtype`.
    Array x = embed_tokens(tokens, Dtype::f32);
    Array normed = astype(layers[0]->input_layernorm(x), dtype);
    for (size_t i = 0; i < layers.size(); ++i) {
      const DecoderLayer& l = *layers[i];
      Array h = l.self_attn ? (*l.self_attn)(normed, cache.at<KVCache>(i), step)
                            : (*l.mamba)(normed, cache.at<ArraysCache>(i), step.scan_padding);
      auto [normed_ff, r] = l.pre_ff_layernorm.add_and_norm(h, x);
      Array ff = (*l.feed_forward)(astype(normed_ff, dtype));
      if (i + 1 < layers.size()) {
        std::tie(normed, x) = layers[i + 1]->input_layernorm.add_and_norm(ff, r);
        normed = astype(normed, dtype);
      } else {
        if (only_last) {
          int64_t L = ff.shape(1);
          ff = slice_axis(ff, 1, L - 1, L);
          r = slice_axis(r, 1, L - 1, L);
        }
        normed = astype(final_layernorm.add_and_norm(ff, r).first, dtype);
      }
    }
    return normed;
  }

  nn::Embedding embed_tokens;
  std::vector<std::unique_ptr<DecoderLayer>> layers;
  nn::RMSNorm final_layernorm;

 protected:
  void members(nn::Members& m) override {
    m.child("embed_tokens", embed_tokens).children("layers", layers).child("final_layernorm", final_layernorm);
  }
};

class Model : public BodyLM<JambaModel> {
 public:
  explicit Model(const ModelArgs& a) : BodyLM(a, a.hidden_size, a.vocab_size, a.tie_word_embeddings), args(a) {}

  // HF conv1d weights [C, 1, K] become mlx-lm's [C, K, 1] (a reshape of the same bytes; mlx
  // checkpoints are told apart by their last axis of 1); the MoE layers' experts, per-expert
  // (experts.{e}.*), transformers-v5 fused or mlx-lm stacked, become switch_mlp.
  void sanitize(WeightMap& w) const override {
    sanitize_conv1d_weights(w);
    if (args.tie_word_embeddings) w.erase("lm_head.weight");
    for (int64_t l = 0; l < args.num_layers; ++l)
      if (args.moe[l])
        nn::sanitize_experts(w, "model.layers." + std::to_string(l) + ".feed_forward", args.num_experts,
                             {{"gate_proj", "gate_proj"}, {"up_proj", "up_proj"}, {"down_proj", "down_proj"}});
  }

  // A KVCache per attention layer (a RotatingKVCache when options.max_kv_size is set, as the base
  // class does for every layer), an ArraysCache (conv state, SSM state) per Mamba layer.
  Cache make_cache(const CacheOptions& options) const override {
    std::vector<bool> mamba(args.attention.size());
    for (size_t i = 0; i < mamba.size(); ++i) mamba[i] = !args.attention[i];
    return make_hybrid_cache(mamba, 2, options);
  }
  using LanguageModel::make_cache;

  // mlx-lm jamba.py quant_predicate: the routers stay at 8 bits.
  std::optional<QuantSpec> quant_predicate(const std::string& path, const nn::Quantizable& layer,
                                           const QuantSpec& base) const override {
    if (ends_with(path, "feed_forward.router")) return nn::router_gate_quant_spec(layer.quant_axis_size());
    return base;
  }

  int num_layers() const override { return static_cast<int>(args.num_layers); }
  int64_t vocab_size() const override { return args.vocab_size; }
  int64_t context_length() const override { return args.max_position_embeddings; }

  ModelArgs args;
};

ModelRegistration registration() {
  return {"jamba", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::jamba
