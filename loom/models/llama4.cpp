// Llama 4 (llama4: the vision-language checkpoint, run on text; llama4_text: the text model alone).
// The Llama decoder with, per layer: RoPE on interleaved pairs (the complex layout) with llama3
// scaling, or no RoPE at all (NoPE layers, every no_rope_layer_interval-th by default) where the
// queries are scaled by the attention temperature 1 + attn_scale * log(1 + floor((pos + 1) / floor_scale));
// a weightless L2 (RMS) norm of q/k after RoPE on the RoPE layers (use_qk_norm); chunked local
// attention (attention_chunk_size) on the RoPE layers and global attention on the NoPE layers
// (layer_types); and a feed-forward that is either a dense SwiGLU MLP (intermediate_size_mlp) or,
// on the MoE layers (moe_layers / interleave_moe_layer_step), a top-1 sigmoid-routed mixture of
// SwiGLU experts plus an always-on shared expert. The router score multiplies the expert's INPUT,
// not its output (transformers' Llama4TextMoe: routed_in = x * score; mlx-lm: experts(x * scores)).
// mlx-lm: models/llama4.py. transformers: Llama4ForConditionalGeneration, Llama4ForCausalLM
// (modeling_llama4.py). Where they differ, transformers wins: mlx-lm fixes NoPE/chunked layers at
// every 4th layer and the q/k norm eps at 1e-6; here the config's no_rope_layers/layer_types and
// rms_norm_eps decide. (mlx-lm's separate llama4_text.py is a different, MoE-free model type.)
#include <algorithm>

#include "loom/common/error.h"
#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"

namespace loom::models::llama4 {

struct TextArgs {
  DecoderArgs decoder;
  int64_t num_local_experts = 16, intermediate_size_mlp = 16384;
  std::vector<bool> moe;  // per layer
};

namespace {

// attn_temperature_tuning is a bool in transformers' config and an int (4) in older files.
bool flag_or_int(const io::Config& c, const std::string& key, bool fallback) {
  if (!c.has(key)) return fallback;
  try {
    return c.get_bool(key, fallback);
  } catch (const ConfigError&) {
    return c.get_int(key) != 0;
  }
}

}  // namespace

TextArgs text_args(const io::Config& c) {
  TextArgs t;
  DecoderArgs& a = t.decoder;
  a = parse_decoder_args(c);
  const int64_t n = a.num_layers;
  a.rope_theta = c.get_float("rope_theta", 500000.0);  // Llama4TextConfig.default_theta
  a.rope_traditional = true;                           // complex rotation of adjacent pairs
  a.mlp_key = "feed_forward";
  a.sliding.assign(n, false);
  // no_rope_layers[i] == 1 means layer i USES RoPE (transformers' naming); empty or absent: every
  // no_rope_layer_interval-th layer is NoPE.
  std::vector<int64_t> rope_flags;
  if (c.has("no_rope_layers")) rope_flags = c.get_int_list("no_rope_layers");
  const int64_t interval = c.get_int("no_rope_layer_interval", 4);
  if (!rope_flags.empty() && static_cast<int64_t>(rope_flags.size()) < n)
    throw ConfigError(format_error("config", "no_rope_layers has " + std::to_string(rope_flags.size()) +
                                                 " entries for " + std::to_string(n) + " layers in " + c.source()));
  if (interval < 1) throw ConfigError(format_error("config", "no_rope_layer_interval must be >= 1 in " + c.source()));
  a.no_rope.assign(n, false);
  for (int64_t i = 0; i < n; ++i) a.no_rope[i] = rope_flags.empty() ? (i + 1) % interval == 0 : rope_flags[i] == 0;
  // Chunked local attention on the layers layer_types says (default: the RoPE layers); an explicit
  // null attention_chunk_size means none.
  const auto keys = c.keys();
  const bool chunk_null =
      !c.has("attention_chunk_size") && std::find(keys.begin(), keys.end(), "attention_chunk_size") != keys.end();
  a.attention_chunk_size = chunk_null ? 0 : c.get_int("attention_chunk_size", 8192);
  a.chunked.assign(n, false);
  std::vector<std::string> types;
  if (c.has("layer_types")) types = c.get_string_list("layer_types");  // length checked by parse_decoder_args
  for (int64_t i = 0; i < n; ++i) a.chunked[i] = types.empty() ? !a.no_rope[i] : types[i] == "chunked_attention";
  a.qk_l2_norm = c.get_bool("use_qk_norm", true);
  if (flag_or_int(c, "attn_temperature_tuning", true)) {
    a.query_temperature = a.no_rope;
    a.temperature = {.beta = c.get_float("attn_scale", 0.1), .floor_scale = c.get_int("floor_scale", 8192), .shift = 1};
    if (a.temperature.floor_scale < 1)
      throw ConfigError(format_error("config", "floor_scale must be >= 1 in " + c.source()));
  }
  t.num_local_experts = c.get_int("num_local_experts", 16);
  t.intermediate_size_mlp = c.get_int("intermediate_size_mlp", 16384);
  const int64_t top_k = c.get_int("num_experts_per_tok", 1);
  if (top_k != 1)
    throw NotSupportedError(format_error(
        "llama4", "num_experts_per_tok " + std::to_string(top_k) + ": only top-1 routing is supported (as mlx-lm)"));
  t.moe.assign(n, false);
  if (c.has("moe_layers")) {
    for (int64_t l : c.get_int_list("moe_layers"))
      if (l >= 0 && l < n) t.moe[l] = true;
  } else {
    const int64_t step = c.get_int("interleave_moe_layer_step", 1);
    for (int64_t i = 0; step > 0 && i < n; ++i) t.moe[i] = i % step == step - 1;
  }
  return t;
}

// The MoE feed-forward: top-1 expert chosen on the router logits (transformers' topk, mlx-lm's
// argpartition: selecting on the logits, not on their sigmoid, keeps ties of saturated scores
// apart), its input scaled by sigmoid(logit), plus the shared expert of the same width.
struct Llama4MoE : FeedForward {
  Llama4MoE(int64_t hidden, int64_t expert_hidden, int64_t num_experts)
      : experts(hidden, expert_hidden, num_experts),
        router(hidden, num_experts, false),
        shared_expert(hidden, expert_hidden, false) {}

