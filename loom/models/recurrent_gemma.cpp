// RecurrentGemma (Griffin): residual blocks whose temporal mixer follows `block_types` (repeated:
// recurrent, recurrent, attention by default). A recurrent block is a gelu branch times a conv1d +
// RG-LRU branch; an attention block is local (sliding-window) multi-query attention with partial
// rotary. Gemma-style (1 + weight) RMSNorms, embeddings scaled by sqrt(hidden), GeGLU MLP with
// biases, logits soft-capped. mlx-lm: models/recurrent_gemma.py. transformers:
// RecurrentGemmaForCausalLM (modeling_recurrent_gemma.py).
#include <algorithm>
#include <cmath>

#include "loom/common/error.h"
#include "loom/core/dtype.h"
#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/ssm.h"

namespace loom::models::recurrent_gemma {

struct ModelArgs {
  int64_t hidden_size = 0, intermediate_size = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, num_layers = 0;
  int64_t vocab_size = 0, lru_width = 0, attention_window_size = 0, conv1d_width = 4;
  float rms_norm_eps = 1e-6f;
  double logits_soft_cap = 0, rope_theta = 10000.0, partial_rotary_factor = 0.5;
  bool attention_bias = false, embeddings_scale_by_sqrt_dim = true, tie_word_embeddings = true;
  std::vector<std::string> block_types;

  bool is_recurrent(int64_t layer) const { return block_types[layer % block_types.size()] == "recurrent"; }
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.hidden_size = c.get_int("hidden_size");
  a.intermediate_size = c.get_int("intermediate_size");
  a.num_heads = c.get_int("num_attention_heads");
  // loom: transformers' num_key_value_heads (mlx-lm always uses one key/value head; the released
  // checkpoints have one).
  a.num_kv_heads = c.get_int("num_key_value_heads", a.num_heads);
  a.head_dim = a.hidden_size / a.num_heads;
  a.num_layers = c.get_int("num_hidden_layers");
  a.vocab_size = c.get_int("vocab_size");
  a.lru_width = c.get_int("lru_width", a.hidden_size);  // loom: transformers' (mlx-lm assumes hidden_size)
  a.attention_window_size = c.get_int("attention_window_size");
  a.conv1d_width = c.get_int("conv1d_width", 4);
  a.rms_norm_eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  a.logits_soft_cap = c.get_float("logits_soft_cap", 0.0);
  a.rope_theta = c.get_float("rope_theta", 10000.0);
  a.partial_rotary_factor = c.get_float("partial_rotary_factor", 0.5);
  a.attention_bias = c.get_bool("attention_bias", false);
  a.embeddings_scale_by_sqrt_dim = c.get_bool("embeddings_scale_by_sqrt_dim", true);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", true);
  // The 2B and 9B configs spell it differently (mlx-lm).
  if (c.has("block_types"))
    a.block_types = c.get_string_list("block_types");
  else if (c.has("_block_types"))
    a.block_types = c.get_string_list("_block_types");
  else
    a.block_types = {"recurrent", "recurrent", "attention"};
  if (a.block_types.empty()) throw ConfigError(format_error("config", "block_types is empty in " + c.source()));
  for (const auto& t : a.block_types)
    if (t != "recurrent" && t != "attention")
      throw ConfigError(format_error("config", "block type '" + t + "' in " + c.source() +
                                                   " (recurrent_gemma has recurrent and attention blocks)"));
  if (a.num_heads <= 0 || a.num_kv_heads <= 0 || a.hidden_size % a.num_heads || a.lru_width % a.num_heads ||
      a.num_heads % a.num_kv_heads)
    throw ConfigError(format_error("config", "num_attention_heads " + std::to_string(a.num_heads) +
                                                 " must divide hidden_size and lru_width and be a multiple of "
                                                 "num_key_value_heads in " +
                                                 c.source()));
  if (a.attention_window_size <= 0)
    throw ConfigError(format_error("config", "attention_window_size must be positive in " + c.source()));
  return a;
}

// Gemma's RMSNorm: rms_norm(x) * (1 + weight); the checkpoint stores the offset `weight`.
// loom: transformers uses the config's rms_norm_eps for every norm; mlx-lm's block norms use 1e-5.
struct RMSNorm : nn::Module {
  RMSNorm(int64_t dims, float eps) : dims(dims), eps(eps) {}
  Array scale() const { return astype(weight, Dtype::f32) + 1.0; }
  Array operator()(const Array& x) const { return fast::rms_norm(x, scale(), eps); }
  std::pair<Array, Array> add_and_norm(const Array& x, const Array& residual) const {
    return fast::add_rms_norm(x, residual, scale(), eps);
  }
  Array weight;
  int64_t dims;
  float eps;

