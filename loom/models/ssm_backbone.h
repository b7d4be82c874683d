// The model shell shared by the pure state-space architectures (mamba, falcon_mamba, mamba2): a
// `backbone` of pre-norm residual blocks around a recurrent mixer, a final `norm_f`, and an untied
// `lm_head` or the tied `embeddings`; one ArraysCache (conv state, SSM state) per layer. A model file
// supplies its ModelArgs (vocab_size, hidden_size, num_layers, norm_eps, tie_word_embeddings) and its
// block (members `mixer` — mixer(x, ArraysCache&, left_padding) -> [B, L, hidden] — and `norm`).
#pragma once

#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "loom/models/model.h"
#include "loom/nn/layers.h"
#include "loom/ops/ops.h"

namespace loom::models {

// Transformers' [C, 1, K] depthwise conv weights whose key contains `name` become mlx-lm's
// [C, K, 1] (the same bytes: a reshape); mlx checkpoints, already [C, K, 1], are told apart by their
// last axis of 1 (mlx-lm's rule).
void sanitize_conv1d_weights(WeightMap& w, const std::string& name = "conv1d.weight");

// A recurrent state on the device `x` computes on (a prompt-cache file may hold it elsewhere).
Array on_device_of(const Array& state, const Array& x);

// The end of a Mamba-1 mixer (mamba, falcon_mamba, jamba), as transformers computes it: delta =
// softplus(dt_proj(dt)) and A = -exp(A_log) in f32, the selective scan in f32 from the layer's scan
// state (cache[1]), the conv and scan states stored (cache[0] = conv_state) and the cache advanced by
// x's length, then out_proj(silu(z) * y) with y in x's dtype.
Array mamba1_scan_output(const nn::Linear& dt_proj, const nn::Linear& out_proj, const Array& A_log, const Array& D,
                         const Array& u, const Array& dt, const Array& Bm, const Array& Cm, const Array& z,
                         const Array& conv_state, ArraysCache& cache, const Array& left_padding, const Array& x);

template <typename Block, typename Args>
struct SsmBackbone : nn::Module {
  explicit SsmBackbone(const Args& a) : embeddings(a.vocab_size, a.hidden_size), norm_f(a.hidden_size, a.norm_eps) {
    for (int64_t i = 0; i < a.num_layers; ++i) layers.push_back(std::make_unique<Block>(a));
  }

  // Final-normed hidden states [B, L', hidden] (L' = 1 when only_last), in `dtype`. As DecoderBody:
  // the residual stream stays f32; the normed activations are in `dtype`.
  Array operator()(const Array& tokens, Cache& cache, bool only_last, Dtype dtype) const {
    const Array pad = make_step(cache, tokens.shape(1)).scan_padding;
    Array x = embeddings(tokens, Dtype::f32);
    Array normed = astype(layers[0]->norm(x), dtype);
    for (size_t i = 0; i < layers.size(); ++i) {
      Array out = layers[i]->mixer(normed, cache.at<ArraysCache>(i), pad);
      if (i + 1 < layers.size()) {
        std::tie(normed, x) = layers[i + 1]->norm.add_and_norm(out, x);
        normed = astype(normed, dtype);
      } else {
        if (only_last) {
          int64_t L = out.shape(1);
          out = slice_axis(out, 1, L - 1, L);
          x = slice_axis(x, 1, L - 1, L);
        }
        normed = astype(norm_f.add_and_norm(out, x).first, dtype);
      }
    }
    return normed;
  }

  nn::Embedding embeddings;
  std::vector<std::unique_ptr<Block>> layers;
  nn::RMSNorm norm_f;

 protected:
  void members(nn::Members& m) override {
    m.child("embeddings", embeddings).children("layers", layers).child("norm_f", norm_f);
  }
};

template <typename Block, typename Args>
class SsmLM : public LanguageModel {
 public:
  explicit SsmLM(Args a) : args(std::move(a)), backbone(args) {
    if (!args.tie_word_embeddings) lm_head = std::make_unique<nn::Linear>(args.hidden_size, args.vocab_size, false);
  }

  Array forward(const Array& tokens, Cache& cache, LogitsMode mode) override {
    Array h = backbone(tokens, cache, mode != LogitsMode::all, dtype);
    if (mode == LogitsMode::none) return h;
    return lm_head ? (*lm_head)(h) : backbone.embeddings.as_linear(h);
  }

  void sanitize(WeightMap& w) const override {
    sanitize_conv1d_weights(w);
    if (args.tie_word_embeddings) w.erase("lm_head.weight");
  }

  // One ArraysCache (conv state, SSM state) per layer. As mlx-lm's make_cache, the options' KV size
  // bound does not apply: the recurrent state has a fixed size whatever the sequence length.
  Cache make_cache(const CacheOptions&) const override {
    return make_hybrid_cache(std::vector<bool>(static_cast<size_t>(args.num_layers), true), 2, CacheOptions{});
  }
  using LanguageModel::make_cache;

  int num_layers() const override { return static_cast<int>(args.num_layers); }
  int64_t vocab_size() const override { return args.vocab_size; }

  Args args;
  SsmBackbone<Block, Args> backbone;
  std::unique_ptr<nn::Linear> lm_head;

 protected:
  void members(nn::Members& m) override {
    m.child("backbone", backbone);
    if (lm_head) m.child("lm_head", *lm_head);
  }
};

}  // namespace loom::models
