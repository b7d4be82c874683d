// Qwen3-Next: a hybrid decoder whose token mixers alternate between the gated DeltaNet (linear
// attention with a recurrent state, `linear_attention` layers) and gated full attention
// (`full_attention` layers: q_proj doubled into queries and an output gate, q/k RMSNorm, partial
// rotary); every feed-forward is, on the sparse layers, a softmax top-k mixture of SwiGLU experts
// plus a sigmoid-gated shared expert. mlx-lm: models/qwen3_next.py (+ gated_delta.py).
// transformers: Qwen3NextForCausalLM (modeling_qwen3_next.py).
//
// Norm weights: transformers' Qwen3NextRMSNorm multiplies by (1 + weight) and stores the offset;
// mlx-lm adds the 1 in sanitize (and mlx-converted checkpoints store 1 + weight). The gated norm of
// the DeltaNet multiplies by weight itself in both.
#include <algorithm>
#include <cmath>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/ssm.h"

namespace loom::models::qwen3_next {

struct ModelArgs {
  DecoderArgs decoder;  // hidden/heads/head_dim/rope/eps/tie; decoder.intermediate_size is the dense MLP's
  double partial_rotary_factor = 0.25;
  int64_t linear_num_value_heads = 0, linear_num_key_heads = 0, linear_key_head_dim = 0, linear_value_head_dim = 0;
  int64_t linear_conv_kernel_dim = 4;
  int64_t num_experts = 0, moe_intermediate_size = 0, shared_expert_intermediate_size = 0, decoder_sparse_step = 1;
  int num_experts_per_tok = 1;
  bool norm_topk_prob = true;
  std::vector<int64_t> mlp_only_layers;
  std::vector<bool> linear;  // per layer: gated DeltaNet (else full attention)

  bool is_sparse(int64_t layer) const {
    return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) == mlp_only_layers.end() &&
           num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
  }
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.decoder = parse_decoder_args(c);
  a.decoder.qk_norm = true;
  a.decoder.sliding.assign(a.decoder.num_layers, false);
  a.partial_rotary_factor = c.get_float("partial_rotary_factor", 0.25);
  a.linear_num_value_heads = c.get_int("linear_num_value_heads");
  a.linear_num_key_heads = c.get_int("linear_num_key_heads");
  a.linear_key_head_dim = c.get_int("linear_key_head_dim");
  a.linear_value_head_dim = c.get_int("linear_value_head_dim");
  a.linear_conv_kernel_dim = c.get_int("linear_conv_kernel_dim", 4);
  if (a.linear_num_key_heads <= 0 || a.linear_num_value_heads % a.linear_num_key_heads)
    throw ConfigError(format_error("config", "linear_num_value_heads " + std::to_string(a.linear_num_value_heads) +
                                                 " is not a multiple of linear_num_key_heads " +
                                                 std::to_string(a.linear_num_key_heads) + " in " + c.source()));
  a.num_experts = c.get_int("num_experts", c.get_int("num_local_experts", 0));
  if (a.num_experts > 0) {
    a.num_experts_per_tok = static_cast<int>(c.get_int("num_experts_per_tok"));
    a.moe_intermediate_size = c.get_int("moe_intermediate_size");
    a.shared_expert_intermediate_size = c.get_int("shared_expert_intermediate_size");
  }
  a.decoder_sparse_step = c.get_int("decoder_sparse_step", 1);
  // transformers' default (mlx-lm's ModelArgs says false; the released configs say true).
  a.norm_topk_prob = c.get_bool("norm_topk_prob", true);
  if (c.has("mlp_only_layers")) a.mlp_only_layers = c.get_int_list("mlp_only_layers");
  // transformers 5 writes `layer_types`; older configs (and mlx-lm) say full_attention_interval.
  int64_t n = a.decoder.num_layers;
  a.linear.assign(n, false);
  if (c.has("layer_types")) {
    auto types = c.get_string_list("layer_types");
    for (int64_t i = 0; i < n; ++i) {
      if (types[i] != "linear_attention" && types[i] != "full_attention")
        throw ConfigError(format_error("config", "layer_types[" + std::to_string(i) + "] is '" + types[i] +
                                                     "'; qwen3_next has linear_attention and full_attention layers"));
      a.linear[i] = types[i] == "linear_attention";
    }
  } else {
    int64_t interval = c.get_int("full_attention_interval", 4);
    for (int64_t i = 0; i < n; ++i) a.linear[i] = (i + 1) % interval != 0;
  }
  return a;
}

