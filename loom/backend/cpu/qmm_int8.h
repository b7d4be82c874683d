// The int8 fast tier of quantized_matmul on the CPU (QmmPrecision::fast, loom/ops/quantized.h), for MLX
// affine 4- and 8-bit weights with W transposed. Each activation row is quantized per block of 32
// consecutive values: d = max|x| / 127 and id = 1 / d (0 when d is 0), both f32, and q = the f32
// product x * id rounded to nearest-even (llama.cpp's Q8_0 activation quantizer). Then, per output,
//   y = sum_g [ scale_g * sum_{blocks b of g} d_b * (sum_{j in b} code_j * q_j)
//             + bias_g * sum_{blocks b of g} d_b * (sum_{j in b} q_j) ]
// with exact integer inner sums: y is the dot product of the dequantized w with the dequantized
// activations d * q, up to f32 rounding. So it differs from the exact tier by sum_j w_j (d q_j - x_j),
// at most sum over blocks of d_b / 2 * sum_{j in b} |w_j|. (The bias term uses the quantized x on
// purpose, as llama.cpp's Q8_1 sums do: with the f32 x there, the error would be sum_j (w_j - bias) *
// (d q_j - x_j), and |w - bias| = |scale * code| is about twice |w| for MLX's edge-anchored bias.)
#pragma once

#include <cstdint>

#include "loom/core/dtype.h"
#include "loom/core/quant.h"

namespace loom::cpu {

// Whether the fast tier computes this call: affine 4 or 8 bits, W transposed, biases present.
bool qmm_int8_applies(const QuantSpec& spec, bool transpose, bool has_biases);

// out [m, n] (f32, row-major) = x [m, k] (f32, row-major) @ W.T, W [n, k] packed as MLX does (wq: n
// rows of k * bits / 32 uint32 words), scales and biases [n, k / group_size] in sdt (f32, bf16, f16).
void qmm_int8(const float* x, int64_t m, int64_t k, const uint32_t* wq, const void* scales, const void* biases,
              Dtype sdt, int64_t n, const QuantSpec& spec, float* out);

// One W of a grouped call: as qmm_int8's arguments; out [m, n].
struct QmmInt8Operand {
  const uint32_t* wq;
  const void* scales;
  const void* biases;
  Dtype sdt;
  int64_t n;
  float* out;
};

// x @ W_i.T for `count` operands sharing k and spec: x is quantized once and every product's rows are one
// parallel pass (each output equals its qmm_int8 call bit for bit). With swiglu_out, the operands are gate
// and up of one n, their outs scratch, and swiglu_out [m, n] = silu_times(gate, up).
void qmm_int8_group(const float* x, int64_t m, int64_t k, const QuantSpec& spec, const QmmInt8Operand* ops,
                    size_t count, float* swiglu_out);

}  // namespace loom::cpu
