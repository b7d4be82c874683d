// Fused ops (loom::fast), each with a slow twin in loom::fast::detail composed of primitive ops:
// the portable fallback and the test oracle.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/specs.h"

namespace loom::fast {

// x * rsqrt(mean(x^2, -1) + eps) * weight (weight may be empty). f32 math, output in x's dtype.
Array rms_norm(const Array& x, const Array& weight, float eps, StreamOrDevice s = {});
// Residual add fused with the next norm: returns {rms_norm(x + residual), x + residual}. The sum has the
// promoted dtype of x and residual; the normed output has `out_dtype` when given (rounded once from the
// f32 result, as astype of the f32 output would), else the sum's dtype.
std::pair<Array, Array> add_rms_norm(const Array& x, const Array& residual, const Array& weight, float eps,
                                     std::optional<Dtype> out_dtype = std::nullopt, StreamOrDevice s = {});
// (x - mean) * rsqrt(var + eps) * weight + bias over the last axis (weight/bias may be empty).
Array layer_norm(const Array& x, const Array& weight, const Array& bias, float eps, StreamOrDevice s = {});
// Rotary embedding of x [..., L, D] at positions offset + l (see RopeSpec).
Array rope(const Array& x, const RopeSpec& spec, int64_t offset, StreamOrDevice s = {});
// Per-row offsets: x [B, ..., L, D], offsets int [B].
Array rope(const Array& x, const RopeSpec& spec, const Array& offsets, StreamOrDevice s = {});
// A decode step's RoPE fused with its KV-cache write: returns rope(q, spec, offsets) and writes rope(k, spec,
// offsets) and v into the caches k_cache / v_cache [B, Hkv, P, D] along axis 2 at position
// p = position[0] - base, read where the kernel runs, as assign_at does (nothing unless 0 <= p <= P - L).
// q [B, Hq, L, D], k/v [B, Hkv, L, D], all of the caches' dtype and device; offsets int [B]. The rotations
// equal fast::rope's bit for bit (so a step may take either path).
Array rope_kv_write(const Array& q, const Array& k, const Array& v, const RopeSpec& spec, const Array& offsets,
                    const Array& k_cache, const Array& v_cache, const Array& position, int64_t base,
                    StreamOrDevice s = {});
// silu(gate) * up.
Array swiglu(const Array& gate, const Array& up, StreamOrDevice s = {});

// Keys and values as blocks along the sequence axis (a paged KV cache), each [B, Hkv, P, D];
// the first `length` positions across the blocks are attended.
struct KVBlocks {
  std::vector<Array> keys;
  std::vector<Array> values;
  int64_t length = 0;
};

// softmax(q k^T * scale [+ mask]) v with q [B, Hq, L, D], k/v [B, Hkv, S, D] (Hq % Hkv == 0, GQA).
// The mode's mask is built inside the kernel; `mask` (optional) is additive float or bool
// (true = keep), broadcastable to [B, Hq, L, S].
Array scaled_dot_product_attention(const Array& q, const Array& k, const Array& v, const AttentionSpec& spec,
                                   const AttentionPositions& pos = {}, const Array& mask = {},
                                   StreamOrDevice s = {});
Array scaled_dot_product_attention(const Array& q, const KVBlocks& kv, const AttentionSpec& spec,
                                   const AttentionPositions& pos = {}, const Array& mask = {},
                                   StreamOrDevice s = {});

namespace detail {
// Twins built from primitive ops only.
Array rms_norm_reference(const Array& x, const Array& weight, float eps);
std::pair<Array, Array> add_rms_norm_reference(const Array& x, const Array& residual, const Array& weight, float eps);
Array layer_norm_reference(const Array& x, const Array& weight, const Array& bias, float eps);
Array rope_reference(const Array& x, const RopeSpec& spec, const Array& offsets_per_row);
// rope_kv_write as its unfused steps: fast::rope of q and k, then assign_at of the rotated keys and the values.
Array rope_kv_write_reference(const Array& q, const Array& k, const Array& v, const RopeSpec& spec,
                              const Array& offsets, const Array& k_cache, const Array& v_cache, const Array& position,
                              int64_t base);
Array swiglu_reference(const Array& gate, const Array& up);
Array scaled_dot_product_attention_reference(const Array& q, const Array& k, const Array& v, const AttentionSpec& spec,
                                             const AttentionPositions& pos, const Array& mask);
// The additive [B, 1, L, S] mask the attention kernel builds implicitly (0 or -inf), from ops.
Array attention_mask_reference(int64_t B, int64_t L, int64_t S, const AttentionSpec& spec, const AttentionPositions& pos);
}  // namespace detail

}  // namespace loom::fast
