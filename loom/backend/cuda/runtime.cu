// CUDA runtime: device discovery, one stream per device, and the caching allocator behind every
// device Array. Freed blocks go back to a per-size-class free list (stream-ordered reuse on the
// device's single stream), so steady decode calls cudaMalloc no more once warm.
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "loom/backend/cuda/act_int8.h"
#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/runtime.h"

namespace loom::cuda {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear sticky-free errors so the next call starts clean
  throw Error(format_error("cuda", std::string(what) + ": " + cudaGetErrorString(e)));
}

void check_launch(const char* kernel) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(format_error(kernel, std::string("kernel launch failed: ") + cudaGetErrorString(e)));
}

namespace {

constexpr int kMaxDevices = 16;

int probe_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n > kMaxDevices ? kMaxDevices : n;
}

size_t size_class(size_t bytes) {
  if (bytes <= 256) return 256;
  if (bytes <= (size_t{1} << 20)) {
    size_t c = 256;
    while (c < bytes) c <<= 1;
    return c;
  }
  constexpr size_t mb = size_t{1} << 20;
  if (bytes <= (size_t{64} << 20)) return (bytes + mb - 1) / mb * mb;
  constexpr size_t big = size_t{2} << 20;  // large blocks round to 2 MiB
  return (bytes + big - 1) / big * big;
}

std::string mib(size_t b) { return std::to_string((b + (1 << 19)) >> 20) + " MiB"; }

struct PerDevice;

// The blocks of one captured graph (see DeviceRuntime::begin_capture): freed ones wait here, not in
// the device's free lists, because replays of the graph write into them. When the graph is gone the
// pool's free blocks join the device's free lists, and blocks still held go there when freed.
struct Pool {
  explicit Pool(PerDevice* o) : owner(o) {}
  ~Pool();
  PerDevice* owner;
  std::map<size_t, std::vector<void*>> free_blocks;  // guarded by owner->mu
};

struct PerDevice {
  std::once_flag init;
  cudaStream_t stream = nullptr;
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;
  AllocatorStats st;
  std::shared_ptr<Pool> capturing;  // the pool of the graph being recorded, if any
};

Pool::~Pool() {
  std::lock_guard<std::mutex> lock(owner->mu);
  for (auto& [cls, v] : free_blocks) owner->free_blocks[cls].insert(owner->free_blocks[cls].end(), v.begin(), v.end());
}

// Takes a free block of size class cls from `list`, or returns nullptr.
void* pop_block(std::map<size_t, std::vector<void*>>& list, size_t cls) {
  auto it = list.find(cls);
  if (it == list.end() || it->second.empty()) return nullptr;
  void* ptr = it->second.back();
  it->second.pop_back();
  return ptr;
}

class CudaGraph final : public DeviceGraph {
 public:
  CudaGraph(cudaGraph_t g, cudaGraphExec_t e, cudaStream_t s, int device, std::shared_ptr<Pool> pool)
      : graph_(g), exec_(e), stream_(s), device_(device), pool_(std::move(pool)) {}
  ~CudaGraph() override {
    // An in-flight replay completes first (the executable is freed asynchronously); the pool's blocks
    // are then reused only by work queued after it on the same stream.
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  void launch() override {
    LOOM_CUDA_CHECK(cudaSetDevice(device_));
    LOOM_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }

 private:
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  int device_;
  std::shared_ptr<Pool> pool_;
};

class CudaRuntime final : public DeviceRuntime {
 public:
  int device_count() override {
    static int n = probe_device_count();
    return n;
  }

