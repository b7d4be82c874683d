// Counter-based random numbers: element i of a draw with a 64-bit key is a pure function of (key, i)
// (splitmix64's finaliser over key + golden-ratio * (i + 1)), so a draw is the same on every device,
// thread count and launch shape, bit for bit. A separate header (not ops.h) because the CUDA and CPU
// kernels include the hash itself: the functions below compile as __host__ __device__ under nvcc.
#pragma once

#include <cstdint>

#include "loom/core/array.h"

#if defined(__CUDACC__)
#define LOOM_HOST_DEVICE __host__ __device__
#else
#define LOOM_HOST_DEVICE
#endif

namespace loom {
namespace random {

// splitmix64's output function (a bijection of 64-bit words with full avalanche).
LOOM_HOST_DEVICE constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) for element i of the draw with key `key`: the top 24 bits of the hash times
// 2^-24 (every float of the form k / 2^24, all exact in f32, so no rounding can differ by device).
LOOM_HOST_DEVICE constexpr float uniform_at(uint64_t key, uint64_t i) {
  return static_cast<float>(mix64(key + 0x9E3779B97F4A7C15ull * (i + 1)) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace random

// f32 array of `shape` whose row-major element i is random::uniform_at(key, i), on the requested
// device (default: the default device). mx.random.uniform(0, 1, shape, key=...) with loom's generator.
Array random_uniform(const Shape& shape, uint64_t key, StreamOrDevice s = {});

}  // namespace loom