 protected:
  void members(nn::Members& m) override { m.param("weight", weight, {dims}); }
};

// The Real-Gated Linear Recurrent Unit. Gates are block-diagonal linears (one [w, w] block per head):
//   gate_x = sigmoid(x W_x + b_x), gate_a = sigmoid(x W_a + b_a)
//   log a = -8 * gate_a * softplus(recurrent_param);  h[t] = a[t] * h[t-1] + sqrt(1 - a[t]^2) * gate_x[t] * x[t]
// except at a sequence's first position (`reset`), where the input is not rescaled and h starts at 0.
struct RGLRU : nn::Module {
  RGLRU(int64_t width, int64_t num_heads) : width(width), num_heads(num_heads), block_width(width / num_heads) {}

  // x [B, L, W]; reset bool [B, L, 1] or empty; state [B, W] f32 or empty.
  fast::ScanResult operator()(const Array& x, const Array& reset, const Array& state, const Array& padding) const {
    int64_t B = x.shape(0), L = x.shape(1);
    auto block_linear = [&](const Array& w, const Array& b) {
      Array h = transpose(reshape(x, {B, L, num_heads, block_width}), {0, 2, 1, 3});  // [B, H, L, w]
      h = transpose(matmul(h, w), {0, 2, 1, 3});                                      // [B, L, H, w]
      return sigmoid(astype(reshape(add(h, b), {B, L, width}), Dtype::f32));
    };
    Array gate_x = block_linear(input_gate_weight, input_gate_bias);
    Array gate_a = block_linear(recurrent_gate_weight, recurrent_gate_bias);
    Array log_a = multiply(gate_a, softplus(astype(recurrent_param, Dtype::f32))) * -8.0;
    Array a = exp(log_a);
    Array multiplier = sqrt(1.0 - exp(log_a * 2.0));
    if (reset.valid()) {
      multiplier = where(reset, weak_scalar(1.0, multiplier), multiplier);
      a = where(reset, weak_scalar(0.0, a), a);  // transformers: the state restarts at a reset
    }
    Array normalized = multiply(multiply(astype(x, Dtype::f32), gate_x), multiplier);
    fast::ScanResult r = fast::linear_scan(a, normalized, state, padding);
    r.y = astype(r.y, x.dtype());
    return r;
  }

  Array recurrent_param;                           // [W]
  Array input_gate_weight, recurrent_gate_weight;  // [H, w, w] (x @ W)
  Array input_gate_bias, recurrent_gate_bias;      // [H, w]
  int64_t width, num_heads, block_width;

 protected:
  void members(nn::Members& m) override {
    m.param("recurrent_param", recurrent_param, {width});
    m.param("input_gate_weight", input_gate_weight, {num_heads, block_width, block_width});
    m.param("input_gate_bias", input_gate_bias, {num_heads, block_width});
    m.param("recurrent_gate_weight", recurrent_gate_weight, {num_heads, block_width, block_width});
    m.param("recurrent_gate_bias", recurrent_gate_bias, {num_heads, block_width});
  }
};

// State per layer (ArraysCache(2), mlx-lm's order): [0] the conv window [B, K-1, lru_width], [1] the
// RG-LRU state [B, lru_width] (f32).
struct RecurrentBlock : nn::Module {
  explicit RecurrentBlock(const ModelArgs& a)
      : linear_y(a.hidden_size, a.lru_width, true),
        linear_x(a.hidden_size, a.lru_width, true),
        linear_out(a.lru_width, a.hidden_size, true),
        conv_1d(a.lru_width, a.conv1d_width, /*bias=*/true),
        rg_lru(a.lru_width, a.num_heads) {}

