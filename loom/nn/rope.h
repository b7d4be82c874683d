// RoPE variants as mlx-lm's rope_utils builds them (default, linear, dynamic NTK, llama3, yarn,
// longrope), each reduced to one fast::rope call with either a base or explicit freqs, plus the
// pre-rotation magnitude scale (mscale) that yarn and longrope apply. Where transformers and mlx-lm
// differ, transformers' semantics are used (noted at the variant).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/specs.h"

namespace loom::nn {

// The `rope_scaling` config block, with transformers' defaults.
struct RopeScaling {
  std::string type = "default";  // default | linear | dynamic | llama3 | yarn | longrope
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;  // 0 = not given
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  double attention_factor = 0.0;  // 0 = derive as transformers does
  std::vector<double> short_factor, long_factor;
};

class Rope {
 public:
  Rope() = default;
  Rope(int dims, double base, bool traditional, const RopeScaling& scaling, int64_t max_position_embeddings);

  // x [B, H, L, D] at positions offset + l.
  Array operator()(const Array& x, int64_t offset) const;
  // Per-row offsets [B] (left-padded batches).
  // `total_len` (the positions the longest row spans after this step) matters only to the scalings
  // that depend on the sequence length (longrope, dynamic); when not given they read the offsets back
  // from the device. A captured decode step passes it (no readback may happen while recording).
  Array operator()(const Array& x, const Array& offsets, std::optional<int64_t> total_len = std::nullopt) const;

  int dims() const { return dims_; }
  // Magnitude scale applied to the rotated features before rotation (yarn/longrope attention factor).
  float mscale() const { return mscale_; }
  // The RopeSpec fast::rope receives when the sequence ends at `total_len` positions.
  RopeSpec spec_for(int64_t total_len) const;
  // Effective inverse frequencies (theta_i = position * inv_freq_i) at `total_len`.
  std::vector<double> inv_freq(int64_t total_len) const;
  // Explicit periods (1 / inverse frequency) used for positions that end before `total_len`.
  Array freqs_for(int64_t total_len) const;

 private:
  Array apply(const Array& x, int64_t offset, const Array* offsets, int64_t total_len) const;
  int dims_ = 0;
  double base_ = 10000.0;
  bool traditional_ = false;
  RopeScaling scaling_;
  int64_t max_pos_ = 0;
  float scale_ = 1.0f;
  float mscale_ = 1.0f;
  Array freqs_, short_freqs_;  // explicit periods where the variant has them
};

}  // namespace loom::nn
