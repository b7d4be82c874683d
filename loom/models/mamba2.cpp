// Mamba-2: pre-norm residual blocks whose mixer is the SSD layer. One in_proj gives [gate z (I),
// conv input (I + 2*G*N), dt (H)]; the causal depthwise conv runs over the whole conv input [x, B, C]
// (conv_dim = I + 2*G*N channels), then SiLU, and splits into x (H heads of P = head_dim), B and C
// (G groups of N; head h reads group h / (H / G)). dt = clip(softplus(dt + dt_bias), time_step_limit),
// A = -exp(A_log) per head, D per head. The scan output is gated and normalised by the gated RMSNorm
// (norm after the gate: rms_norm(y * silu(z)) * weight, over the whole I channels as transformers'
// MambaRMSNormGated and mlx-lm's do), then out_proj. mlx-lm: models/mamba2.py, models/ssm.py.
// transformers: Mamba2ForCausalLM (torch_forward, the chunked SSD in f32, is the oracle).
//
// Each layer's cache is an ArraysCache of [conv state [B, K-1, conv_dim], SSM state f32 [B, H, P, N]].
#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include "loom/common/error.h"
#include "loom/io/config.h"
#include "loom/models/model.h"
#include "loom/models/ssm_backbone.h"
#include "loom/nn/layers.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/ssm.h"

namespace loom::models::mamba2 {

struct ModelArgs {
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0, head_dim = 0, state_size = 0;
  int64_t n_groups = 1, conv_kernel = 4, chunk_size = 256;
  bool use_bias = false, use_conv_bias = true, tie_word_embeddings = false;
  float norm_eps = 1e-5f;  // layer_norm_epsilon: block norms, norm_f and the gated norm
  double dt_min = 0.0, dt_max = std::numeric_limits<double>::infinity();  // time_step_limit
  // Width of each mean square in the gated RMSNorm: the whole intermediate size (transformers 5,
  // mlx-lm). mamba_ssm's own Mamba2 normalises each of the n_groups groups separately.
  int64_t norm_group_size = 0;

  int64_t intermediate_size() const { return num_heads * head_dim; }
  int64_t conv_dim() const { return intermediate_size() + 2 * n_groups * state_size; }
};

ModelArgs model_args(const io::Config& c) {
  ModelArgs a;
  a.vocab_size = c.get_int("vocab_size");
  a.hidden_size = c.get_int("hidden_size");
  a.num_layers = c.get_int("num_hidden_layers");
  a.num_heads = c.get_int("num_heads");
  a.head_dim = c.get_int("head_dim");
  a.state_size = c.get_int("ssm_state_size", c.get_int("state_size"));
  a.n_groups = c.get_int("n_groups", 1);
  a.conv_kernel = c.get_int("conv_kernel", 4);
  a.chunk_size = c.get_int("chunk_size", 256);
  a.use_bias = c.get_bool("use_bias", false);
  a.use_conv_bias = c.get_bool("use_conv_bias", true);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", false);
  a.norm_eps = static_cast<float>(c.get_float("layer_norm_epsilon", 1e-5));
  if (c.has("time_step_limit")) {
    auto lim = c.get_float_list("time_step_limit");
    if (lim.size() != 2)
      throw ConfigError(format_error("config", "time_step_limit must hold two numbers in " + c.source()));
    a.dt_min = lim[0];
    a.dt_max = lim[1];
  }
  a.norm_group_size = a.intermediate_size();
  // transformers sizes the mixer by expand * hidden_size, mlx-lm by num_heads * head_dim: they must agree.
  if (c.has("expand") && c.get_int("expand") * a.hidden_size != a.intermediate_size())
    throw ConfigError(format_error("config", "expand * hidden_size (" +
                                                 std::to_string(c.get_int("expand") * a.hidden_size) +
                                                 ") differs from num_heads * head_dim (" +
                                                 std::to_string(a.intermediate_size()) + ") in " + c.source()));
  if (a.n_groups < 1 || a.num_heads % a.n_groups)
    throw ConfigError(format_error("config", "num_heads " + std::to_string(a.num_heads) +
                                                 " is not a multiple of n_groups " + std::to_string(a.n_groups) +
                                                 " in " + c.source()));
  return a;
}

// transformers' MambaRMSNormGated: rms_norm(y * silu(gate)) * weight, in f32, over groups of
// `group_size` channels.
struct RMSNormGated : nn::Module {
  RMSNormGated(int64_t dims, int64_t group_size, float eps) : dims(dims), group_size(group_size), eps(eps) {}
  Array operator()(const Array& y, const Array& gate) const {
    Array h = multiply(astype(y, Dtype::f32), silu(astype(gate, Dtype::f32)));
    if (group_size == dims) return fast::rms_norm(h, weight, eps);
    Shape grouped(h.shape().begin(), h.shape().end() - 1);
    grouped.insert(grouped.end(), {dims / group_size, group_size});
    Array n = reshape(fast::rms_norm(reshape(h, grouped), {}, eps), h.shape());
    return multiply(n, astype(weight, Dtype::f32));
  }
  Array weight;
  int64_t dims, group_size;
  float eps;