  Array operator()(const Array& x, ArraysCache& cache, const Array& reset, const Array& padding) const {
    Array y = gelu_approx(linear_y(x));
    Array xb = linear_x(x);
    fast::ScanResult conv = conv_1d(xb, cache[0], padding);
    cache[0] = conv.state;
    fast::ScanResult lru = rg_lru(conv.y, reset, cache[1], padding);
    cache[1] = lru.state;
    cache.advance(x.shape(1));
    return linear_out(multiply(lru.y, y));
  }

  nn::Linear linear_y, linear_x, linear_out;
  nn::DepthwiseConv1d conv_1d;
  RGLRU rg_lru;

 protected:
  void members(nn::Members& m) override {
    m.child("linear_y", linear_y).child("linear_x", linear_x).child("linear_out", linear_out);
    m.child("conv_1d", conv_1d).child("rg_lru", rg_lru);
  }
};

// Local attention: query at position p sees the attention_window_size positions p-window+1 .. p.
struct LocalAttentionBlock : nn::Module {
  explicit LocalAttentionBlock(const ModelArgs& a)
      : q_proj(a.hidden_size, a.num_heads * a.head_dim, a.attention_bias),
        k_proj(a.hidden_size, a.num_kv_heads * a.head_dim, a.attention_bias),
        v_proj(a.hidden_size, a.num_kv_heads * a.head_dim, a.attention_bias),
        o_proj(a.num_heads * a.head_dim, a.hidden_size, true),
        rope(static_cast<int>(static_cast<double>(a.head_dim) * a.partial_rotary_factor), a.rope_theta, false, {}, 0),
        n_heads(a.num_heads),
        n_kv_heads(a.num_kv_heads),
        head_dim(a.head_dim) {
    spec.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
    spec.mode = AttentionMode::window;
    spec.window = static_cast<int>(a.attention_window_size);
  }

  Array operator()(const Array& x, KVCache& cache, const Step& step, const Array& left_padding) const {
    int64_t B = x.shape(0), L = x.shape(1);
    Array q = transpose(reshape(q_proj(x), {B, L, n_heads, head_dim}), {0, 2, 1, 3});
    Array k = transpose(reshape(k_proj(x), {B, L, n_kv_heads, head_dim}), {0, 2, 1, 3});
    Array v = transpose(reshape(v_proj(x), {B, L, n_kv_heads, head_dim}), {0, 2, 1, 3});
    q = apply_rope(rope, q, step);
    k = apply_rope(rope, k, step);
    Array o = attend(q, k, v, cache, step, left_padding);
    return o_proj(reshape(transpose(o, {0, 2, 1, 3}), {B, L, n_heads * head_dim}));
  }

  // The window cache (RotatingKVCache(window), keep 0) stores the newest positions contiguously in
  // time, so storage index s holds absolute position (offset - stored + s). A left-padded batch then
  // hides, per row, the padding still stored: keys before max(0, left_padding - (offset - stored)).
  // (cached_attention refuses left padding with a rotating cache.) Other caches: cached_attention.
  Array attend(const Array& q, const Array& k, const Array& v, KVCache& cache, const Step& step,
               const Array& left_padding) const {
    auto* ring = dynamic_cast<RotatingKVCache*>(&cache);
    if (!ring || ring->keep() != 0 || !left_padding.valid()) return cached_attention(q, k, v, cache, step, spec);
    fast::KVBlocks blocks = ring->update_and_fetch(k, v);
    AttentionPositions pos;
    pos.q_offset = blocks.length - q.shape(2);
    int64_t first = ring->offset() - blocks.length;  // absolute position of storage index 0
    const Array& lp = left_padding;
    pos.kv_start = maximum(subtract(astype(lp, Dtype::i32), full(lp.shape(), static_cast<double>(first), Dtype::i32)),
                           zeros(lp.shape(), Dtype::i32));
    return fast::scaled_dot_product_attention(q, blocks, spec, pos);
  }

