// Sampling support on CUDA (CPU twin: backend/cpu/sampling_support.cpp, which states the contracts):
//  - cumsum_last: one block of kScanSegments threads per row, one thread per segment, in exactly the
//    CPU's summation order (scan_order.h), so both give the same bits;
//  - random_uniform: random::uniform_at per element (integer hashing; bit-identical to the CPU);
//  - scatter_last: one thread per (row, index); set moves element bits, add uses atomicAdd (a repeated
//    index adds in an unspecified order; equal values, as the frequency penalty adds, give one result);
//  - queue_readback / finish_readback: a ring of pinned host slots with one event each, so reading a
//    token waits for its own copy and not for work queued after it.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "loom/backend/cuda/act_int8.h"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"
#include "loom/backend/scan_order.h"
#include "loom/ops/random.h"

namespace loom::cuda {
namespace {

constexpr int kScanThreads = static_cast<int>(kScanSegments);
constexpr int kScanWarps = kScanThreads / static_cast<int>(kScanGroup);
static_assert(kScanGroup == 32, "one scan group per warp");

__global__ void cumsum_rows_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t rows, int64_t n,
                                   int64_t seg, bool reverse, bool inclusive) {
  __shared__ float offset[kScanThreads];
  __shared__ float group[kScanWarps];
  const int t = threadIdx.x;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* x = in + r * n;
    float* o = out + r * n;
    const int64_t b = t * seg, e = min(n, b + seg);
    // 1. this segment's total.
    float acc = 0.0f;
    for (int64_t j = b; j < e; ++j) acc += x[reverse ? n - 1 - j : j];
    offset[t] = acc;
    __syncthreads();
    // 2. in-group exclusive prefixes (lane 0 of each warp), then the groups' (thread 0).
    if ((t & 31) == 0) {
      float p = 0.0f;
      for (int l = 0; l < 32; ++l) {
        const float tot = offset[t + l];
        offset[t + l] = p;
        p += tot;
      }
      group[t >> 5] = p;
    }
    __syncthreads();
    if (t == 0) {
      float p = 0.0f;
      for (int g = 0; g < kScanWarps; ++g) {
        const float tot = group[g];
        group[g] = p;
        p += tot;
      }
    }
    __syncthreads();
    // 3. outputs, running on from the segment's offset.
    acc = group[t >> 5] + offset[t];
    for (int64_t j = b; j < e; ++j) {
      const int64_t p = reverse ? n - 1 - j : j;
      const float v = x[p];
      if (!inclusive) o[p] = acc;
      acc += v;
      if (inclusive) o[p] = acc;
    }
    __syncthreads();  // shared memory is reused by the next row
  }
}

__global__ void random_uniform_kernel(float* __restrict__ out, uint64_t key, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = random::uniform_at(key, static_cast<uint64_t>(i));
}

template <typename T, bool kAdd>
__global__ void scatter_kernel(const int32_t* __restrict__ idx, int64_t is0, int64_t is1, const T* __restrict__ val,
                               int64_t vs0, int64_t vs1, T* __restrict__ out, int64_t rows, int64_t k, int64_t n) {
  const int64_t total = rows * k;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / k, j = i - r * k;
    int64_t c = idx[r * is0 + j * is1];
    if (c < 0) c += n;
    if (c < 0 || c >= n) continue;
    const T v = val[r * vs0 + j * vs1];
    if constexpr (kAdd)
      atomicAdd(out + r * n + c, v);
    else
      out[r * n + c] = v;
  }
}

template <typename T, bool kAdd>
void launch_scatter(const Array& indices, const Array& values, Array& out) {
  const int64_t rows = indices.shape(0), k = indices.shape(1), n = out.shape(1);
  scatter_kernel<T, kAdd><<<grid_for(rows * k, 256), 256, 0, stream_of(out)>>>(
      indices.data<int32_t>(), indices.strides()[0], indices.strides()[1], static_cast<const T*>(values.raw_data()),
      values.strides()[0], values.strides()[1], static_cast<T*>(out.raw_data()), rows, k, n);
  check_launch("scatter_kernel");
}

// ---- readback staging ------------------------------------------------------------------------------

constexpr int kSlots = 64;
constexpr size_t kSlotBytes = 256;

struct Staging {
  std::mutex mu;
  uint8_t* host = nullptr;  // kSlots * kSlotBytes of pinned memory, never freed
  cudaEvent_t event[kSlots] = {};
  int event_device[kSlots] = {};
  int64_t owner[kSlots] = {};  // the ticket using the slot, -1 when free
  int64_t next = 0;
};

Staging& staging() {
  static Staging* s = [] {
    auto* p = new Staging();  // leaked on purpose: events and pinned memory outlive statics
    std::fill(p->owner, p->owner + kSlots, int64_t{-1});
    return p;
  }();
  return *s;
}

}  // namespace