 protected:
  void members(nn::Members& m) override { m.param("weight", weight, {dims}); }
};

struct Mamba2Mixer : nn::Module {
  explicit Mamba2Mixer(const ModelArgs& a)
      : in_proj(a.hidden_size, a.intermediate_size() + a.conv_dim() + a.num_heads, a.use_bias),
        conv1d(a.conv_dim(), a.conv_kernel, a.use_conv_bias),
        norm(a.intermediate_size(), a.norm_group_size, a.norm_eps),
        out_proj(a.intermediate_size(), a.hidden_size, a.use_bias),
        args(a) {}

  // x [B, L, hidden] (compute dtype) -> [B, L, hidden]; updates and advances the layer's cache.
  Array operator()(const Array& x, ArraysCache& cache, const Array& left_padding) const {
    const int64_t B = x.shape(0), L = x.shape(1), I = args.intermediate_size(), C = args.conv_dim();
    const int64_t H = args.num_heads, P = args.head_dim, G = args.n_groups, N = args.state_size;
    Array proj = in_proj(x);
    Array gate = slice_axis(proj, -1, 0, I);
    fast::ScanResult conv = conv1d(slice_axis(proj, -1, I, I + C), on_device_of(cache[0], x), left_padding);
    Array xbc = astype(silu(conv.y), Dtype::f32);
    Array xs = reshape(slice_axis(xbc, -1, 0, I), {B, L, H, P});
    Array Bm = reshape(slice_axis(xbc, -1, I, I + G * N), {B, L, G, N});
    Array Cm = reshape(slice_axis(xbc, -1, I + G * N, C), {B, L, G, N});
    // dt = clip(softplus(dt + dt_bias), time_step_limit), in f32 (transformers' torch_forward).
    Array dt = softplus(astype(slice_axis(proj, -1, I + C, I + C + H), Dtype::f32) + astype(dt_bias, Dtype::f32));
    if (args.dt_min > 0) dt = maximum(dt, weak_scalar(args.dt_min, dt));
    if (std::isfinite(args.dt_max)) dt = minimum(dt, weak_scalar(args.dt_max, dt));
    Array A = negative(exp(astype(A_log, Dtype::f32)));
    fast::ScanResult scan = fast::ssd_scan(xs, dt, A, Bm, Cm, astype(D, Dtype::f32), on_device_of(cache[1], x),
                                           left_padding, args.chunk_size);
    cache[0] = conv.state;
    cache[1] = scan.state;
    cache.advance(L);
    Array y = norm(reshape(scan.y, {B, L, I}), gate);
    return out_proj(astype(y, x.dtype()));
  }

  nn::Linear in_proj;
  nn::DepthwiseConv1d conv1d;
  Array dt_bias, A_log, D;  // each [H]
  RMSNormGated norm;
  nn::Linear out_proj;
  ModelArgs args;

 protected:
  void members(nn::Members& m) override {
    m.child("in_proj", in_proj).child("conv1d", conv1d);
    m.param("dt_bias", dt_bias, {args.num_heads})
        .param("A_log", A_log, {args.num_heads})
        .param("D", D, {args.num_heads});
    m.child("norm", norm).child("out_proj", out_proj);
  }
};

struct ResidualBlock : nn::Module {
  explicit ResidualBlock(const ModelArgs& a) : mixer(a), norm(a.hidden_size, a.norm_eps) {}
  Mamba2Mixer mixer;
  nn::RMSNorm norm;

 protected:
  void members(nn::Members& m) override { m.child("mixer", mixer).child("norm", norm); }
};

using Model = SsmLM<ResidualBlock, ModelArgs>;

ModelRegistration registration() {
  return {"mamba2", {}, [](const io::Config& c) { return std::make_unique<Model>(model_args(c)); }};
}

}  // namespace loom::models::mamba2
