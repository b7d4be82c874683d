// Host side of the int8-activation handoff between a producing kernel and the fast tier's decode GEMV
// (plain C++; the plan and the device half are in act_int8.cuh).
#pragma once

#include <cstdint>

#include "loom/core/array.h"

namespace loom::cuda {

// Where a producer stores the codes of its output: q int8 [size] in the consumer's layout, db float2
// [size / 32] {d, d * sum q}; q null: nowhere.
struct Int8Out {
  void* q = nullptr;
  void* db = nullptr;
  bool nibbles = false;
};

namespace act_int8 {

// For a kernel about to write `out` (contiguous, size a multiple of 32): code buffers registered under
// out's bytes, in the layout a fast-tier product last asked for; none before any asked. A producer that
// gets buffers must fill them in the same launch that writes out.
Int8Out offer(const Array& out);
// The codes registered for exactly x's bytes in this layout, if any (q int8 codes as u32 words, db f32
// pairs); records the layout as the one wanted.
bool find(const Array& x, bool nibbles, Array& q, Array& db);
// Records the layout fast-tier products take (a prefill's products, before any decode step has asked).
void want(bool nibbles);
// x's buffer is about to be written in place: its codes no longer describe it.
void forget(const Array& written);
// Drops every entry (capture boundaries).
void clear();
// Products that found codes so far (tests).
int64_t hits();

}  // namespace act_int8
}  // namespace loom::cuda
