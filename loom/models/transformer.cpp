#include "loom/models/transformer.h"

#include <cmath>

#include "loom/common/error.h"
#include "loom/io/config.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom::models {

nn::RopeScaling parse_rope_scaling(const io::Config& c) {
  nn::RopeScaling s;
  if (!c.is_object("rope_scaling")) return s;
  io::Config r = c.sub("rope_scaling");
  s.type = r.get_string("type", r.get_string("rope_type", "default"));
  s.factor = r.get_float("factor", 1.0);
  s.low_freq_factor = r.get_float("low_freq_factor", 1.0);
  s.high_freq_factor = r.get_float("high_freq_factor", 4.0);
  s.original_max_position_embeddings = r.get_int("original_max_position_embeddings", 0);
  s.beta_fast = r.get_float("beta_fast", 32.0);
  s.beta_slow = r.get_float("beta_slow", 1.0);
  s.mscale = r.get_float("mscale", 1.0);
  s.mscale_all_dim = r.get_float("mscale_all_dim", 0.0);
  s.attention_factor = r.get_float("attention_factor", 0.0);
  if (r.has("short_factor")) s.short_factor = r.get_float_list("short_factor");
  if (r.has("long_factor")) s.long_factor = r.get_float_list("long_factor");
  return s;
}

DecoderArgs parse_decoder_args(const io::Config& c) {
  DecoderArgs a;
  a.hidden_size = c.get_int("hidden_size");
  a.num_layers = c.get_int("num_hidden_layers");
  a.intermediate_size = c.get_int("intermediate_size");
  a.num_heads = c.get_int("num_attention_heads");
  a.vocab_size = c.get_int("vocab_size");
  a.rms_norm_eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  a.num_kv_heads = c.get_int("num_key_value_heads", a.num_heads);
  a.head_dim = c.get_int("head_dim", a.hidden_size / a.num_heads);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 0);
  a.rope_theta = c.get_float("rope_theta", 10000.0);
  a.rope_traditional = c.get_bool("rope_traditional", false);
  a.rope_scaling = parse_rope_scaling(c);
  a.qkv_bias = a.o_bias = c.get_bool("attention_bias", false);
  a.mlp_bias = c.get_bool("mlp_bias", false);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", false);
  a.sliding_window = c.get_int("sliding_window", 0);
  a.sliding.assign(a.num_layers, false);
  if (c.has("layer_types")) {
    auto types = c.get_string_list("layer_types");
    if (static_cast<int64_t>(types.size()) != a.num_layers)
      throw ConfigError(format_error("config", "layer_types has " + std::to_string(types.size()) + " entries for " +
                                                   std::to_string(a.num_layers) + " layers in " + c.source()));
    for (int64_t i = 0; i < a.num_layers; ++i) a.sliding[i] = types[i] == "sliding_attention";
  }
  if (a.num_heads % a.num_kv_heads)
    throw ConfigError(format_error("config", "num_attention_heads " + std::to_string(a.num_heads) +
                                                 " is not a multiple of num_key_value_heads " + std::to_string(a.num_kv_heads)));
  return a;
}

void apply_qwen_sliding_window(DecoderArgs& a, const io::Config& c) {
  if (!c.get_bool("use_sliding_window", false)) {
    a.sliding.assign(a.num_layers, false);
  } else if (!c.has("layer_types")) {
    int64_t first = c.get_int("max_window_layers", a.num_layers);
    for (int64_t i = 0; i < a.num_layers; ++i) a.sliding[i] = i >= first;
  }
}

DecoderAttention::DecoderAttention(const DecoderArgs& a, bool sliding)
    : q_proj(a.hidden_size, a.num_heads * a.head_dim, a.qkv_bias),
      k_proj(a.hidden_size, a.num_kv_heads * a.head_dim, a.qkv_bias),
      v_proj(a.hidden_size, a.num_kv_heads * a.head_dim, a.qkv_bias),
      o_proj(a.num_heads * a.head_dim, a.hidden_size, a.o_bias),
      rope(static_cast<int>(a.head_dim), a.rope_theta, a.rope_traditional, a.rope_scaling, a.max_position_embeddings),
      n_heads(a.num_heads), n_kv_heads(a.num_kv_heads), head_dim(a.head_dim) {
  if (a.qk_norm) {
    q_norm = std::make_unique<nn::RMSNorm>(a.head_dim, a.rms_norm_eps);
    k_norm = std::make_unique<nn::RMSNorm>(a.head_dim, a.rms_norm_eps);
  }
  spec.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  if (sliding && a.sliding_window > 0) {
    spec.mode = AttentionMode::window;
    spec.window = static_cast<int>(a.sliding_window);
  }
}

void DecoderAttention::members(nn::Members& m) {
  m.child("q_proj", q_proj).child("k_proj", k_proj).child("v_proj", v_proj).child("o_proj", o_proj);
  if (q_norm) m.child("q_norm", *q_norm).child("k_norm", *k_norm);
}