// Gated full attention: q_proj yields per head [query | gate]; the attention output is multiplied by
// sigmoid(gate) before o_proj.
struct Attention : nn::Module {
  explicit Attention(const ModelArgs& a)
      : q_proj(a.decoder.hidden_size, a.decoder.num_heads * a.decoder.head_dim * 2, a.decoder.qkv_bias),
        k_proj(a.decoder.hidden_size, a.decoder.num_kv_heads * a.decoder.head_dim, a.decoder.qkv_bias),
        v_proj(a.decoder.hidden_size, a.decoder.num_kv_heads * a.decoder.head_dim, a.decoder.qkv_bias),
        o_proj(a.decoder.num_heads * a.decoder.head_dim, a.decoder.hidden_size, a.decoder.qkv_bias),
        q_norm(a.decoder.head_dim, a.decoder.rms_norm_eps),
        k_norm(a.decoder.head_dim, a.decoder.rms_norm_eps),
        rope(static_cast<int>(static_cast<double>(a.decoder.head_dim) * a.partial_rotary_factor), a.decoder.rope_theta,
             false, a.decoder.rope_scaling, a.decoder.max_position_embeddings),
        n_heads(a.decoder.num_heads),
        n_kv_heads(a.decoder.num_kv_heads),
        head_dim(a.decoder.head_dim) {
    spec.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  }

  Array operator()(const Array& x, KVCache& cache, const Step& step) const {
    int64_t B = x.shape(0), L = x.shape(1);
    auto qg = split(reshape(q_proj(x), {B, L, n_heads, 2 * head_dim}), 2, -1);  // [query | gate]
    Array gate = reshape(qg[1], {B, L, n_heads * head_dim});
    Array q = transpose(q_norm(qg[0]), {0, 2, 1, 3});
    Array k = transpose(k_norm(reshape(k_proj(x), {B, L, n_kv_heads, head_dim})), {0, 2, 1, 3});
    Array v = transpose(reshape(v_proj(x), {B, L, n_kv_heads, head_dim}), {0, 2, 1, 3});
    Array o = cached_attention(q, k, v, cache, step, spec, &rope);
    o = reshape(transpose(o, {0, 2, 1, 3}), {B, L, n_heads * head_dim});
    return o_proj(multiply(o, sigmoid(gate)));
  }

  nn::Linear q_proj, k_proj, v_proj, o_proj;
  nn::RMSNorm q_norm, k_norm;
  nn::Rope rope;
  int64_t n_heads, n_kv_heads, head_dim;
  AttentionSpec spec;

 protected:
  void members(nn::Members& m) override {
    m.child("q_proj", q_proj).child("k_proj", k_proj).child("v_proj", v_proj).child("o_proj", o_proj);
    m.child("q_norm", q_norm).child("k_norm", k_norm);
  }
};

// RMSNorm of the DeltaNet output gated by silu(z): rms_norm(x) * weight * silu(z).
struct RMSNormGated : nn::Module {
  RMSNormGated(int64_t dims, float eps) : dims(dims), eps(eps) {}
  Array operator()(const Array& x, const Array& z) const {
    Array n = fast::rms_norm(x, weight, eps);
    return astype(multiply(astype(n, Dtype::f32), silu(astype(z, Dtype::f32))), x.dtype());
  }
  Array weight;
  int64_t dims;
  float eps;

 protected:
  void members(nn::Members& m) override { m.param("weight", weight, {dims}); }
};

// The gated DeltaNet. State per layer (ArraysCache(2), mlx-lm's order): [0] the conv window
// [B, K-1, conv_dim], [1] the delta-rule state [B, Hv, Dv, Dk] (f32).
struct GatedDeltaNet : nn::Module {
  explicit GatedDeltaNet(const ModelArgs& a)
      : num_v_heads(a.linear_num_value_heads),
        num_k_heads(a.linear_num_key_heads),
        head_k_dim(a.linear_key_head_dim),
        head_v_dim(a.linear_value_head_dim),
        key_dim(head_k_dim * num_k_heads),
        value_dim(head_v_dim * num_v_heads),
        conv_dim(2 * key_dim + value_dim),
        conv_kernel_size(a.linear_conv_kernel_dim),
        in_proj_qkvz(a.decoder.hidden_size, 2 * key_dim + 2 * value_dim, false),
        in_proj_ba(a.decoder.hidden_size, 2 * num_v_heads, false),
        norm(head_v_dim, a.decoder.rms_norm_eps),
        out_proj(value_dim, a.decoder.hidden_size, false) {}