void cumsum_last(const Array& in, bool reverse, bool inclusive, Array& out) {
  const int64_t n = in.shape(-1), rows = n ? in.size() / n : 0;
  if (rows == 0) return;
  if (in.dtype() != Dtype::f32 || out.dtype() != Dtype::f32)
    throw Error(format_error("cumsum", "the CUDA kernel takes and writes float32 rows"));
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 16));
  cumsum_rows_kernel<<<blocks, kScanThreads, 0, stream_of(out)>>>(in.data<float>(), out.data<float>(), rows, n,
                                                                  scan_segment_length(n), reverse, inclusive);
  check_launch("cumsum_rows_kernel");
}

void random_uniform(uint64_t key, Array& out) {
  const int64_t n = out.size();
  if (n == 0) return;
  random_uniform_kernel<<<grid_for(n, 256), 256, 0, stream_of(out)>>>(out.data<float>(), key, n);
  check_launch("random_uniform_kernel");
}

void scatter_last(const Array& indices, const Array& values, bool add, Array& out) {
  if (indices.dtype() != Dtype::i32 || values.dtype() != out.dtype() || !out.is_contiguous())
    throw Error(format_error("scatter_last", "expects int32 indices, values of out's dtype and a contiguous out"));
  if (indices.size() == 0 || out.size() == 0) return;
  act_int8::forget(out);
  if (add) {
    if (out.dtype() == Dtype::f32) return launch_scatter<float, true>(indices, values, out);
    if (out.dtype() == Dtype::i32) return launch_scatter<int, true>(indices, values, out);
    throw NotSupportedError(format_error("scatter_add", "only float32 and int32 are supported"));
  }
  switch (out.itemsize()) {
    case 1: return launch_scatter<uint8_t, false>(indices, values, out);
    case 2: return launch_scatter<uint16_t, false>(indices, values, out);
    case 4: return launch_scatter<uint32_t, false>(indices, values, out);
    default: return launch_scatter<unsigned long long, false>(indices, values, out);
  }
}

int64_t queue_readback(const Array& src) {
  if (src.nbytes() > kSlotBytes || !src.is_contiguous())
    throw Error(format_error("readback", "expects a contiguous source of at most 256 bytes"));
  Staging& s = staging();
  std::unique_lock<std::mutex> lock(s.mu);
  if (!s.host)
    LOOM_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&s.host), kSlots * kSlotBytes, cudaHostAllocPortable));
  const int64_t ticket = s.next++;
  const int slot = static_cast<int>(ticket % kSlots);
  // A slot still owned belongs to a ticket never finished 64 readbacks ago: wait for its copy (it is
  // long done) and take the slot; finishing that old ticket later fails loudly.
  if (s.owner[slot] >= 0) LOOM_CUDA_CHECK(cudaEventSynchronize(s.event[slot]));
  cudaStream_t stream = stream_of(src);  // also makes src's device current
  const int dev = src.device().index;
  if (s.event[slot] && s.event_device[slot] != dev) {
    LOOM_CUDA_CHECK(cudaEventDestroy(s.event[slot]));
    s.event[slot] = nullptr;
  }
  if (!s.event[slot]) {
    LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&s.event[slot], cudaEventDisableTiming));
    s.event_device[slot] = dev;
  }
  if (src.nbytes() > 0)
    LOOM_CUDA_CHECK(
        cudaMemcpyAsync(s.host + slot * kSlotBytes, src.raw_data(), src.nbytes(), cudaMemcpyDeviceToHost, stream));
  LOOM_CUDA_CHECK(cudaEventRecord(s.event[slot], stream));
  s.owner[slot] = ticket;
  return ticket;
}

void finish_readback(int64_t ticket, Array& dst) {
  Staging& s = staging();
  const int slot = static_cast<int>(ticket % kSlots);
  cudaEvent_t ev;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (ticket < 0 || s.owner[slot] != ticket)
      throw Error(format_error("readback", "unknown, expired or already finished ticket " + std::to_string(ticket)));
    ev = s.event[slot];
  }
  // Waits for this copy only (the event was recorded right behind it), not for later work.
  LOOM_CUDA_CHECK(cudaEventSynchronize(ev));
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.owner[slot] != ticket)
    throw Error(format_error("readback", "ticket " + std::to_string(ticket) + " expired while waiting"));
  if (dst.nbytes() > kSlotBytes) throw Error(format_error("readback", "destination larger than a staging slot"));
  std::memcpy(dst.raw_data(), s.host + slot * kSlotBytes, dst.nbytes());
  s.owner[slot] = -1;
}

}  // namespace loom::cuda