Array DecoderAttention::operator()(const Array& x, KVCache& cache, const Step& step) const {
  int64_t B = x.shape(0), L = x.shape(1);
  // [B, L, H*D] -> [B, H, L, D]
  std::vector<Array> qkv = nn::linears(x, {&q_proj, &k_proj, &v_proj});
  Array q = reshape(qkv[0], {B, L, n_heads, head_dim});
  Array k = reshape(qkv[1], {B, L, n_kv_heads, head_dim});
  Array v = transpose(reshape(qkv[2], {B, L, n_kv_heads, head_dim}), {0, 2, 1, 3});
  if (q_norm) {
    q = (*q_norm)(q);
    k = (*k_norm)(k);
  }
  q = transpose(q, {0, 2, 1, 3});
  k = transpose(k, {0, 2, 1, 3});
  // Without a later change to q or k, the rotation is left to cached_attention (fused with the cache write).
  const bool rope_in_attention = use_rope && !qk_l2_norm && !temperature;
  if (use_rope && !rope_in_attention) {
    q = apply_rope(rope, q, step);
    k = apply_rope(rope, k, step);
  }
  if (qk_l2_norm) {
    q = fast::rms_norm(q, Array(), qk_l2_eps);
    k = fast::rms_norm(k, Array(), qk_l2_eps);
  }
  if (temperature) q = multiply(q, astype(query_temperature_scale(*temperature, step, B), q.dtype()));
  Array o = cached_attention(q, k, v, cache, step, spec, rope_in_attention ? &rope : nullptr);
  return o_proj(reshape(transpose(o, {0, 2, 1, 3}), {B, L, n_heads * head_dim}));
}

namespace {

template <typename T>
bool layer_flag(const std::vector<T>& v, int64_t layer) {
  return layer < static_cast<int64_t>(v.size()) && v[layer];
}

}  // namespace

void DecoderAttention::configure_layer(const DecoderArgs& a, int64_t layer) {
  use_rope = !layer_flag(a.no_rope, layer);
  qk_l2_norm = a.qk_l2_norm && use_rope;
  qk_l2_eps = a.rms_norm_eps;
  if (layer_flag(a.query_temperature, layer)) temperature = a.temperature;
  if (layer_flag(a.chunked, layer) && a.attention_chunk_size > 0) {
    spec.mode = AttentionMode::chunk;
    spec.chunk = static_cast<int>(a.attention_chunk_size);
  }
}

Array query_temperature_scale(const DecoderArgs::QueryTemperature& t, const Step& step, int64_t batch) {
  // Each row's own positions (offset - left padding, as RoPE uses), so a left-padded row scales as it
  // would alone; transformers uses the padded cache positions there.
  Array pos = reshape(arange(0, static_cast<double>(step.length), 1, Dtype::f32), {1, 1, step.length, 1});
  if (step.rope_offsets.valid())
    pos = add(pos, reshape(astype(step.rope_offsets, Dtype::f32), {batch, 1, 1, 1}));
  else
    pos = add(pos, full({1}, static_cast<double>(step.offset), Dtype::f32));
  Array steps = floor(divide(add(pos, full({1}, static_cast<double>(t.shift), Dtype::f32)),
                             full({1}, static_cast<double>(t.floor_scale), Dtype::f32)));
  return add(multiply(log1p(steps), full({1}, t.beta, Dtype::f32)), full({1}, 1.0, Dtype::f32));
}

DecoderMLP::DecoderMLP(int64_t dim, int64_t hidden, bool bias)
    : gate_proj(dim, hidden, bias), down_proj(hidden, dim, bias), up_proj(dim, hidden, bias) {}

void DecoderMLP::members(nn::Members& m) { m.child("gate_proj", gate_proj).child("down_proj", down_proj).child("up_proj", up_proj); }

Array DecoderMLP::operator()(const Array& x) const { return down_proj(nn::swiglu_linears(x, gate_proj, up_proj)); }

SparseMoeBlock::SparseMoeBlock(int64_t hidden, int64_t expert_hidden, int64_t num_experts, const nn::RouterSpec& r)
    : gate(hidden, num_experts, false), switch_mlp(hidden, expert_hidden, num_experts), router(r) {}

Array SparseMoeBlock::operator()(const Array& x) const {
  nn::Routing r = nn::route(gate(x), router);
  last_routing = r.indices;
  return nn::combine_experts(switch_mlp(x, r.indices), r.weights);
}

void SparseMoeBlock::members(nn::Members& m) { m.child("gate", gate).child("switch_mlp", switch_mlp); }

DecoderBlock::DecoderBlock(const DecoderArgs& a, int64_t layer, const FeedForwardFactory& ff)
    : self_attn(a, a.sliding[layer]),
      mlp(ff ? ff(a, layer) : std::make_unique<DecoderMLP>(a.hidden_size, a.intermediate_size, a.mlp_bias)),
      input_layernorm(a.hidden_size, a.rms_norm_eps),
      post_attention_layernorm(a.hidden_size, a.rms_norm_eps),
      mlp_key(a.mlp_key) {
  self_attn.configure_layer(a, layer);
}