  Array operator()(const Array& x, ArraysCache& cache, const Array& padding) const {
    int64_t B = x.shape(0), S = x.shape(1);
    int64_t r = num_v_heads / num_k_heads;
    // Checkpoint layout: per key head, [q (Dk) | k (Dk) | v (r*Dv) | z (r*Dv)] and [b (r) | a (r)].
    auto qkvz = split(reshape(in_proj_qkvz(x), {B, S, num_k_heads, 2 * head_k_dim + 2 * r * head_v_dim}),
                      {head_k_dim, 2 * head_k_dim, 2 * head_k_dim + r * head_v_dim}, -1);
    auto ba = split(reshape(in_proj_ba(x), {B, S, num_k_heads, 2 * r}), 2, -1);  // [b | a]
    Array z = reshape(qkvz[3], {B, S, num_v_heads, head_v_dim});
    Array b = reshape(ba[0], {B, S, num_v_heads});
    Array a = reshape(ba[1], {B, S, num_v_heads});
    Array mixed = concatenate(
        {reshape(qkvz[0], {B, S, key_dim}), reshape(qkvz[1], {B, S, key_dim}), reshape(qkvz[2], {B, S, value_dim})},
        -1);

    fast::ScanResult conv = conv1d(mixed, cache[0], padding);
    cache[0] = conv.state;
    auto qkv = split(silu(conv.y), {key_dim, 2 * key_dim}, -1);
    Array q = reshape(qkv[0], {B, S, num_k_heads, head_k_dim});
    Array k = reshape(qkv[1], {B, S, num_k_heads, head_k_dim});
    Array v = reshape(qkv[2], {B, S, num_v_heads, head_v_dim});
    // transformers' l2norm: x * rsqrt(sum(x^2) + 1e-6), written as rms_norm with eps 1e-6 / Dk
    // divided by sqrt(Dk); q is further scaled by Dk^-0.5. loom: mlx-lm's rms_norm(eps 1e-6) puts
    // Dk * 1e-6 under the root instead.
    double dk = static_cast<double>(head_k_dim);
    float l2_eps = static_cast<float>(1e-6 / dk);
    q = fast::rms_norm(q, {}, l2_eps) * (1.0 / dk);
    k = fast::rms_norm(k, {}, l2_eps) * (1.0 / std::sqrt(dk));

    // decay exp(g) with g = -exp(A_log) * softplus(a + dt_bias); beta = sigmoid(b). In f32.
    Array g = exp(multiply(negative(exp(astype(A_log, Dtype::f32))),
                           softplus(add(astype(a, Dtype::f32), astype(dt_bias, Dtype::f32)))));
    Array beta = sigmoid(astype(b, Dtype::f32));
    fast::ScanResult rule = fast::gated_delta_rule(q, k, v, g, beta, cache[1], padding);
    cache[1] = rule.state;
    cache.advance(S);

    Array out = norm(astype(rule.y, x.dtype()), z);
    return out_proj(reshape(out, {B, S, value_dim}));
  }

  int64_t num_v_heads, num_k_heads, head_k_dim, head_v_dim, key_dim, value_dim, conv_dim, conv_kernel_size;
  nn::Linear in_proj_qkvz, in_proj_ba;
  nn::DepthwiseConv1d conv1d{conv_dim, conv_kernel_size, /*bias=*/false};  // transformers stores [C, 1, K]
  Array dt_bias, A_log;  // [Hv]
  RMSNormGated norm;
  nn::Linear out_proj;

 protected:
  void members(nn::Members& m) override {
    m.child("in_proj_qkvz", in_proj_qkvz).child("in_proj_ba", in_proj_ba).child("conv1d", conv1d);
    m.param("dt_bias", dt_bias, {num_v_heads}).param("A_log", A_log, {num_v_heads});
    m.child("norm", norm).child("out_proj", out_proj);
  }
};

// The shared sparse block plus the sigmoid-gated shared expert (as Qwen2-MoE's).
struct SparseMoeBlock : models::SparseMoeBlock {
  explicit SparseMoeBlock(const ModelArgs& a)
      : models::SparseMoeBlock(
            a.decoder.hidden_size, a.moe_intermediate_size, a.num_experts,
            {.top_k = a.num_experts_per_tok,
             .weights = a.norm_topk_prob ? nn::RouterWeights::renormalized : nn::RouterWeights::scores}),
        shared_expert(a.decoder.hidden_size, a.shared_expert_intermediate_size, false),
        shared_expert_gate(a.decoder.hidden_size, 1, false) {}

