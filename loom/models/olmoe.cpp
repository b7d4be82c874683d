// OLMoE: a Llama-style decoder whose attention RMS-normalises the whole q and k projections (one norm
// over all heads, before RoPE) and optionally clips q/k/v (clip_qkv), and whose every feed-forward is
// a mixture of SwiGLU experts: softmax router over all experts, top-k, the selected probabilities as
// weights (renormalised only with norm_topk_prob). mlx-lm: models/olmoe.py. transformers:
// OlmoeForCausalLM (modeling_olmoe.py).
#include <cmath>
#include <tuple>

#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/ops.h"

namespace loom::models::olmoe {

struct ModelArgs {
  DecoderArgs decoder;
  int64_t num_experts = 64;
  int num_experts_per_tok = 8;
  bool norm_topk_prob = false;
  double clip_qkv = 0;  // 0 = no clipping
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.decoder = parse_decoder_args(c);
  a.num_experts = c.get_int("num_experts", c.get_int("num_local_experts", 64));
  a.num_experts_per_tok = static_cast<int>(c.get_int("num_experts_per_tok", 8));
  a.norm_topk_prob = c.get_bool("norm_topk_prob", false);
  // loom: transformers clamps q, k (after their norms) and v to [-clip_qkv, clip_qkv]; mlx-lm ignores it.
  if (c.has("clip_qkv")) a.clip_qkv = c.get_float("clip_qkv");
  return a;
}

struct OlmoeAttention : nn::Module {
  explicit OlmoeAttention(const ModelArgs& ma)
      : q_proj(ma.decoder.hidden_size, ma.decoder.num_heads * ma.decoder.head_dim, ma.decoder.qkv_bias),
        k_proj(ma.decoder.hidden_size, ma.decoder.num_kv_heads * ma.decoder.head_dim, ma.decoder.qkv_bias),
        v_proj(ma.decoder.hidden_size, ma.decoder.num_kv_heads * ma.decoder.head_dim, ma.decoder.qkv_bias),
        o_proj(ma.decoder.num_heads * ma.decoder.head_dim, ma.decoder.hidden_size, ma.decoder.qkv_bias),
        q_norm(ma.decoder.num_heads * ma.decoder.head_dim, ma.decoder.rms_norm_eps),
        k_norm(ma.decoder.num_kv_heads * ma.decoder.head_dim, ma.decoder.rms_norm_eps),
        rope(static_cast<int>(ma.decoder.head_dim), ma.decoder.rope_theta, ma.decoder.rope_traditional,
             ma.decoder.rope_scaling, ma.decoder.max_position_embeddings),
        n_heads(ma.decoder.num_heads),
        n_kv_heads(ma.decoder.num_kv_heads),
        head_dim(ma.decoder.head_dim),
        clip(ma.clip_qkv) {
    spec.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  }

  Array clipped(const Array& t) const {
    if (clip <= 0) return t;
    return minimum(maximum(t, weak_scalar(-clip, t)), weak_scalar(clip, t));
  }

  Array operator()(const Array& x, KVCache& cache, const Step& step) const {
    int64_t B = x.shape(0), L = x.shape(1);
    Array q = clipped(q_norm(q_proj(x))), k = clipped(k_norm(k_proj(x))), v = clipped(v_proj(x));
    q = transpose(reshape(q, {B, L, n_heads, head_dim}), {0, 2, 1, 3});
    k = transpose(reshape(k, {B, L, n_kv_heads, head_dim}), {0, 2, 1, 3});
    v = transpose(reshape(v, {B, L, n_kv_heads, head_dim}), {0, 2, 1, 3});
    Array o = cached_attention(q, k, v, cache, step, spec, &rope);
    return o_proj(reshape(transpose(o, {0, 2, 1, 3}), {B, L, n_heads * head_dim}));
  }

  nn::Linear q_proj, k_proj, v_proj, o_proj;
  nn::RMSNorm q_norm, k_norm;  // over the whole projection, not per head
  nn::Rope rope;
  int64_t n_heads, n_kv_heads, head_dim;
  double clip;
  AttentionSpec spec;

