// The int8 fast tier of quantized_matmul on the CPU (QmmPrecision::fast, loom/ops/quantized.h), for W
// transposed: MLX affine 4- and 8-bit weights at any number of rows, and for a single row (decode) also
// affine 2, 3, 5 and 6 bits, mxfp4 and nvfp4. Each activation row is quantized per block of 32
// consecutive values: d = max|x| / 127 and id = 1 / d (0 when d is 0), both f32, and q = the f32
// product x * id rounded to nearest-even (llama.cpp's Q8_0 activation quantizer). For 8-bit weights,
// whose products widen both sides to int16 anyway, d = max|x| / 32767 instead (int16 activations at no
// extra multiplies: ~250x less activation error; the fixtures' logits stay within 2e-4 of the exact
// tier, against 2-5% with int8; the CUDA tier keeps int8 there, see backend/cuda/quantized.cu). Then, per
// output,
//   y = sum_g [ scale_g * sum_{blocks b of g} d_b * (sum_{j in b} code_j * q_j)
//             + bias_g * sum_{blocks b of g} d_b * (sum_{j in b} q_j) ]
// with exact integer inner sums: y is the dot product of the dequantized w with the dequantized
// activations d * q, up to f32 rounding. So it differs from the exact tier by sum_j w_j (d q_j - x_j),
// at most sum over blocks of d_b / 2 * sum_{j in b} |w_j|. (The bias term uses the quantized x on
// purpose, as llama.cpp's Q8_1 sums do: with the f32 x there, the error would be sum_j (w_j - bias) *
// (d q_j - x_j), and |w - bias| = |scale * code| is about twice |w| for MLX's edge-anchored bias.)
// mxfp4 / nvfp4 take the same form: an E2M1 value v is (u - 12) / 2 with the integer u = 2v + 12, so
// code_j = u_j, scale_g = s_g / 2 and bias_g = -6 s_g (s_g the decoded E8M0, or E4M3 times nvfp4's
// global factor); with nvfp4's groups of 16, a group's blocks are the halves of 32-value blocks.
#pragma once

#include <cstdint>

#include "loom/core/array.h"
#include "loom/core/dtype.h"
#include "loom/core/quant.h"
#include "loom/ops/quantized.h"

namespace loom::cpu {

// Whether the fast tier computes x @ W.T with `rows` rows of x: W transposed; affine 4 or 8 bits (group
// size 32, 64 or 128, biases present) at any rows; affine 2, 3, 5, 6 bits, mxfp4 (group 32) and nvfp4
// (group 16) with one row.
bool qmm_int8_applies(const QuantSpec& spec, bool transpose, bool has_biases, int64_t rows);

// out [m, n] (f32, row-major) = x [m, k] (f32, row-major) @ W.T, W [n, k] packed as MLX does (wq: n
// rows of k * bits / 32 uint32 words), scales [n, k / group_size] in sdt (affine: f32, bf16, f16 with
// biases alike; fp modes: uint8, no biases); global_scale: nvfp4's (0 = none).
void qmm_int8(const float* x, int64_t m, int64_t k, const uint32_t* wq, const void* scales, const void* biases,
              Dtype sdt, int64_t n, const QuantSpec& spec, float global_scale, float* out);

// One W of a grouped call: as qmm_int8's arguments; out [m, n].
struct QmmInt8Operand {
  const uint32_t* wq;
  const void* scales;
  const void* biases;
  Dtype sdt;
  int64_t n;
  float* out;
  float global_scale = 0.0f;
};

// x @ W_i.T for `count` operands sharing k and spec: x is quantized once and every product's rows are one
// parallel pass (each output equals its qmm_int8 call bit for bit). With swiglu_out, the operands are gate
// and up of one n, their outs scratch, and swiglu_out [m, n] = silu_times(gate, up).
void qmm_int8_group(const float* x, int64_t m, int64_t k, const QuantSpec& spec, const QmmInt8Operand* ops,
                    size_t count, float* swiglu_out);

// One product of a batch: x [m, k] @ W.T into w.out [m, w.n].
struct QmmInt8Product {
  const float* x;
  int64_t m;
  QmmInt8Operand w;
};

// Independent products sharing k and spec (gather_qmm's experts) as one parallel pass; neighbours with
// the same x (pointer and m) share its quantization. Each output equals its qmm_int8 call bit for bit.
void qmm_int8_batch(int64_t k, const QuantSpec& spec, const QmmInt8Product* products, size_t count);

// Whether quantized_matmul's fast tier computes x @ W.T for these operands and `rows` rows of x: the
// fast tier is selected, qmm_int8_applies, and affine biases share the scales' dtype.
inline bool takes_int8(const Array& scales, const Array& biases, const QuantSpec& spec, bool transpose, int64_t rows) {
  return qmm_precision() == QmmPrecision::fast && qmm_int8_applies(spec, transpose, biases.valid(), rows) &&
         (!biases.valid() || scales.dtype() == biases.dtype());
}

}  // namespace loom::cpu