  Array operator()(const Array& x) const override {
    return add(models::SparseMoeBlock::operator()(x), nn::sigmoid_gated(shared_expert_gate, x, shared_expert(x)));
  }

  DecoderMLP shared_expert;
  nn::Linear shared_expert_gate;

 protected:
  void members(nn::Members& m) override {
    models::SparseMoeBlock::members(m);
    m.child("shared_expert", shared_expert).child("shared_expert_gate", shared_expert_gate);
  }
};

struct DecoderLayer : nn::Module {
  DecoderLayer(const ModelArgs& a, int64_t layer)
      : is_linear(a.linear[layer]),
        input_layernorm(a.decoder.hidden_size, a.decoder.rms_norm_eps),
        post_attention_layernorm(a.decoder.hidden_size, a.decoder.rms_norm_eps) {
    if (is_linear)
      linear_attn = std::make_unique<GatedDeltaNet>(a);
    else
      self_attn = std::make_unique<Attention>(a);
    if (a.is_sparse(layer))
      mlp = std::make_unique<SparseMoeBlock>(a);
    else
      mlp = std::make_unique<DecoderMLP>(a.decoder.hidden_size, a.decoder.intermediate_size, false);
  }

  bool is_linear;
  std::unique_ptr<GatedDeltaNet> linear_attn;
  std::unique_ptr<Attention> self_attn;
  std::unique_ptr<FeedForward> mlp;
  nn::RMSNorm input_layernorm, post_attention_layernorm;

 protected:
  void members(nn::Members& m) override {
    if (linear_attn)
      m.child("linear_attn", *linear_attn);
    else
      m.child("self_attn", *self_attn);
    m.child("mlp", *mlp).child("input_layernorm", input_layernorm);
    m.child("post_attention_layernorm", post_attention_layernorm);
  }
};

template <typename T>
T& layer_cache(Cache& cache, size_t i, const char* what) {
  auto* c = dynamic_cast<T*>(cache.layers.at(i).get());
  if (!c)
    throw ValueError(
        format_error("qwen3_next", "layer " + std::to_string(i) + " needs " + what +
                                       " in its cache slot (build the cache with the model's make_cache)"));
  return *c;
}

struct Qwen3NextModel : nn::Module {
  explicit Qwen3NextModel(const ModelArgs& a)
      : embed_tokens(a.decoder.vocab_size, a.decoder.hidden_size), norm(a.decoder.hidden_size, a.decoder.rms_norm_eps) {
    for (int64_t i = 0; i < a.decoder.num_layers; ++i) layers.push_back(std::make_unique<DecoderLayer>(a, i));
  }

  // Final-normed hidden states [B, L', D] (L' = 1 when only_last). The residual stream is f32.
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
    if (cache.layers.size() != layers.size())
      throw ValueError(format_error("qwen3_next", "the cache has " + std::to_string(cache.layers.size()) +
                                                      " layers, the model " + std::to_string(layers.size())));
    Step step = make_step(cache, tokens.shape(1));
    const Array& padding = step.scan_padding;
    Array x = embed_tokens(tokens, Dtype::f32);
    auto to_compute = [dtype](const Array& a) { return astype(a, dtype); };
    Array normed = to_compute(layers[0]->input_layernorm(x));
    for (size_t i = 0; i < layers.size(); ++i) {
      const DecoderLayer& blk = *layers[i];
      Array r = blk.is_linear
                    ? (*blk.linear_attn)(normed, layer_cache<ArraysCache>(cache, i, "an ArraysCache"), padding)
                    : (*blk.self_attn)(normed, layer_cache<KVCache>(cache, i, "a KVCache"), step);
      auto [normed2, h] = blk.post_attention_layernorm.add_and_norm(r, x);
      Array mlp_out = (*blk.mlp)(to_compute(normed2));
      if (i + 1 < layers.size()) {
        std::tie(normed, x) = layers[i + 1]->input_layernorm.add_and_norm(mlp_out, h);
        normed = to_compute(normed);
      } else {
        if (only_last) {
          int64_t L = mlp_out.shape(1);
          mlp_out = slice_axis(mlp_out, 1, L - 1, L);
          h = slice_axis(h, 1, L - 1, L);
        }
        normed = to_compute(norm.add_and_norm(mlp_out, h).first);
      }
    }
    return normed;
  }

  nn::Embedding embed_tokens;
  std::vector<std::unique_ptr<DecoderLayer>> layers;
  nn::RMSNorm norm;

 protected:
  void members(nn::Members& m) override {
    m.child("embed_tokens", embed_tokens).children("layers", layers).child("norm", norm);
  }
};

