// Tensor-core fragments shared by the CUDA kernels (attention.cu, quantized.cu).
//
// Fragment layouts of mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16} (PTX ISA, "Matrix Fragments
// for mma.m16n8k16 with floating point type"), with g = lane >> 2 (groupID), q = lane & 3
// (threadID_in_group); each 32-bit register holds two 16-bit elements, the lower index in the low half:
//   A (16 x 16, row-major): a0,a1 = (g, 2q..2q+1)  a2,a3 = (g+8, 2q..)  a4,a5 = (g, 2q+8..)  a6,a7 = (g+8, 2q+8..)
//   B (16 x 8, k x n):      b0,b1 = (k 2q..2q+1, n g)  b2,b3 = (k 2q+8.., n g)
//   C (16 x 8, f32):        c0,c1 = (g, 2q..2q+1)  c2,c3 = (g+8, 2q..2q+1)
// ldmatrix.m8n8.x4.b16: lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i (16 bytes each);
// register i of lane l receives matrix i's row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1; with
// .trans it receives column l / 4, rows 2 (l % 4) and 2 (l % 4) + 1 instead.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace loom::cuda {

// c += A B for one 16 x 8 x 16 step (layouts above; T = __nv_bfloat16 or __half).
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

}  // namespace loom::cuda
