// Matmul building blocks that matmul.cu defines and other CUDA kernel files reuse (quantized.cu's
// large-M path, gather_mm.cu's decode path).
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "loom/core/array.h"

namespace loom::cuda::detail {

// The cuBLAS handle of a device, bound to its stream (created once, with a fixed workspace).
cublasHandle_t cublas_handle(Device d);
// Row-major f32 GEMM on the device's stream (cuBLAS, f32 compute, no TF32): c = op(a) @ op(b) + beta*c.
void sgemm_rowmajor(Device d, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const char* op);
// The same for a and b of one float dtype `ab` (f32/bf16/f16) and c of dtype `cdt`, f32 accumulation
// (tensor cores for bf16/f16).
void gemm_rowmajor(Device d, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
                   const void* b, int64_t ldb, Dtype ab, float beta, void* c, int64_t ldc, Dtype cdt, const char* op);
// gather_mm's decode GEMV: out [P, M, N] = a[lhs[p]] @ b[rhs[p]] for contiguous a [Ba, M, K] and b
// [Bb, K, N] with unit K stride (stacked expert weights [E, N, K] seen transposed). Returns false,
// doing nothing, when M > 8 or b's layout does not fit.
bool gemv_gather(const Array& a, const Array& b, const Array& lhs, const Array& rhs, Array& out);

}  // namespace loom::cuda::detail