  PerDevice& dev(Device d) {
    if (d.index < 0 || d.index >= device_count())
      throw NotSupportedError(format_error("cuda", "device " + d.str() + " does not exist (" +
                                                       std::to_string(device_count()) + " visible)"));
    PerDevice& p = devices_[d.index];
    std::call_once(p.init, [&] {
      LOOM_CUDA_CHECK(cudaSetDevice(d.index));
      LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&p.stream, cudaStreamNonBlocking));
    });
    return p;
  }

  cudaStream_t stream(Device d) {
    PerDevice& p = dev(d);
    LOOM_CUDA_CHECK(cudaSetDevice(d.index));
    return p.stream;
  }

  std::shared_ptr<Buffer> allocate(size_t bytes, Device d) override {
    PerDevice& p = dev(d);
    size_t cls = size_class(bytes);
    void* ptr = nullptr;
    std::shared_ptr<Pool> pool;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      p.st.allocs++;
      pool = p.capturing;
      // While recording, the graph's own free blocks first, then any free block of the device (it
      // becomes the graph's).
      if (pool) ptr = pop_block(pool->free_blocks, cls);
      if (!ptr) ptr = pop_block(p.free_blocks, cls);
      if (ptr) p.st.cached_bytes -= cls;
    }
    if (!ptr) ptr = system_alloc(p, d, bytes, cls);
    {
      std::lock_guard<std::mutex> lock(p.mu);
      p.st.active_bytes += cls;
      if (p.st.active_bytes > p.st.peak_bytes) p.st.peak_bytes = p.st.active_bytes;
    }
    auto buf = std::make_shared<Buffer>();
    buf->ptr = ptr;
    buf->size = bytes;
    buf->device = d;
    PerDevice* pp = &p;
    if (!pool) {
      buf->release = [pp, cls](void* q, size_t) {
        std::lock_guard<std::mutex> lock(pp->mu);
        pp->st.active_bytes -= cls;
        pp->st.cached_bytes += cls;
        pp->free_blocks[cls].push_back(q);
      };
    } else {
      buf->release = [pp, cls, weak = std::weak_ptr<Pool>(pool)](void* q, size_t) {
        std::shared_ptr<Pool> owner = weak.lock();  // outlives the lock below (~Pool takes it)
        std::lock_guard<std::mutex> lock(pp->mu);
        pp->st.active_bytes -= cls;
        pp->st.cached_bytes += cls;
        (owner ? owner->free_blocks : pp->free_blocks)[cls].push_back(q);
      };
    }
    return buf;
  }

  void begin_capture(Device d) override {
    PerDevice& p = dev(d);
    if (p.capturing) throw Error(format_error("cuda", "a graph is already being recorded on " + d.str()));
    LOOM_CUDA_CHECK(cudaSetDevice(d.index));
    // Relaxed: allocating device memory (cudaMalloc) while recording is allowed.
    LOOM_CUDA_CHECK(cudaStreamBeginCapture(p.stream, cudaStreamCaptureModeRelaxed));
    act_int8::clear();  // no entry outlives the allocation regime it was made in (act_int8.cuh)
    auto pool = std::make_shared<Pool>(&p);
    std::lock_guard<std::mutex> lock(p.mu);
    p.capturing = std::move(pool);
  }

  std::unique_ptr<DeviceGraph> end_capture(Device d) override {
    PerDevice& p = dev(d);
    std::shared_ptr<Pool> pool;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      pool = std::move(p.capturing);
      p.capturing.reset();
    }
    if (!pool) throw Error(format_error("cuda", "no graph is being recorded on " + d.str()));
    act_int8::clear();
    LOOM_CUDA_CHECK(cudaSetDevice(d.index));
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(p.stream, &g);
    if (e != cudaSuccess || !g) {
      cudaGetLastError();
      if (g) cudaGraphDestroy(g);
      throw Error(format_error("cuda", std::string("graph capture failed: ") + cudaGetErrorString(e)));
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, g, 0);
    if (e != cudaSuccess) {
      cudaGetLastError();
      cudaGraphDestroy(g);
      throw Error(format_error("cuda", std::string("graph instantiation failed: ") + cudaGetErrorString(e)));
    }
    return std::make_unique<CudaGraph>(g, exec, p.stream, d.index, std::move(pool));
  }

  void abort_capture(Device d) noexcept override {
    if (d.index < 0 || d.index >= device_count()) return;
    PerDevice& p = devices_[d.index];
    if (!p.stream) return;
    act_int8::clear();
    std::shared_ptr<Pool> pool;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      pool = std::move(p.capturing);
      p.capturing.reset();
    }
    cudaSetDevice(d.index);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(p.stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(p.stream, &g);
      if (g) cudaGraphDestroy(g);
    }
    cudaGetLastError();
  }

  void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    if (bytes == 0) return;
    Device d = dst_dev.is_cuda() ? dst_dev : src_dev;
    cudaStream_t s = stream(d);
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  void synchronize(Device d) override { LOOM_CUDA_CHECK(cudaStreamSynchronize(stream(d))); }

  AllocatorStats stats(Device d) override {
    PerDevice& p = dev(d);
    std::lock_guard<std::mutex> lock(p.mu);
    return p.st;
  }
  void reset_peak(Device d) override {
    PerDevice& p = dev(d);
    std::lock_guard<std::mutex> lock(p.mu);
    p.st.peak_bytes = p.st.active_bytes;
  }
  void clear_cache(Device d) override {
    PerDevice& p = dev(d);
    LOOM_CUDA_CHECK(cudaStreamSynchronize(stream(d)));
    std::lock_guard<std::mutex> lock(p.mu);
    release_cached(p);
  }

 private:
  static void release_cached(PerDevice& p) {
    for (auto& [cls, v] : p.free_blocks)
      for (void* q : v) cudaFree(q);
    p.free_blocks.clear();
    p.st.cached_bytes = 0;
  }

  void* system_alloc(PerDevice& p, Device d, size_t bytes, size_t cls) {
    LOOM_CUDA_CHECK(cudaSetDevice(d.index));
    void* ptr = nullptr;
    cudaError_t e = cudaMalloc(&ptr, cls);
    if (e == cudaErrorMemoryAllocation) {  // give the cache back and try once more
      cudaGetLastError();
      LOOM_CUDA_CHECK(cudaStreamSynchronize(p.stream));
      {
        std::lock_guard<std::mutex> lock(p.mu);
        release_cached(p);
      }
      e = cudaMalloc(&ptr, cls);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      AllocatorStats st = stats(d);
      throw Error(format_error("cuda", "out of memory on " + d.str() + ": allocating " + mib(bytes) + " with " +
                                           mib(st.active_bytes) + " held by loom, " + mib(free_b) + " free of " +
                                           mib(total_b)));
    }
    check(e, "cudaMalloc");
    std::lock_guard<std::mutex> lock(p.mu);
    p.st.system_allocs++;
    return ptr;
  }

  PerDevice devices_[kMaxDevices];
};