  Array operator()(const Array& x) const override {
    Array logits = astype(router(x), Dtype::f32);
    Array idx = slice_axis(argpartition(negative(logits), 0, -1), -1, 0, 1);  // [..., 1]
    last_routing = idx;
    Array score = sigmoid(take_along_axis(logits, idx, -1));             // [..., 1]
    Array routed = experts(multiply(x, astype(score, x.dtype())), idx);  // [..., 1, D]
    return add(squeeze(routed, -2), shared_expert(x));
  }

  nn::SwitchGLU experts;
  nn::Linear router;
  DecoderMLP shared_expert;

 protected:
  void members(nn::Members& m) override {
    m.child("experts", experts).child("router", router).child("shared_expert", shared_expert);
  }
};

// transformers' fused experts -> the stacked SwitchGLU layout (views). Llama4TextExperts multiplies
// x @ gate_up_proj[e] with gate_up_proj [E, H, 2I] (gate columns first) and down_proj [E, I, H];
// SwitchLinear wants [E, out, in], so both are transposed. The [E, 2I, H] / [E, H, I] orientation
// (transformers-v5 MoE layout elsewhere) is accepted too; a square ambiguity reads as Llama 4's own.
void split_llama4_experts(WeightMap& w, const std::string& p, int64_t hidden, int64_t inter) {
  auto gu = w.find(p + ".gate_up_proj");
  if (gu != w.end()) {
    Array v = gu->second;
    if (v.ndim() != 3)
      throw ValueError(format_error("llama4", p + ".gate_up_proj must be [E, H, 2I], got " + shape_str(v.shape())));
    if (!(v.shape(1) == hidden && v.shape(2) == 2 * inter)) {
      if (v.shape(1) == 2 * inter && v.shape(2) == hidden)
        v = swapaxes(v, 1, 2);
      else
        throw ValueError(format_error("llama4", p + ".gate_up_proj " + shape_str(v.shape()) + " fits neither [E, " +
                                                    std::to_string(hidden) + ", " + std::to_string(2 * inter) +
                                                    "] nor its transpose"));
    }
    w[p + ".gate_proj.weight"] = swapaxes(slice_axis(v, 2, 0, inter), 1, 2);
    w[p + ".up_proj.weight"] = swapaxes(slice_axis(v, 2, inter, 2 * inter), 1, 2);
    w.erase(p + ".gate_up_proj");
  }
  auto dn = w.find(p + ".down_proj");
  if (dn != w.end()) {
    Array v = dn->second;
    if (v.ndim() != 3)
      throw ValueError(format_error("llama4", p + ".down_proj must be [E, I, H], got " + shape_str(v.shape())));
    if (!(v.shape(1) == inter && v.shape(2) == hidden)) {
      if (v.shape(1) == hidden && v.shape(2) == inter)
        v = swapaxes(v, 1, 2);
      else
        throw ValueError(format_error("llama4", p + ".down_proj " + shape_str(v.shape()) + " fits neither [E, " +
                                                    std::to_string(inter) + ", " + std::to_string(hidden) +
                                                    "] nor its transpose"));
    }
    w[p + ".down_proj.weight"] = swapaxes(v, 1, 2);
    w.erase(p + ".down_proj");
  }
}

// The text model: keys model.* and lm_head (transformers' Llama4ForCausalLM).
class TextModel : public DecoderLM {
 public:
  explicit TextModel(const TextArgs& t)
      : DecoderLM(t.decoder,
                  [t](const DecoderArgs& d, int64_t layer) -> std::unique_ptr<FeedForward> {
                    if (t.moe[layer])
                      return std::make_unique<Llama4MoE>(d.hidden_size, d.intermediate_size, t.num_local_experts);
                    return std::make_unique<DecoderMLP>(d.hidden_size, t.intermediate_size_mlp, false);
                  }),
        targs(t) {}

