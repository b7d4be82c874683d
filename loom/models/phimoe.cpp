// PhiMoE (Phi-3.5-MoE): a decoder with LayerNorm (weight and bias) instead of RMSNorm, q/k/v/o and LM
// head biases (attention_bias, lm_head_bias), LongRoPE, and a mixture of SwiGLU experts in every layer
// routed by "sparsemixer" (two experts, each weighted by a masked softmax; nn::sparsemixer_route).
// mlx-lm: models/phimoe.py. transformers: PhimoeForCausalLM (modeling_phimoe.py).
#include <tuple>

#include "loom/common/error.h"
#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/ops.h"

namespace loom::models::phimoe {

struct ModelArgs {
  DecoderArgs decoder;
  int64_t num_local_experts = 16;
  float router_jitter_noise = 0.01f;
  bool lm_head_bias = false;
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.decoder = parse_decoder_args(c);
  a.decoder.rms_norm_eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-5));  // the LayerNorms' eps
  a.decoder.rope_theta = c.get_float("rope_theta", 1000000.0);
  // loom: transformers' defaults (no biases unless the config says so); mlx-lm always has them, and so
  // do the Phi-3.5-MoE configs.
  a.decoder.qkv_bias = a.decoder.o_bias = c.get_bool("attention_bias", false);
  a.lm_head_bias = c.get_bool("lm_head_bias", false);
  a.decoder.mlp_key = "block_sparse_moe";
  a.num_local_experts = c.get_int("num_local_experts", 16);
  a.router_jitter_noise = static_cast<float>(c.get_float("router_jitter_noise", 0.01));
  // transformers' sparsemixer selects two experts whatever num_experts_per_tok says.
  if (c.get_int("num_experts_per_tok", 2) != 2)
    throw NotSupportedError(format_error("phimoe", "sparsemixer routes to 2 experts; num_experts_per_tok is " +
                                                       std::to_string(c.get_int("num_experts_per_tok")) + " in " +
                                                       c.source()));
  // LongRoPE's magnitude: transformers scales cos/sin by short_mscale while the sequence fits the original
  // context and by long_mscale past it; mlx-lm always by long_mscale. One value when they agree (the
  // released configs); otherwise not supported.
  if (c.is_object("rope_scaling")) {
    io::Config r = c.sub("rope_scaling");
    if (r.has("long_mscale")) {
      double lm = r.get_float("long_mscale"), sm = r.get_float("short_mscale", lm);
      if (lm != sm)
        throw NotSupportedError(format_error("phimoe", "short_mscale " + std::to_string(sm) + " != long_mscale " +
                                                           std::to_string(lm) + " in " + c.source()));
      a.decoder.rope_scaling.attention_factor = lm;
    }
  }
  return a;
}

// Router `gate` (Linear, no bias) with sparsemixer routing over the SwiGLU experts in `switch_mlp`.
struct PhimoeSparseMoeBlock : FeedForward {
  explicit PhimoeSparseMoeBlock(const ModelArgs& a)
      : gate(a.decoder.hidden_size, a.num_local_experts, false),
        switch_mlp(a.decoder.hidden_size, a.decoder.intermediate_size, a.num_local_experts),
        jitter_eps(a.router_jitter_noise) {}

  Array operator()(const Array& x) const override {
    nn::Routing r = nn::sparsemixer_route(gate(x), jitter_eps);
    last_routing = r.indices;
    return nn::combine_experts(switch_mlp(x, r.indices), r.weights);
  }

  nn::Linear gate;
  nn::SwitchGLU switch_mlp;
  float jitter_eps;

 protected:
  void members(nn::Members& m) override { m.child("gate", gate).child("switch_mlp", switch_mlp); }
};