  nn::Linear q_proj, k_proj, v_proj, o_proj;
  nn::Rope rope;
  int64_t n_heads, n_kv_heads, head_dim;
  AttentionSpec spec;

 protected:
  void members(nn::Members& m) override {
    m.child("q_proj", q_proj).child("k_proj", k_proj).child("v_proj", v_proj).child("o_proj", o_proj);
  }
};

// GeGLU with biases on intermediate_size / 2 features.
struct MLPBlock : nn::Module {
  MLPBlock(int64_t width, int64_t expanded)
      : up_proj(width, expanded / 2, true),
        gate_proj(width, expanded / 2, true),
        down_proj(expanded / 2, width, true) {}
  Array operator()(const Array& x) const { return down_proj(multiply(gelu_approx(gate_proj(x)), up_proj(x))); }
  nn::Linear up_proj, gate_proj, down_proj;

 protected:
  void members(nn::Members& m) override {
    m.child("up_proj", up_proj).child("gate_proj", gate_proj).child("down_proj", down_proj);
  }
};

struct ResidualBlock : nn::Module {
  ResidualBlock(const ModelArgs& a, int64_t layer)
      : recurrent(a.is_recurrent(layer)),
        temporal_pre_norm(a.hidden_size, a.rms_norm_eps),
        channel_pre_norm(a.hidden_size, a.rms_norm_eps),
        mlp_block(a.hidden_size, a.intermediate_size) {
    if (recurrent)
      recurrent_block = std::make_unique<RecurrentBlock>(a);
    else
      attention_block = std::make_unique<LocalAttentionBlock>(a);
  }

  bool recurrent;
  RMSNorm temporal_pre_norm, channel_pre_norm;
  std::unique_ptr<RecurrentBlock> recurrent_block;       // weight key: temporal_block
  std::unique_ptr<LocalAttentionBlock> attention_block;  // weight key: temporal_block
  MLPBlock mlp_block;

 protected:
  void members(nn::Members& m) override {
    m.child("temporal_pre_norm", temporal_pre_norm);
    if (recurrent_block)
      m.child("temporal_block", *recurrent_block);
    else
      m.child("temporal_block", *attention_block);
    m.child("channel_pre_norm", channel_pre_norm).child("mlp_block", mlp_block);
  }
};

template <typename T>
T& layer_cache(Cache& cache, size_t i, const char* what) {
  auto* c = dynamic_cast<T*>(cache.layers.at(i).get());
  if (!c)
    throw ValueError(
        format_error("recurrent_gemma", "layer " + std::to_string(i) + " needs " + what +
                                            " in its cache slot (build the cache with the model's make_cache)"));
  return *c;
}

struct Griffin : nn::Module {
  explicit Griffin(const ModelArgs& a)
      : embed_tokens(a.vocab_size, a.hidden_size),
        final_norm(a.hidden_size, a.rms_norm_eps),
        embed_scale(a.embeddings_scale_by_sqrt_dim
                        ? bf16_to_float(float_to_bf16(std::sqrt(static_cast<float>(a.hidden_size))))
                        : 1.0) {
    for (int64_t i = 0; i < a.num_layers; ++i) layers.push_back(std::make_unique<ResidualBlock>(a, i));
  }

