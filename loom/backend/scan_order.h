// The summation order of cumsum_last, shared by the CPU and CUDA kernels so both give the same bits
// (described in backend/cpu/sampling_support.cpp). Plain constexpr: usable from host and device code.
#pragma once

#include <cstdint>

namespace loom {

// Segments per row (the CUDA kernel runs one thread per segment, one block per row) and segments per
// group (one warp).
inline constexpr int64_t kScanSegments = 1024;
inline constexpr int64_t kScanGroup = 32;

// Elements per segment for a row of n: ceil(n / kScanSegments), at least 1.
constexpr int64_t scan_segment_length(int64_t n) {
  return n <= kScanSegments ? 1 : (n + kScanSegments - 1) / kScanSegments;
}

}  // namespace loom