void DecoderBlock::members(nn::Members& m) {
  m.child("self_attn", self_attn).child(mlp_key, *mlp).child("input_layernorm", input_layernorm);
  m.child("post_attention_layernorm", post_attention_layernorm);
}

DecoderBody::DecoderBody(const DecoderArgs& a, const FeedForwardFactory& ff)
    : embed_tokens(a.vocab_size, a.hidden_size), norm(a.hidden_size, a.rms_norm_eps) {
  for (int64_t i = 0; i < a.num_layers; ++i) layers.push_back(std::make_unique<DecoderBlock>(a, i, ff));
}

void DecoderBody::members(nn::Members& m) {
  m.child("embed_tokens", embed_tokens).children("layers", layers).child("norm", norm);
}

Array DecoderBody::operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
  Step step = make_step(cache, tokens.shape(1));
  // The residual stream accumulates in f32 whatever the compute dtype (DESIGN.md: accumulate in
  // f32); the normed activations that feed the matmuls are in `dtype`.
  // (add_and_norm writes the normed values in `dtype` directly: one rounding of the f32 result, as
  // astype would do, without a conversion pass.)
  Array x = embed_tokens(tokens, Dtype::f32);
  Array normed = astype(layers[0]->input_layernorm(x), dtype);
  for (size_t i = 0; i < layers.size(); ++i) {
    const DecoderBlock& blk = *layers[i];
    Array attn = blk.self_attn(normed, cache.at<KVCache>(i), step);
    auto [normed2, h] = blk.post_attention_layernorm.add_and_norm(attn, x, dtype);
    Array mlp_out = (*blk.mlp)(normed2);
    if (i + 1 < layers.size()) {
      std::tie(normed, x) = layers[i + 1]->input_layernorm.add_and_norm(mlp_out, h, dtype);
    } else {
      if (only_last) {
        int64_t L = mlp_out.shape(1);
        mlp_out = slice_axis(mlp_out, 1, L - 1, L);
        h = slice_axis(h, 1, L - 1, L);
      }
      normed = norm.add_and_norm(mlp_out, h, dtype).first;
    }
  }
  return normed;
}

DecoderLM::DecoderLM(DecoderArgs a, const FeedForwardFactory& ff) : args(std::move(a)), model(args, ff) {
  if (!args.tie_word_embeddings) lm_head = std::make_unique<nn::Linear>(args.hidden_size, args.vocab_size, false);
}

void DecoderLM::members(nn::Members& m) {
  m.child("model", model);
  if (lm_head) m.child("lm_head", *lm_head);
}

Array DecoderLM::forward(const Array& tokens, Cache& cache, LogitsMode mode) {
  Array h = model(tokens, cache, mode != LogitsMode::all, dtype);
  if (mode == LogitsMode::none) return h;
  return lm_head ? (*lm_head)(h) : model.embed_tokens.as_linear(h);
}

void DecoderLM::sanitize(WeightMap& w) const {
  // Precomputed rotary tables some checkpoints carry are recomputed here.
  for (auto it = w.begin(); it != w.end();)
    it = it->first.find("self_attn.rotary_emb.inv_freq") != std::string::npos ? w.erase(it) : std::next(it);
  if (args.tie_word_embeddings) w.erase("lm_head.weight");
}

VisionLanguageWrapper::VisionLanguageWrapper(std::unique_ptr<LanguageModel> text, std::vector<std::string> drop)
    : language_model(std::move(text)), dropped(std::move(drop)) {}

void VisionLanguageWrapper::members(nn::Members& m) { m.child("language_model", *language_model); }

Array VisionLanguageWrapper::forward(const Array& tokens, Cache& cache, LogitsMode mode) {
  language_model->dtype = dtype;
  return language_model->forward(tokens, cache, mode);
}

void VisionLanguageWrapper::sanitize(WeightMap& w) const {
  auto starts = [](const std::string& k, const std::string& p) { return k.compare(0, p.size(), p) == 0; };
  WeightMap text, stray;  // stray keys keep their names, so the strict match names them
  for (auto& [k, v] : w) {
    if (starts(k, "model.language_model.")) {
      text.emplace("model." + k.substr(21), v);  // transformers >= 4.52
    } else if (starts(k, "lm_head.")) {
      text.emplace(k, v);  // transformers >= 4.52
    } else if (starts(k, "language_model.")) {
      text.emplace(k.substr(15), v);
    } else {
      std::string key = starts(k, "model.") ? k.substr(6) : k;
      bool drop = false;
      for (const std::string& d : dropped) drop = drop || key == d || starts(key, d + ".");
      if (!drop) stray.emplace(k, v);
    }
  }
  language_model->sanitize(text);
  w.clear();
  for (auto& [k, v] : text) w.emplace("language_model." + k, v);
  w.merge(stray);
}

}  // namespace loom::models
