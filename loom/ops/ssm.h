// Recurrent scans of the state-space and linear-attention models (mlx-lm: models/ssm.py,
// models/mamba.py, models/gated_delta.py, models/recurrent_gemma.py), each with a step-by-step twin
// in loom::fast::detail built from primitive ops (the test oracle).
//
// Shared conventions:
//  - Sequences are [B, L, ...] (batch, time first, as the models hold them).
//  - `state` may be an empty Array (= zeros). Every scan returns the outputs of all L positions and
//    the state after the last one; states are float32 whatever the input dtype (a bf16 model keeps
//    its recurrent state in f32), outputs take x's dtype.
//  - `left_padding` (optional int32 [B]): the first left_padding[b] positions of THIS call are
//    padding. They leave the state untouched and their outputs are 0, so a left-padded batch row
//    ends with exactly the state of its unpadded sequence. (Models pass max(0, cache padding -
//    offset); only the call that holds the padding sees non-zeros.)
//  - `chunk_size` > 0 selects the chunked (matmul) form where one exists; 0 = step by step. Both
//    forms give the same result within f32 rounding, at any L (also L not a multiple of the chunk).
#pragma once

#include "loom/core/array.h"
#include "loom/core/specs.h"

namespace loom::fast {

struct ScanResult {
  Array y;      // outputs, [B, L, ...]
  Array state;  // state after the last position (f32)
};

// Causal depthwise conv1d over time with carried state (Mamba, Mamba-2, Jamba, Qwen3-Next,
// RecurrentGemma): with xp = concat(state, x) along time ([B, K-1+L, C]),
//   y[b, t, c] = bias[c] + sum_k weight[c, k] * xp[b, t + k, c]
// x [B, L, C]; weight [C, K] (mlx-lm's Conv1d weight [C, K, 1] reshaped); bias [C] or empty; state
// [B, K-1, C] or empty. The returned state is the last K-1 rows of xp (in x's dtype for this op).
// Padding positions are skipped, as everywhere: a padded row computes as if its sequence began at
// its first real position (right after `state`), so they never reach the state or a later output.
// (With a zero initial state this equals mlx-lm's zeroing of the padded inputs.)
ScanResult causal_conv1d(const Array& x, const Array& weight, const Array& bias, const Array& state,
                         const Array& left_padding = {}, StreamOrDevice s = {});

// Mamba-1 selective scan (mlx-lm mamba.py ssm_step): per channel d and state index n,
//   h[t, d, n] = exp(dt[t, d] * A[d, n]) * h[t-1, d, n] + dt[t, d] * Bm[t, n] * x[t, d]
//   y[t, d]    = sum_n Cm[t, n] * h[t, d, n] + D[d] * x[t, d]
// x, dt [B, L, Di] (dt already softplus'ed); A [Di, N] (negative: -exp(A_log)); Bm, Cm [B, L, N];
// D [Di] or empty; state [B, Di, N].
ScanResult selective_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm,
                          const Array& D, const Array& state, const Array& left_padding = {},
                          StreamOrDevice s = {});

// Mamba-2 SSD scan (mlx-lm ssm.py ssm_update / ssm_attn) with grouped B/C: head h reads group
// g = h / (H / G),
//   h[t, h, p, n] = exp(dt[t, h] * A[h]) * h[t-1, h, p, n] + dt[t, h] * x[t, h, p] * Bm[t, g, n]
//   y[t, h, p]    = sum_n Cm[t, g, n] * h[t, h, p, n] + D[h] * x[t, h, p]
// x [B, L, H, P]; dt [B, L, H] (final step sizes: softplus(dt + dt_bias), clipped by the model);
// A [H] (negative); Bm, Cm [B, L, G, N]; D [H] or empty; state [B, H, P, N].
ScanResult ssd_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm,
                    const Array& D, const Array& state, const Array& left_padding = {}, int64_t chunk_size = 64,
                    StreamOrDevice s = {});

// Gated delta rule (Qwen3-Next; mlx-lm gated_delta.py), state S [B, Hv, Dv, Dk]; head h reads
// k-head h / (Hv / Hk):
//   S = S * g[t]                      (g [B, L, Hv]: one decay per head; or [B, L, Hv, Dk]: per channel,
//                                      applied along Dk)
//   delta = (v[t] - S k[t]) * beta[t]
//   S = S + delta ⊗ k[t]
//   y[t] = S q[t]
// q, k [B, L, Hk, Dk] (already normalised and scaled by the model); v [B, L, Hv, Dv]; g is the
// multiplicative decay in (0, 1] (exp of the model's log decay); beta [B, L, Hv]. y [B, L, Hv, Dv].
ScanResult gated_delta_rule(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta,
                            const Array& state, const Array& left_padding = {}, int64_t chunk_size = 64,
                            StreamOrDevice s = {});

// First-order linear recurrence (the core of RecurrentGemma's RG-LRU): h[t] = a[t] * h[t-1] + x[t],
// elementwise over a, x [B, L, D]; state [B, D]. y = every h [B, L, D].
ScanResult linear_scan(const Array& a, const Array& x, const Array& state, const Array& left_padding = {},
                       StreamOrDevice s = {});

namespace detail {
// Step-by-step twins from primitive ops (slicing, elementwise, matmul), one position at a time.
ScanResult causal_conv1d_reference(const Array& x, const Array& weight, const Array& bias, const Array& state,
                                   const Array& left_padding);
ScanResult selective_scan_reference(const Array& x, const Array& dt, const Array& A, const Array& Bm,
                                    const Array& Cm, const Array& D, const Array& state, const Array& left_padding);
ScanResult ssd_scan_reference(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm,
                              const Array& D, const Array& state, const Array& left_padding);
ScanResult gated_delta_rule_reference(const Array& q, const Array& k, const Array& v, const Array& g,
                                      const Array& beta, const Array& state, const Array& left_padding);
ScanResult linear_scan_reference(const Array& a, const Array& x, const Array& state, const Array& left_padding);
}  // namespace detail

}  // namespace loom::fast