class Model : public BodyLM<Qwen3NextModel> {
 public:
  explicit Model(const ModelArgs& a)
      : BodyLM(a, a.decoder.hidden_size, a.decoder.vocab_size, a.decoder.tie_word_embeddings), args(a) {}

  // mlx-lm's make_cache: ArraysCache(2) for the DeltaNet layers, KVCache for the attention layers.
  // loom: with options.max_kv_size the attention layers get a RotatingKVCache (mlx-lm ignores it).
  Cache make_cache(const CacheOptions& options) const override {
    std::vector<bool> linear;
    for (const auto& l : model.layers) linear.push_back(l->is_linear);
    return make_hybrid_cache(linear, 2, options);
  }

  // Accepts transformers checkpoints (per-expert or v5 fused experts, conv1d [C, 1, K], norm offsets)
  // and mlx-lm's (stacked switch_mlp, conv1d [C, K, 1], norms already 1 + weight).
  void sanitize(WeightMap& w) const override {
    for (auto it = w.begin(); it != w.end();) it = it->first.rfind("mtp.", 0) == 0 ? w.erase(it) : std::next(it);
    if (args.decoder.tie_word_embeddings) w.erase("lm_head.weight");
    // A transformers checkpoint says so by its expert keys or its conv1d layout. mlx-lm recognises
    // only the per-expert keys; loom also the v5 fused ones (transformers 5 saves those).
    bool hf = false;
    for (const auto& [k, v] : w) {
      if (k.find(".mlp.experts.") != std::string::npos) hf = true;
      if (k.find("conv1d.weight") != std::string::npos && v.ndim() == 3 && v.shape(1) == 1 && v.shape(2) != 1)
        hf = true;
    }
    for (int64_t l = 0; l < args.decoder.num_layers; ++l) {
      std::string p = "model.layers." + std::to_string(l);
      if (args.is_sparse(l))
        nn::sanitize_experts(w, p + ".mlp", args.num_experts,
                             {{"gate_proj", "gate_proj"}, {"up_proj", "up_proj"}, {"down_proj", "down_proj"}});
      // [C, 1, K] and [C, K, 1] hold the same bytes in the same order: a reshape is mlx-lm's moveaxis.
      auto conv = w.find(p + ".linear_attn.conv1d.weight");
      if (conv != w.end() && conv->second.ndim() == 3 && conv->second.shape(1) == 1 && conv->second.shape(2) != 1)
        conv->second = reshape(contiguous(conv->second), {conv->second.shape(0), conv->second.shape(2), 1});
    }
    if (!hf) return;
    static const char* kOffsetNorms[] = {".input_layernorm.weight", ".post_attention_layernorm.weight",
                                         "model.norm.weight", ".q_norm.weight", ".k_norm.weight"};
    for (auto& [k, v] : w) {
      bool offset =
          std::any_of(std::begin(kOffsetNorms), std::end(kOffsetNorms), [&](const char* s) { return ends_with(k, s); });
      // Kept in the stored dtype, as mlx-lm's `v + 1.0` does.
      if (offset && v.ndim() == 1) v = astype(astype(v, Dtype::f32) + 1.0, v.dtype());
    }
  }

  // mlx-lm qwen3_next.py quant_predicate: the router gates and the shared-expert gates stay at 8 bits.
  std::optional<QuantSpec> quant_predicate(const std::string& path, const nn::Quantizable& layer,
                                           const QuantSpec& base) const override {
    if (ends_with(path, "mlp.gate") || ends_with(path, "shared_expert_gate"))
      return nn::router_gate_quant_spec(layer.quant_axis_size());
    return base;
  }

  int num_layers() const override { return static_cast<int>(args.decoder.num_layers); }
  int64_t vocab_size() const override { return args.decoder.vocab_size; }
  int64_t context_length() const override { return args.decoder.max_position_embeddings; }

  ModelArgs args;
};

ModelRegistration registration() {
  return {"qwen3_next", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::qwen3_next
