// CPU kernels of the gather-family ops (loom/ops/gather.h). Inputs are validated and laid out by
// the op: see each declaration.
#pragma once

#include "loom/core/array.h"

namespace loom::cpu {

// out [P, M, N] (contiguous, f32/bf16/f16) = a[lhs[p]] @ b[rhs[p]] for p < P.
// a: contiguous [Ba, M, K]; b: [Bb, K, N] whose last two strides are (1, K') ("weight rows", a
// transposed view of [Bb, N, K]) or (N', 1) (row-major); lhs/rhs: contiguous int32 [P].
void gather_mm(const Array& a, const Array& b, const Array& lhs, const Array& rhs, Array& out);

// Row-wise over contiguous f32 in [rows, n] -> uint32 out [rows, n]: indices whose first kth+1
// entries are the kth+1 smallest values in ascending order (ties by index); kth = n-1 sorts fully.
void argpartition_last(const Array& in, int64_t kth, Array& out);

}  // namespace loom::cpu