  // mlx-lm's make_cache: ChunkedKVCache on the chunked layers, KVCache elsewhere. As in mlx-lm (whose
  // make_prompt_cache defers to a model's make_cache), --max-kv-size does not apply.
  Cache make_cache(const CacheOptions&) const override {
    Cache c;
    for (int64_t i = 0; i < args.num_layers; ++i) {
      if (args.chunked[i] && args.attention_chunk_size > 0)
        c.layers.push_back(std::make_unique<ChunkedKVCache>(args.attention_chunk_size));
      else
        c.layers.push_back(std::make_unique<KVCache>());
    }
    return c;
  }

  // Accepts transformers' fused experts and mlx-lm's stacked ones.
  void sanitize(WeightMap& w) const override {
    DecoderLM::sanitize(w);
    for (int64_t l = 0; l < args.num_layers; ++l)
      if (targs.moe[l])
        split_llama4_experts(w, "model.layers." + std::to_string(l) + ".feed_forward.experts", args.hidden_size,
                             args.intermediate_size);
  }

  TextArgs targs;
};

ModelRegistration registration() {
  return {"llama4", {"llama4_text"}, [](const io::Config& c) -> std::unique_ptr<LanguageModel> {
            if (c.get_string("model_type") == "llama4_text" || !c.is_object("text_config"))
              return std::make_unique<TextModel>(text_args(c));
            // The vision-language checkpoint: the text model under language_model, the vision
            // tower and its projector dropped.
            return std::make_unique<VisionLanguageWrapper>(
                std::make_unique<TextModel>(text_args(c.sub("text_config"))),
                std::vector<std::string>{"vision_model", "multi_modal_projector"});
          }};
}

}  // namespace loom::models::llama4
