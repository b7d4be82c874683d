// CPU kernels. Called by loom/ops after validation and output allocation: inputs are on the CPU and
// have the shapes and dtypes the op promised; kernels only compute. backend/cuda mirrors this file.
#pragma once

#include <vector>

#include "loom/core/array.h"
#include "loom/core/specs.h"

namespace loom::cpu {

// out (contiguous) <- in (any strides, broadcast strides allowed), converting dtype.
void copy(const Array& in, Array& out);
// out (any strides) <- in (same shape), converting dtype. Used for slice updates and concatenation.
void copy_into(const Array& in, Array& out);
void fill(Array& out, double value);
void arange(Array& out, double start, double step);

// Elementwise; inputs already broadcast to out's shape (zero strides), out contiguous.
void unary(UnaryOp op, const Array& in, Array& out);
void binary(BinaryOp op, const Array& a, const Array& b, Array& out);
void where(const Array& cond, const Array& a, const Array& b, Array& out);

// Reductions over the last axis of a contiguous input [rows, n] into out [rows].
void reduce_last(ReduceOp op, const Array& in, Array& out);
void arg_reduce_last(ArgReduceOp op, const Array& in, Array& out);
// Softmax / logsumexp over the last axis (f32 accumulation), contiguous in and out.
void softmax_last(const Array& in, Array& out);
void logsumexp_last(const Array& in, Array& out);

// out[..., i, :] = a[..., i, :] @ b; a [.., M, K], b [.., K, N] (b may be a transposed view),
// batch dims already broadcast; out contiguous [.., M, N].
void matmul(const Array& a, const Array& b, Array& out);

// Gathers rows: out [n_idx..., inner] from table [rows, inner] (contiguous) and indices.
void take_rows(const Array& table, const Array& indices, Array& out);

void rms_norm(const Array& x, const Array& weight, float eps, Array& out);
// sum = x + residual; out = rms_norm(sum)
void add_rms_norm(const Array& x, const Array& residual, const Array& weight, float eps, Array& out, Array& sum);
void layer_norm(const Array& x, const Array& weight, const Array& bias, float eps, Array& out);
void rope(const Array& x, const RopeSpec& spec, int64_t offset, const Array& offsets, Array& out);
void swiglu(const Array& gate, const Array& up, Array& out);

// q [B, Hq, L, D]; keys/values given as blocks along the sequence axis, each [B, Hkv, P_i, D(v)],
// of which the first `kv_len` positions in total are used; out [B, Hq, L, Dv].
void attention(const Array& q, const std::vector<Array>& k_blocks, const std::vector<Array>& v_blocks,
               int64_t kv_len, const AttentionSpec& spec, const AttentionPositions& pos,
               const Array& mask, Array& out);

}  // namespace loom::cpu
