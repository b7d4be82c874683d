// Int8 activations for the fast tier's decode GEMV (qgemv_i8_kernel in quantized.cu), written by the
// kernel that produces the activations instead of by a quantize_x_kernel launch of their own.
//
// A decode step of a quantized model quantizes four activation rows per layer (before q/k/v, o_proj,
// gate/up and down_proj). Each quantize_x_kernel launch is short but sits on the step's critical path
// (launch, dependency wait, tail): measured by skipping them, 5-13% of tg on an H100. add_rms_norm, which
// produces the rows before q/k/v and gate/up, holds 32 consecutive outputs of a row in each warp (one
// activation block per slot of its lanes): with a decode's few rows it also stores their codes and {d, d
// * sum q}, bit for bit what quantize_x_kernel would store for that output. Measured on an H100 (tg128
// t/s, quantize_x_kernel for every row vs these two rows from the norm): Llama-3.2-1B-shaped 4-bit 1301 ->
// 1348, Llama-3.1-8B-shaped 4-bit 372 -> 377, 8-bit 258 -> 261. (Also built, tested and dropped: decode
// attention storing o_proj's codes in its epilogues, one block per warp of 32 consecutive outputs. With
// the norm's: 1B 4-bit 1366, but 8B 4-bit 374 and 8-bit 256; alone, 8B 8-bit 251 vs 258 without.)
//
// The handoff (act_int8.h, host side): the producer asks offer(out) for code buffers; offer gives some
// only once a fast-tier product has asked for codes (want/find record the layout it takes: 4-bit weights
// read each 8-value chunk in nibble order) and registers them under out's buffer, offset and size. The
// consumer asks find(x): codes registered for exactly x's bytes, in its layout, or none (then it runs
// quantize_x_kernel). The codes describe the bytes the producer wrote for as long as nobody writes into
// that buffer again. Ops allocate their outputs, so the only writes into an existing buffer are the
// kernel API's in-place writers (copy_into, copy_into_at, rope_kv_write's cache pages, scatter_last), and
// each calls forget() on what it writes. Entries hold the buffer weakly: a freed and reallocated block is
// a new buffer and matches nothing.
#pragma once

#include "loom/backend/cuda/act_int8.h"
#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

// The f32 steps of quantize_x_kernel for one block of 32 activations: d = max|x| / 127, id = 1 / d (0 when
// d is 0), q = x * id rounded to nearest even and clamped to int8 (IEEE operations, correctly rounded).
__device__ __forceinline__ float q8_scale(float amax) { return __fdiv_rn(amax, 127.0f); }
__device__ __forceinline__ float q8_inverse(float d) { return d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f; }
__device__ __forceinline__ int q8_code(float v, float id) {
  return min(127, max(-128, __float2int_rn(__fmul_rn(v, id))));
}
// Byte of element e (0..31) of a block: natural order, or (nibbles) each 8-value chunk stored as
// [x0 x2 x4 x6 | x1 x3 x5 x7], the order in which a 4-bit word's low and high nibbles meet them.
__device__ __forceinline__ int q8_byte(int e, bool nibbles) {
  return nibbles ? (e & ~7) + 4 * (e & 1) + ((e & 7) >> 1) : e;
}

// Called by all 32 lanes of a warp that holds V activation blocks, one element per lane of each (lane l,
// slot j: element l of block b0 + j * bstride, already rounded to the producer's output dtype; slots j <
// nvalid are blocks of the output, the others lie past its end). Stores each block's codes and {d, d *
// sum q}. The values are regrouped through `sm` (32 * V floats of the warp's own) so that a block's 32
// values sit in 32 / V lanes, V consecutive values per lane: one scale computation per lane instead of one
// per slot (a norm runs a decode row on one multiprocessor, where the per-slot form, two warp reductions
// and two divisions per block and lane, was issue-bound: Llama-3.1-8B-shaped 4-bit tg 369 vs 371 t/s
// without any handoff). max and an integer sum do not depend on the order they are taken in, so the
// shuffle trees give quantize_x_kernel's bits.
template <int V>
__device__ __forceinline__ void q8_store_blocks(const Int8Out& o, int64_t b0, int64_t bstride, int nvalid,
                                                const float (&v)[V], float* sm) {
  static_assert(V == 2 || V == 4 || V == 8, "V divides 32");
  const int lane = threadIdx.x & 31;
  constexpr int G = 32 / V;  // lanes per block
#pragma unroll
  for (int j = 0; j < V; ++j) sm[j * 32 + lane] = v[j];
  __syncwarp();
  const int j = lane / G, part = lane % G;
  float x[V];
#pragma unroll
  for (int t = 0; t < V; ++t) x[t] = sm[j * 32 + part * V + t];
  __syncwarp();  // sm is rewritten by the caller's next call
  float amax = 0.0f;
#pragma unroll
  for (int t = 0; t < V; ++t) amax = fmaxf(amax, fabsf(x[t]));
#pragma unroll
  for (int s = G / 2; s > 0; s >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, s));
  const float d = q8_scale(amax), id = q8_inverse(d);
  int q[V], sum = 0;
#pragma unroll
  for (int t = 0; t < V; ++t) {
    q[t] = q8_code(x[t], id);
    sum += q[t];
  }
#pragma unroll
  for (int s = G / 2; s > 0; s >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, s);
  if (j >= nvalid) return;
  const int64_t b = b0 + j * bstride;
  int8_t* qb = static_cast<int8_t*>(o.q) + b * 32;
#pragma unroll
  for (int t = 0; t < V; ++t) qb[q8_byte(part * V + t, o.nibbles)] = static_cast<int8_t>(q[t]);
  if (part == 0) static_cast<float2*>(o.db)[b] = make_float2(d, __fmul_rn(d, static_cast<float>(sum)));
}

}  // namespace loom::cuda
