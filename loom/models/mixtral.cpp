// Mixtral: the Llama decoder whose feed-forward is a sparse mixture of SwiGLU experts; the router
// picks the top-k experts per token and weights them by a softmax over the selected logits.
// mlx-lm: models/mixtral.py. transformers: MixtralForCausalLM.
#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"

namespace loom::models::mixtral {

struct ModelArgs {
  DecoderArgs decoder;
  int64_t num_local_experts = 8;
  int num_experts_per_tok = 2;
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.decoder = parse_decoder_args(c);
  a.decoder.rope_theta = c.get_float("rope_theta", 1000000.0);
  a.decoder.mlp_key = "block_sparse_moe";
  // loom: transformers applies `sliding_window` (when set) to every layer; mlx-lm ignores it.
  if (a.decoder.sliding_window > 0 && !c.has("layer_types")) a.decoder.sliding.assign(a.decoder.num_layers, true);
  a.num_local_experts = c.get_int("num_local_experts", 8);
  a.num_experts_per_tok = static_cast<int>(c.get_int("num_experts_per_tok", 2));
  return a;
}


class Model : public DecoderLM {
 public:
  explicit Model(const ModelArgs& a)
      : DecoderLM(a.decoder, [a](const DecoderArgs& d, int64_t) {
                    return std::make_unique<SparseMoeBlock>(
                        d.hidden_size, d.intermediate_size, a.num_local_experts,
                        nn::RouterSpec{.top_k = a.num_experts_per_tok, .weights = nn::RouterWeights::softmax_of_selected});
                  }),
        num_experts(a.num_local_experts) {}

  // Accepts HF per-expert tensors (experts.{e}.w1/w2/w3), transformers-v5 fused tensors under
  // `mlp.` and mlx-lm's stacked switch_mlp.
  void sanitize(WeightMap& w) const override {
    DecoderLM::sanitize(w);
    WeightMap renamed;
    for (auto& [k, v] : w) {
      std::string key = k;
      if (auto p = key.find(".mlp."); p != std::string::npos) key.replace(p, 5, ".block_sparse_moe.");
      renamed.emplace(std::move(key), v);
    }
    w.swap(renamed);
    for (int64_t l = 0; l < args.num_layers; ++l) {
      std::string p = "model.layers." + std::to_string(l) + ".block_sparse_moe";
      nn::sanitize_experts(w, p, num_experts, {{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}});
    }
  }

  int64_t num_experts;
};

ModelRegistration registration() {
  return {"mixtral", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::mixtral
