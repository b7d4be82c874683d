// Mamba (Mamba-1) and Falcon-Mamba: a stack of pre-norm residual blocks whose mixer is a selective
// state-space layer (in_proj -> causal depthwise conv -> SiLU -> input-dependent dt/B/C -> selective
// scan -> SiLU(z) gate -> out_proj); no attention, no positions. Falcon-Mamba is the same model with
// weightless RMSNorms of dt, B and C (mixer_rms_eps) before they are used. mlx-lm: models/mamba.py
// (falcon_mamba reaches it through MODEL_REMAPPING and sets use_bcdt_rms). transformers:
// MambaForCausalLM, FalconMambaForCausalLM (the sequential "slow" path is the oracle).
//
// Each layer's cache is an ArraysCache of [conv state [B, K-1, Di], SSM state f32 [B, Di, N]].
#include <cmath>
#include <initializer_list>
#include <string>

#include "loom/common/error.h"
#include "loom/io/config.h"
#include "loom/models/model.h"
#include "loom/models/ssm_backbone.h"
#include "loom/nn/layers.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/ssm.h"

namespace loom::models::mamba {

struct ModelArgs {
  std::string model_type;
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, state_size = 0, num_layers = 0;
  int64_t conv_kernel = 4, time_step_rank = 0;
  bool use_bias = false, use_conv_bias = true, tie_word_embeddings = true;
  bool use_bcdt_rms = false;  // falcon_mamba: weightless RMSNorm of dt, B and C
  float mixer_rms_eps = 1e-6f;
  float norm_eps = 1e-5f;  // layer_norm_epsilon (the block norms and norm_f)
};

// The first of `keys` the config has (mlx-lm's ModelArgs accepts the original mamba_ssm names too).
int64_t int_of(const io::Config& c, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (c.has(k)) return c.get_int(k);
  throw ConfigError(format_error("config", std::string("missing '") + *keys.begin() + "' in " + c.source()));
}

bool bool_of(const io::Config& c, std::initializer_list<const char*> keys, bool fallback) {
  for (const char* k : keys)
    if (c.has(k)) return c.get_bool(k, fallback);
  return fallback;
}

// time_step_rank: an integer or "auto" (= ceil(hidden_size / 16)).
int64_t time_step_rank(const io::Config& c, const std::string& key, int64_t hidden) {
  if (!c.has(key)) return (hidden + 15) / 16;
  try {
    return c.get_int(key);
  } catch (const ConfigError&) {
    if (c.get_string(key) == "auto") return (hidden + 15) / 16;
    throw;
  }
}

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.model_type = c.get_string("model_type");
  a.vocab_size = c.get_int("vocab_size");
  a.hidden_size = int_of(c, {"hidden_size", "d_model"});
  a.num_layers = int_of(c, {"num_hidden_layers", "n_layer", "n_layers"});
  a.intermediate_size = c.has("intermediate_size") || c.has("d_inner") ? int_of(c, {"intermediate_size", "d_inner"})
                                                                       : c.get_int("expand", 2) * a.hidden_size;
  a.state_size = int_of(c, {"state_size", "d_state"});
  a.conv_kernel = int_of(c, {"conv_kernel", "d_conv"});
  a.use_bias = bool_of(c, {"use_bias", "bias"}, false);
  a.use_conv_bias = bool_of(c, {"use_conv_bias", "conv_bias"}, true);
  a.time_step_rank = time_step_rank(c, "time_step_rank", a.hidden_size);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", true);
  a.use_bcdt_rms = a.model_type == "falcon_mamba" || c.get_bool("use_bcdt_rms", false);
  a.mixer_rms_eps = static_cast<float>(c.get_float("mixer_rms_eps", 1e-6));
  a.norm_eps = static_cast<float>(c.get_float("layer_norm_epsilon", 1e-5));
  return a;
}

struct MambaMixer : nn::Module {
  explicit MambaMixer(const ModelArgs& a)
      : in_proj(a.hidden_size, 2 * a.intermediate_size, a.use_bias),
        conv1d(a.intermediate_size, a.conv_kernel, a.use_conv_bias),
        x_proj(a.intermediate_size, a.time_step_rank + 2 * a.state_size, false),
        dt_proj(a.time_step_rank, a.intermediate_size, true),
        out_proj(a.intermediate_size, a.hidden_size, a.use_bias),
        args(a) {}

  // x [B, L, hidden] (compute dtype) -> [B, L, hidden]; updates and advances the layer's cache.
  Array operator()(const Array& x, ArraysCache& cache, const Array& left_padding) const {
    const int64_t Di = args.intermediate_size, R = args.time_step_rank, N = args.state_size;
    Array xz = in_proj(x);
    Array z = slice_axis(xz, -1, Di, 2 * Di);
    fast::ScanResult conv = conv1d(slice_axis(xz, -1, 0, Di), on_device_of(cache[0], x), left_padding);
    Array u = silu(conv.y);
    Array dbc = x_proj(u);
    Array dt = slice_axis(dbc, -1, 0, R), Bm = slice_axis(dbc, -1, R, R + N),
          Cm = slice_axis(dbc, -1, R + N, R + 2 * N);
    if (args.use_bcdt_rms) {
      dt = fast::rms_norm(dt, {}, args.mixer_rms_eps);
      Bm = fast::rms_norm(Bm, {}, args.mixer_rms_eps);
      Cm = fast::rms_norm(Cm, {}, args.mixer_rms_eps);
    }
    // The scan runs in f32 (dt, A and the state as transformers keeps them); y returns in x's dtype.
    return mamba1_scan_output(dt_proj, out_proj, A_log, D, u, dt, Bm, Cm, z, conv.state, cache, left_padding, x);
  }

  nn::Linear in_proj;
  nn::DepthwiseConv1d conv1d;
  nn::Linear x_proj, dt_proj, out_proj;
  Array A_log, D;  // [Di, N], [Di]
  ModelArgs args;

 protected:
  void members(nn::Members& m) override {
    m.child("in_proj", in_proj).child("conv1d", conv1d).child("x_proj", x_proj).child("dt_proj", dt_proj);
    m.param("A_log", A_log, {args.intermediate_size, args.state_size}).param("D", D, {args.intermediate_size});
    m.child("out_proj", out_proj);
  }
};

struct ResidualBlock : nn::Module {
  explicit ResidualBlock(const ModelArgs& a) : mixer(a), norm(a.hidden_size, a.norm_eps) {}
  MambaMixer mixer;
  nn::RMSNorm norm;

 protected:
  void members(nn::Members& m) override { m.child("mixer", mixer).child("norm", norm); }
};

using Model = SsmLM<ResidualBlock, ModelArgs>;

ModelRegistration registration() {
  return {"mamba", {"falcon_mamba"}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::mamba