CudaRuntime& rt() {
  static CudaRuntime* r = new CudaRuntime();  // leaked on purpose: buffers may die after static destructors
  return *r;
}

}  // namespace

cudaStream_t stream_for(Device d) { return rt().stream(d); }

int sm_count(Device d) {
  static std::atomic<int> cache[16] = {};
  const int i = d.index >= 0 && d.index < 16 ? d.index : 0;
  int n = cache[i].load(std::memory_order_relaxed);
  if (n == 0) {
    LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d.index));
    cache[i].store(n, std::memory_order_relaxed);
  }
  return n;
}

bool pdl_enabled() {
  static std::atomic<int> cache[16] = {};  // 0 unknown, 1 off, 2 on
  int dev = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&dev));
  const int i = dev >= 0 && dev < 16 ? dev : 0;
  int v = cache[i].load(std::memory_order_relaxed);
  if (v == 0) {
    static const bool env_off = [] {
      const char* e = std::getenv("LOOM_CUDA_PDL");
      return e && std::string(e) == "0";
    }();
    int major = 0;
    LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    v = !env_off && major >= 9 ? 2 : 1;
    cache[i].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

StridedView view_of(const Array& a) {
  StridedView v;
  // Drop size-1 dims, then merge a dim into its inner neighbour when strides chain.
  int64_t shp[32], str[32];
  int n = 0;
  for (int d = 0; d < a.ndim(); ++d) {
    if (a.shape()[d] == 1) continue;
    if (n > 0 && str[n - 1] == a.strides()[d] * a.shape()[d]) {
      shp[n - 1] *= a.shape()[d];
      str[n - 1] = a.strides()[d];
      continue;
    }
    if (n == 32) break;
    shp[n] = a.shape()[d];
    str[n] = a.strides()[d];
    ++n;
  }
  if (n > kMaxDims)
    throw NotSupportedError(format_error("cuda", "array view of shape " + shape_str(a.shape()) + " has more than " +
                                                     std::to_string(kMaxDims) + " non-mergeable dims"));
  v.ndim = n;
  for (int i = 0; i < n; ++i) {
    v.shape[i] = shp[i];
    v.strides[i] = str[i];
  }
  return v;
}

DeviceRuntime* runtime() { return &rt(); }
int device_count() { return rt().device_count(); }

std::string device_name(int index) {
  cudaDeviceProp prop{};
  LOOM_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

void memory_info(int index, size_t& free_bytes, size_t& total_bytes) {
  LOOM_CUDA_CHECK(cudaSetDevice(index));
  LOOM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
}

}  // namespace loom::cuda