struct PhimoeDecoderLayer : nn::Module {
  explicit PhimoeDecoderLayer(const ModelArgs& a)
      : self_attn(a.decoder, false),
        block_sparse_moe(a),
        input_layernorm(a.decoder.hidden_size, a.decoder.rms_norm_eps),
        post_attention_layernorm(a.decoder.hidden_size, a.decoder.rms_norm_eps) {}

  DecoderAttention self_attn;
  PhimoeSparseMoeBlock block_sparse_moe;
  nn::LayerNorm input_layernorm, post_attention_layernorm;

 protected:
  void members(nn::Members& m) override {
    m.child("self_attn", self_attn).child("block_sparse_moe", block_sparse_moe);
    m.child("input_layernorm", input_layernorm).child("post_attention_layernorm", post_attention_layernorm);
  }
};

struct PhimoeModel : nn::Module {
  explicit PhimoeModel(const ModelArgs& a)
      : embed_tokens(a.decoder.vocab_size, a.decoder.hidden_size), norm(a.decoder.hidden_size, a.decoder.rms_norm_eps) {
    for (int64_t i = 0; i < a.decoder.num_layers; ++i) layers.push_back(std::make_unique<PhimoeDecoderLayer>(a));
  }

  // The residual stream in f32 (norms read it there), the normed activations in `dtype`.
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
    Step step = make_step(cache, tokens.shape(1));
    Array x = embed_tokens(tokens, Dtype::f32);
    for (size_t i = 0; i < layers.size(); ++i) {
      const PhimoeDecoderLayer& l = *layers[i];
      Array attn = l.self_attn(astype(l.input_layernorm(x), dtype), cache.at<KVCache>(i), step);
      Array h = add(x, astype(attn, Dtype::f32));
      x = add(h, astype(l.block_sparse_moe(astype(l.post_attention_layernorm(h), dtype)), Dtype::f32));
    }
    if (only_last) x = slice_axis(x, 1, x.shape(1) - 1, x.shape(1));
    return astype(norm(x), dtype);
  }

  nn::Embedding embed_tokens;
  std::vector<std::unique_ptr<PhimoeDecoderLayer>> layers;
  nn::LayerNorm norm;

 protected:
  void members(nn::Members& m) override {
    m.child("embed_tokens", embed_tokens).children("layers", layers).child("norm", norm);
  }
};

class Model : public BodyLM<PhimoeModel> {
 public:
  explicit Model(const ModelArgs& a)
      : BodyLM(a, a.decoder.hidden_size, a.decoder.vocab_size, a.decoder.tie_word_embeddings, a.lm_head_bias),
        args(a) {}

  // Accepts the released per-expert tensors (block_sparse_moe.experts.{e}.w1/w2/w3), transformers-v5
  // names (`mlp.`, the router as `mlp.router`, fused experts) and mlx-lm's stacked switch_mlp.
  void sanitize(WeightMap& w) const override {
    WeightMap renamed;
    for (auto& [k, v] : w) {
      if (k.find("self_attn.rotary_emb.inv_freq") != std::string::npos) continue;
      if (args.decoder.tie_word_embeddings && k == "lm_head.weight") continue;
      std::string key = k;
      if (auto p = key.find(".mlp.router."); p != std::string::npos) key.replace(p, 12, ".mlp.gate.");
      if (auto p = key.find(".mlp."); p != std::string::npos) key.replace(p, 5, ".block_sparse_moe.");
      renamed.emplace(std::move(key), v);
    }
    w.swap(renamed);
    for (int64_t l = 0; l < args.decoder.num_layers; ++l)
      nn::sanitize_experts(w, "model.layers." + std::to_string(l) + ".block_sparse_moe", args.num_local_experts,
                           {{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}});
  }

  int num_layers() const override { return static_cast<int>(args.decoder.num_layers); }
  int64_t vocab_size() const override { return args.decoder.vocab_size; }
  int64_t context_length() const override { return args.decoder.max_position_embeddings; }

  ModelArgs args;
};

ModelRegistration registration() {
  return {"phimoe", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::phimoe