  // Final-normed hidden states [B, L', D] (L' = 1 when only_last). The residual stream is f32.
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
    if (cache.layers.size() != layers.size())
      throw ValueError(format_error("recurrent_gemma", "the cache has " + std::to_string(cache.layers.size()) +
                                                           " layers, the model " + std::to_string(layers.size())));
    int64_t B = tokens.shape(0), L = tokens.shape(1);
    Step step = make_step(cache, L);
    const Array& padding = step.scan_padding;
    // The RG-LRU restarts at each row's first real token: position offset + t == left_padding.
    Array reset;
    if (cache.left_padding.valid() || step.offset == 0) {
      Array pos = reshape(
          arange(static_cast<double>(step.offset), static_cast<double>(step.offset + L), 1.0, Dtype::i32), {1, L, 1});
      Array lp = cache.left_padding.valid() ? reshape(astype(cache.left_padding, Dtype::i32), {B, 1, 1})
                                            : zeros({1, 1, 1}, Dtype::i32);
      reset = equal(pos, lp);
    }
    Array x = embed_tokens(tokens, Dtype::f32) * embed_scale;
    auto to_compute = [dtype](const Array& a) { return astype(a, dtype); };
    Array normed = to_compute(layers[0]->temporal_pre_norm(x));
    for (size_t i = 0; i < layers.size(); ++i) {
      const ResidualBlock& blk = *layers[i];
      Array t =
          blk.recurrent
              ? (*blk.recurrent_block)(normed, layer_cache<ArraysCache>(cache, i, "an ArraysCache"), reset, padding)
              : (*blk.attention_block)(normed, layer_cache<KVCache>(cache, i, "a KVCache"), step, cache.left_padding);
      auto [normed2, h] = blk.channel_pre_norm.add_and_norm(t, x);
      Array mlp_out = blk.mlp_block(to_compute(normed2));
      if (i + 1 < layers.size()) {
        std::tie(normed, x) = layers[i + 1]->temporal_pre_norm.add_and_norm(mlp_out, h);
        normed = to_compute(normed);
      } else {
        if (only_last) {
          mlp_out = slice_axis(mlp_out, 1, L - 1, L);
          h = slice_axis(h, 1, L - 1, L);
        }
        normed = to_compute(final_norm.add_and_norm(mlp_out, h).first);
      }
    }
    return normed;
  }

  nn::Embedding embed_tokens;
  std::vector<std::unique_ptr<ResidualBlock>> layers;
  RMSNorm final_norm;
  // sqrt(hidden_size) rounded to bfloat16, as transformers' `normalizer` buffer holds it (2560 -> 50.5).
  // loom: mlx-lm multiplies by the exact sqrt.
  double embed_scale;

 protected:
  void members(nn::Members& m) override {
    m.child("embed_tokens", embed_tokens).children("layers", layers).child("final_norm", final_norm);
  }
};

class Model : public BodyLM<Griffin> {
 public:
  explicit Model(const ModelArgs& a) : BodyLM(a, a.hidden_size, a.vocab_size, a.tie_word_embeddings), args(a) {}

  Array forward(const Array& tokens, Cache& cache, LogitsMode mode) override {
    Array h = model(tokens, cache, mode != LogitsMode::all, dtype);
    if (mode == LogitsMode::none) return h;
    Array logits = head(h);
    if (args.logits_soft_cap > 0) {
      double c = args.logits_soft_cap;
      logits = tanh(logits * (1.0 / c)) * c;
    }
    return logits;
  }

  // mlx-lm's make_cache: ArraysCache(2) per recurrent block, RotatingKVCache(attention_window_size)
  // per attention block (the window is all attention ever reads, so the cache stays that size).
  Cache make_cache(const CacheOptions&) const override {
    Cache c;
    for (const auto& l : model.layers) {
      if (l->recurrent)
        c.layers.push_back(std::make_unique<ArraysCache>(2));
      else
        c.layers.push_back(std::make_unique<RotatingKVCache>(args.attention_window_size, 0));
    }
    return c;
  }

  // transformers stores conv_1d.weight [C, 1, K]; mlx-lm [C, K, 1] (the same bytes: a reshape is
  // mlx-lm's moveaxis). Tied checkpoints may still carry lm_head.weight.
  void sanitize(WeightMap& w) const override {
    for (auto& [k, v] : w)
      if (k.find("conv_1d.weight") != std::string::npos && v.ndim() == 3 && v.shape(1) == 1 && v.shape(2) != 1)
        v = reshape(contiguous(v), {v.shape(0), v.shape(2), 1});
    if (args.tie_word_embeddings) w.erase("lm_head.weight");
  }

  int num_layers() const override { return static_cast<int>(args.num_layers); }
  int64_t vocab_size() const override { return args.vocab_size; }

  ModelArgs args;
};

ModelRegistration registration() {
  return {"recurrent_gemma", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::recurrent_gemma
