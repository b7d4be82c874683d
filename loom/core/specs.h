// Op kinds and spec structs shared by the ops layer and every backend (so a backend can implement a
// kernel without depending on loom/ops).
#pragma once

#include <cstdint>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/quant.h"

namespace loom {

enum class UnaryOp {
  negative, abs, exp, log, log1p, sqrt, rsqrt, square, sin, cos, tanh, sigmoid, erf,
  silu, gelu, gelu_approx, relu, softplus, logical_not, floor, ceil, round, sign, reciprocal,
};

enum class BinaryOp {
  add, subtract, multiply, divide, maximum, minimum, power,
  equal, not_equal, less, less_equal, greater, greater_equal, logical_and, logical_or,
};

enum class ReduceOp { sum, prod, max, min };
enum class ArgReduceOp { argmax, argmin };

// RoPE on the last axis of x [..., L, D]: the first `dims` features rotate, the rest pass through.
// Position of row l is offset + l (offset: an int, or per leading row b an entry of `offsets` [B]).
// `traditional` rotates adjacent pairs (2i, 2i+1); otherwise the halves (i, i + dims/2).
// theta_i = position * scale / freqs_i with freqs_i = base^(2i/dims), or the explicit `freqs` [dims/2].
struct RopeSpec {
  int dims = 0;
  bool traditional = false;
  float base = 10000.0f;
  float scale = 1.0f;
  Array freqs;  // optional [dims/2] (MLX semantics: periods, theta = pos * scale / freqs)
};

enum class AttentionMode {
  none,    // every key visible (mask may still be given)
  causal,  // key j visible to query at position p when j <= p
  window,  // causal and p - j < window
  chunk,   // causal and both in the same chunk of `chunk` positions (Llama 4 local attention)
};

// Attention knobs. Positions are in key-storage coordinates: query row i of batch row b sits at
// q_offset(b) + i; keys before kv_start(b) are padding and never visible.
struct AttentionSpec {
  float scale = 0.0f;  // 0 means 1/sqrt(head_dim)
  AttentionMode mode = AttentionMode::causal;
  int window = 0;
  int chunk = 0;
  float softcap = 0.0f;  // > 0: scores = softcap * tanh(scores / softcap)
  Array sinks;           // optional [Hq] per-head sink logits (join the softmax, add no value)
};

// Per-row positions for attention. Unset fields mean: q_offset = S - L for every row, kv_start = 0.
struct AttentionPositions {
  int64_t q_offset = -1;
  Array q_offsets;  // optional int32 [B]
  Array kv_start;   // optional int32 [B]
};

// One quantized matrix as the kernels take it (the operands of quantized_matmul: loom/ops/quantized.h).
struct QuantizedOperand {
  Array wq, scales, biases;  // biases: affine only
  QuantSpec spec;
  float global_scale = 0.0f;  // nvfp4's, 0 = none
};

}  // namespace loom
