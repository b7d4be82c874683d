// Sampling support on the CPU (CUDA twin: backend/cuda/sampling_support.cu): cumsum_last,
// random_uniform, scatter_last and the readback pair.
//
// cumsum_last's summation order (both backends follow it exactly, so their results are the same bits;
// scan_order.h holds the constants). A row of n is cut into kScanSegments segments of
// S = ceil(n / kScanSegments) consecutive elements (the trailing ones may be short or empty):
//   1. each segment's total, summed in order from 0;
//   2. the segments form groups of kScanGroup; within a group, each segment's exclusive prefix of the
//      totals in order from 0 (and the group's total); then each group's exclusive prefix of the group
//      totals, in order from 0;
//   3. a segment's offset is (group prefix) + (in-group prefix); its outputs run on from there,
//      acc = offset, acc += x in order (an exclusive scan writes acc before the add).
// Rows of at most kScanGroup elements thus get the plain sequential sum. Reverse scans run the same
// order over the reversed row. Only f32 additions, so no contraction into FMAs can differ either.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/scan_order.h"
#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/ops/random.h"

namespace loom::cpu {

void cumsum_last(const Array& in, bool reverse, bool inclusive, Array& out) {
  const int64_t n = in.shape(-1), rows = n ? in.size() / n : 0;
  if (rows == 0) return;
  const float* src = in.data<float>();
  float* dst = out.data<float>();
  const int64_t seg = scan_segment_length(n);
  const int64_t used = (n + seg - 1) / seg;  // non-empty segments; empty ones add +0 (an exact no-op)
  parallel_for(rows, std::max<int64_t>(1, 16384 / n), [&](int64_t r0, int64_t r1) {
    std::vector<float> offset(static_cast<size_t>(used));
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = src + r * n;
      float* o = dst + r * n;
      auto at = [&](int64_t j) { return reverse ? n - 1 - j : j; };
      // 1. segment totals (kept in `offset` until step 2 turns them into offsets).
      for (int64_t s = 0; s < used; ++s) {
        float acc = 0.0f;
        for (int64_t j = s * seg, e = std::min(n, j + seg); j < e; ++j) acc += x[at(j)];
        offset[s] = acc;
      }
      // 2. in-group exclusive prefixes, then the group prefix in front of them.
      float group_prefix = 0.0f;
      for (int64_t g0 = 0; g0 < used; g0 += kScanGroup) {
        float e = 0.0f;
        for (int64_t s = g0; s < std::min(used, g0 + kScanGroup); ++s) {
          float t = offset[s];
          offset[s] = group_prefix + e;
          e += t;
        }
        group_prefix += e;
      }
      // 3. outputs.
      for (int64_t s = 0; s < used; ++s) {
        float acc = offset[s];
        for (int64_t j = s * seg, e = std::min(n, j + seg); j < e; ++j) {
          const int64_t p = at(j);
          const float v = x[p];
          if (!inclusive) o[p] = acc;
          acc += v;
          if (inclusive) o[p] = acc;
        }
      }
    }
  });
}

void random_uniform(uint64_t key, Array& out) {
  float* o = out.data<float>();
  parallel_for(out.size(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) o[i] = random::uniform_at(key, static_cast<uint64_t>(i));
  });
}

namespace {

template <typename T>
void scatter_rows(const Array& indices, const Array& values, bool add, Array& out) {
  const int64_t rows = indices.shape(0), k = indices.shape(1), n = out.shape(1);
  const int32_t* idx = indices.data<int32_t>();
  const T* val = static_cast<const T*>(values.raw_data());
  T* o = static_cast<T*>(out.raw_data());
  const int64_t is0 = indices.strides()[0], is1 = indices.strides()[1];
  const int64_t vs0 = values.strides()[0], vs1 = values.strides()[1];
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < k; ++j) {
        int64_t c = idx[r * is0 + j * is1];
        if (c < 0) c += n;
        if (c < 0 || c >= n) continue;
        const T v = val[r * vs0 + j * vs1];
        if (add) {
          if constexpr (std::is_same_v<T, float> || std::is_same_v<T, int32_t>) o[r * n + c] += v;
        } else {
          o[r * n + c] = v;
        }
      }
  });
}

}  // namespace

void scatter_last(const Array& indices, const Array& values, bool add, Array& out) {
  if (indices.dtype() != Dtype::i32 || values.dtype() != out.dtype() || !out.is_contiguous())
    throw Error(format_error("scatter_last", "expects int32 indices, values of out's dtype and a contiguous out"));
  if (add) {
    if (out.dtype() == Dtype::f32) return scatter_rows<float>(indices, values, true, out);
    if (out.dtype() == Dtype::i32) return scatter_rows<int32_t>(indices, values, true, out);
    throw NotSupportedError(format_error("scatter_add", "only float32 and int32 are supported"));
  }
  // Set: only the element bits move.
  switch (size_of(out.dtype())) {
    case 1: return scatter_rows<uint8_t>(indices, values, false, out);
    case 2: return scatter_rows<uint16_t>(indices, values, false, out);
    case 4: return scatter_rows<uint32_t>(indices, values, false, out);
    default: return scatter_rows<uint64_t>(indices, values, false, out);
  }
}

// CPU readback: every op has finished when it returns, so the bytes are copied at once and kept
// until finish_readback collects them.
namespace {
struct Staged {
  std::mutex mu;
  int64_t next = 0;
  std::unordered_map<int64_t, std::vector<uint8_t>> bytes;
};
Staged& staged() {
  static Staged s;
  return s;
}
}  // namespace

int64_t queue_readback(const Array& src) {
  const uint8_t* p = static_cast<const uint8_t*>(src.raw_data());
  std::vector<uint8_t> b(p, p + src.nbytes());
  Staged& s = staged();
  std::lock_guard<std::mutex> lock(s.mu);
  int64_t t = s.next++;
  s.bytes.emplace(t, std::move(b));
  return t;
}

void finish_readback(int64_t ticket, Array& dst) {
  Staged& s = staged();
  std::vector<uint8_t> b;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.bytes.find(ticket);
    if (it == s.bytes.end())
      throw Error(format_error("readback", "unknown or already finished ticket " + std::to_string(ticket)));
    b = std::move(it->second);
    s.bytes.erase(it);
  }
  if (b.size() != dst.nbytes()) throw Error(format_error("readback", "destination size differs from the source"));
  std::memcpy(dst.raw_data(), b.data(), b.size());
}

}  // namespace loom::cpu
