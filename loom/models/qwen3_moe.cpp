// Qwen3-MoE: the Qwen3 decoder (q/k RMSNorm) whose feed-forward is, on the sparse layers, a mixture
// of SwiGLU experts; softmax router over all experts, top-k, optionally renormalised
// (norm_topk_prob). mlx-lm: models/qwen3_moe.py. transformers: Qwen3MoeForCausalLM.
#include <algorithm>

#include "loom/common/strings.h"
#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"

namespace loom::models::qwen3_moe {

struct ModelArgs {
  DecoderArgs decoder;
  int64_t num_experts = 0, moe_intermediate_size = 0, decoder_sparse_step = 1;
  int num_experts_per_tok = 1;
  bool norm_topk_prob = false;
  std::vector<int64_t> mlp_only_layers;

  bool is_sparse(int64_t layer) const {
    return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) == mlp_only_layers.end() &&
           num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
  }
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.decoder = parse_decoder_args(c);
  a.decoder.qk_norm = true;
  a.decoder.rope_theta = c.get_float("rope_theta", 1000000.0);
  apply_qwen_sliding_window(a.decoder, c);
  // transformers 5 writes `num_local_experts`; older configs say `num_experts`.
  a.num_experts = c.get_int("num_experts", c.get_int("num_local_experts", 0));
  a.num_experts_per_tok = static_cast<int>(c.get_int("num_experts_per_tok"));
  a.moe_intermediate_size = c.get_int("moe_intermediate_size");
  a.decoder_sparse_step = c.get_int("decoder_sparse_step", 1);
  a.norm_topk_prob = c.get_bool("norm_topk_prob", false);
  if (c.has("mlp_only_layers")) a.mlp_only_layers = c.get_int_list("mlp_only_layers");
  return a;
}

nn::RouterSpec router_spec(const ModelArgs& a) {
  return {.top_k = a.num_experts_per_tok,
          .weights = a.norm_topk_prob ? nn::RouterWeights::renormalized : nn::RouterWeights::scores};
}

class Model : public DecoderLM {
 public:
  explicit Model(const ModelArgs& a)
      : DecoderLM(a.decoder,
                  [a](const DecoderArgs& d, int64_t layer) -> std::unique_ptr<FeedForward> {
                    if (a.is_sparse(layer)) return std::make_unique<SparseMoeBlock>(d.hidden_size, a.moe_intermediate_size, a.num_experts, router_spec(a));
                    return std::make_unique<DecoderMLP>(d.hidden_size, d.intermediate_size, false);
                  }),
        margs(a) {}

  // Accepts HF per-expert tensors, transformers-v5 fused tensors and mlx-lm's stacked switch_mlp.
  void sanitize(WeightMap& w) const override {
    DecoderLM::sanitize(w);
    for (int64_t l = 0; l < args.num_layers; ++l) {
      std::string p = "model.layers." + std::to_string(l) + ".mlp";
      if (margs.is_sparse(l))
        nn::sanitize_experts(w, p, margs.num_experts,
                             {{"gate_proj", "gate_proj"}, {"up_proj", "up_proj"}, {"down_proj", "down_proj"}});
    }
  }

  // mlx-lm qwen3_moe.py quant_predicate: the router gates (`mlp.gate`) stay at 8 bits.
  std::optional<QuantSpec> quant_predicate(const std::string& path, const nn::Quantizable& layer,
                                           const QuantSpec& base) const override {
    if (ends_with(path, "mlp.gate")) return nn::router_gate_quant_spec(layer.quant_axis_size());
    return base;
  }

  ModelArgs margs;
};

ModelRegistration registration() {
  return {"qwen3_moe", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::qwen3_moe