 protected:
  void members(nn::Members& m) override {
    m.child("q_proj", q_proj).child("k_proj", k_proj).child("v_proj", v_proj).child("o_proj", o_proj);
    m.child("q_norm", q_norm).child("k_norm", k_norm);
  }
};

struct OlmoeBlock : nn::Module {
  explicit OlmoeBlock(const ModelArgs& a)
      : self_attn(a),
        mlp(a.decoder.hidden_size, a.decoder.intermediate_size, a.num_experts,
            {.top_k = a.num_experts_per_tok,
             .weights = a.norm_topk_prob ? nn::RouterWeights::renormalized : nn::RouterWeights::scores}),
        input_layernorm(a.decoder.hidden_size, a.decoder.rms_norm_eps),
        post_attention_layernorm(a.decoder.hidden_size, a.decoder.rms_norm_eps) {}

  OlmoeAttention self_attn;
  SparseMoeBlock mlp;
  nn::RMSNorm input_layernorm, post_attention_layernorm;

 protected:
  void members(nn::Members& m) override {
    m.child("self_attn", self_attn).child("mlp", mlp).child("input_layernorm", input_layernorm);
    m.child("post_attention_layernorm", post_attention_layernorm);
  }
};

struct OlmoeModel : nn::Module {
  explicit OlmoeModel(const ModelArgs& a)
      : embed_tokens(a.decoder.vocab_size, a.decoder.hidden_size), norm(a.decoder.hidden_size, a.decoder.rms_norm_eps) {
    for (int64_t i = 0; i < a.decoder.num_layers; ++i) layers.push_back(std::make_unique<OlmoeBlock>(a));
  }

  // As DecoderBody: the residual stream in f32, the normed activations in `dtype`, each residual add
  // fused into the next norm.
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
    Step step = make_step(cache, tokens.shape(1));
    Array x = embed_tokens(tokens, Dtype::f32);
    Array normed = astype(layers[0]->input_layernorm(x), dtype);
    for (size_t i = 0; i < layers.size(); ++i) {
      const OlmoeBlock& blk = *layers[i];
      Array attn = blk.self_attn(normed, cache.at<KVCache>(i), step);
      auto [normed2, h] = blk.post_attention_layernorm.add_and_norm(attn, x);
      Array mlp_out = blk.mlp(astype(normed2, dtype));
      if (i + 1 < layers.size()) {
        std::tie(normed, x) = layers[i + 1]->input_layernorm.add_and_norm(mlp_out, h);
        normed = astype(normed, dtype);
      } else {
        if (only_last) {
          int64_t L = mlp_out.shape(1);
          mlp_out = slice_axis(mlp_out, 1, L - 1, L);
          h = slice_axis(h, 1, L - 1, L);
        }
        normed = astype(norm.add_and_norm(mlp_out, h).first, dtype);
      }
    }
    return normed;
  }

  nn::Embedding embed_tokens;
  std::vector<std::unique_ptr<OlmoeBlock>> layers;
  nn::RMSNorm norm;

 protected:
  void members(nn::Members& m) override {
    m.child("embed_tokens", embed_tokens).children("layers", layers).child("norm", norm);
  }
};

class Model : public BodyLM<OlmoeModel> {
 public:
  explicit Model(const ModelArgs& a)
      : BodyLM(a, a.decoder.hidden_size, a.decoder.vocab_size, a.decoder.tie_word_embeddings), args(a) {}

  // Accepts HF per-expert tensors (mlp.experts.{e}.*), transformers-v5 fused tensors and mlx-lm's
  // stacked switch_mlp.
  void sanitize(WeightMap& w) const override {
    for (auto it = w.begin(); it != w.end();)
      it = it->first.find("self_attn.rotary_emb.inv_freq") != std::string::npos ? w.erase(it) : std::next(it);
    if (args.decoder.tie_word_embeddings) w.erase("lm_head.weight");
    for (int64_t l = 0; l < args.decoder.num_layers; ++l)
      nn::sanitize_experts(w, "model.layers." + std::to_string(l) + ".mlp", args.num_experts,
                           {{"gate_proj", "gate_proj"}, {"up_proj", "up_proj"}, {"down_proj", "down_proj"}});
  }

  int num_layers() const override { return static_cast<int>(args.decoder.num_layers); }
  int64_t vocab_size() const override { return args.decoder.vocab_size; }
  int64_t context_length() const override { return args.decoder.max_position_embeddings; }

  ModelArgs args;
};

ModelRegistration registration() {
  return {"olmoe", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::olmoe
