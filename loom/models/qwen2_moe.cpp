// Qwen2-MoE: the Qwen2 decoder (q/k/v biases) whose feed-forward is a mixture of SwiGLU experts plus
// a shared expert scaled by a sigmoid gate. Softmax router over all experts, top-k, renormalised
// only when norm_topk_prob. mlx-lm: models/qwen2_moe.py. transformers: Qwen2MoeForCausalLM.
#include <algorithm>

#include "loom/io/config.h"
#include "loom/models/transformer.h"
#include "loom/nn/moe_router.h"
#include "loom/nn/switch_layers.h"

namespace loom::models::qwen2_moe {

struct ModelArgs {
  DecoderArgs decoder;
  int64_t num_experts = 0, moe_intermediate_size = 0, shared_expert_intermediate_size = 0, decoder_sparse_step = 1;
  int num_experts_per_tok = 1;
  bool norm_topk_prob = false;
  std::vector<int64_t> mlp_only_layers;

  // loom: transformers honours decoder_sparse_step / mlp_only_layers; mlx-lm makes every layer sparse.
  bool is_sparse(int64_t layer) const {
    return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) == mlp_only_layers.end() &&
           num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
  }
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.decoder = parse_decoder_args(c);
  a.decoder.qkv_bias = c.get_bool("qkv_bias", true);
  a.decoder.o_bias = false;
  a.decoder.rope_theta = c.get_float("rope_theta", 1000000.0);
  apply_qwen_sliding_window(a.decoder, c);
  a.num_experts = c.get_int("num_experts", c.get_int("num_local_experts", 0));
  a.num_experts_per_tok = static_cast<int>(c.get_int("num_experts_per_tok"));
  a.moe_intermediate_size = c.get_int("moe_intermediate_size");
  a.shared_expert_intermediate_size = c.get_int("shared_expert_intermediate_size");
  a.decoder_sparse_step = c.get_int("decoder_sparse_step", 1);
  // loom: transformers renormalises when norm_topk_prob (default false); mlx-lm never does.
  a.norm_topk_prob = c.get_bool("norm_topk_prob", false);
  if (c.has("mlp_only_layers")) a.mlp_only_layers = c.get_int_list("mlp_only_layers");
  return a;
}

// The shared sparse block plus an always-on shared expert behind a sigmoid gate.
struct Qwen2MoeSparseMoeBlock : SparseMoeBlock {
  explicit Qwen2MoeSparseMoeBlock(const ModelArgs& a)
      : SparseMoeBlock(a.decoder.hidden_size, a.moe_intermediate_size, a.num_experts,
                       {.top_k = a.num_experts_per_tok,
                        .weights = a.norm_topk_prob ? nn::RouterWeights::renormalized : nn::RouterWeights::scores}),
        shared_expert(a.decoder.hidden_size, a.shared_expert_intermediate_size, false),
        shared_expert_gate(a.decoder.hidden_size, 1, false) {}

  Array operator()(const Array& x) const override {
    return add(SparseMoeBlock::operator()(x), nn::sigmoid_gated(shared_expert_gate, x, shared_expert(x)));
  }

  DecoderMLP shared_expert;
  nn::Linear shared_expert_gate;

 protected:
  void members(nn::Members& m) override {
    SparseMoeBlock::members(m);
    m.child("shared_expert", shared_expert).child("shared_expert_gate", shared_expert_gate);
  }
};

class Model : public DecoderLM {
 public:
  explicit Model(const ModelArgs& a)
      : DecoderLM(a.decoder,
                  [a](const DecoderArgs& d, int64_t layer) -> std::unique_ptr<FeedForward> {
                    if (a.is_sparse(layer)) return std::make_unique<Qwen2MoeSparseMoeBlock>(a);
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

  ModelArgs margs;
};

ModelRegistration registration() {
  return {"qwen2_moe", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::qwen2_moe
