// Devices as the ops layer sees them: registering the CUDA runtime with loom_core, choosing the
// default device, moving arrays between devices, and finding an op's device.
#include "loom/ops/device.h"

#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "loom/backend/cuda/runtime.h"
#include "loom/core/device_runtime.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/ops.h"

namespace loom {

void init_devices() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (DeviceRuntime* rt = cuda::runtime()) register_device_runtime(Device::Type::cuda, rt);
  });
}

bool device_available(Device d) {
  if (d.is_cpu()) return true;
  init_devices();
  DeviceRuntime* rt = device_runtime(d.type);
  return rt && d.index >= 0 && d.index < rt->device_count();
}

Device best_device() { return device_available(Device::cuda(0)) ? Device::cuda(0) : Device::cpu(); }

std::string describe_device(Device d) {
  if (d.is_cpu()) return "cpu";
  init_devices();
  return d.str() + " (" + cuda::device_name(d.index) + ")";
}

void device_memory(Device d, size_t& free_bytes, size_t& total_bytes) {
  if (d.is_cpu()) {
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    total_bytes = static_cast<size_t>(pages) * static_cast<size_t>(page);
    free_bytes = static_cast<size_t>(avail) * static_cast<size_t>(page);
    return;
  }
  if (!device_available(d)) require_device_runtime(d, "device_memory");
  cuda::memory_info(d.index, free_bytes, total_bytes);
}

Array to_device(const Array& a, Device d) {
  ops_detail::require_valid(a, "to_device", "input");
  if (a.device() == d) return a;
  init_devices();
  Array src = contiguous(a);
  Array out = Array::empty(src.shape(), src.dtype(), d);
  Device gpu = d.is_cpu() ? src.device() : d;
  require_device_runtime(gpu, "to_device").copy_bytes(out.raw_data(), d, src.raw_data(), src.device(), src.nbytes());
  return out;
}

namespace ops_detail {
namespace {

// Uploads of small host operands, cached so a decode step does not copy the same constants to the
// device again and again: 0-d floating values by (device, dtype, bits) — weak scalars such as 0.5 or
// -inf are made afresh by every op but take few distinct values — and other host arrays by buffer
// identity while that buffer lives (RoPE frequencies, sinks: made once, used every step). A cached
// entry is valid only while its host buffer is alive and the view is the same; host arrays are not
// written after they first meet a device op. Entries of dead host buffers (token ids, made fresh each
// step) are dropped at the next insertion, so their device copies go back to the allocator at once.
class UploadCache {
 public:
  Array get(const Array& a, Device d) {
    std::lock_guard<std::mutex> lock(mu_);
    if (a.ndim() == 0 && is_floating(a.dtype())) {
      uint64_t bits = 0;
      std::memcpy(&bits, a.raw_data(), a.itemsize());
      ScalarKey key{d.index, static_cast<int>(a.dtype()), bits};
      auto it = scalars_.find(key);
      Array v;
      if (it != scalars_.end()) {
        v = it->second;
      } else {
        v = to_device(reshape(a, {}), d);
        if (scalars_.size() < kMaxScalars) scalars_.emplace(key, v);
      }
      return Array(v.buffer(), a.shape(), Strides(a.ndim(), 0), v.offset(), v.dtype());
    }
    const Buffer* key = a.buffer().get();
    auto it = arrays_.find(key);
    if (it != arrays_.end() && !it->second.host.expired() && it->second.device == d &&
        it->second.host.lock().get() == key && it->second.offset == a.offset() && it->second.shape == a.shape() &&
        it->second.strides == a.strides() && it->second.dtype == a.dtype())
      return it->second.copy;
    evict_expired();
    Array copy = to_device(a, d);
    if (arrays_.size() < kMaxArrays) arrays_[key] = {a.buffer(), d, a.offset(), a.shape(), a.strides(), a.dtype(), copy};
    return copy;
  }

 private:
  static constexpr size_t kMaxScalars = 4096, kMaxArrays = 1024;
  struct ScalarKey {
    int device, dtype;
    uint64_t bits;
    bool operator<(const ScalarKey& o) const {
      return std::tie(device, dtype, bits) < std::tie(o.device, o.dtype, o.bits);
    }
  };
  struct Entry {
    std::weak_ptr<Buffer> host;
    Device device;
    int64_t offset;
    Shape shape;
    Strides strides;
    Dtype dtype;
    Array copy;
  };
  void evict_expired() {
    for (auto it = arrays_.begin(); it != arrays_.end();) it = it->second.host.expired() ? arrays_.erase(it) : std::next(it);
  }
  std::mutex mu_;
  std::map<ScalarKey, Array> scalars_;
  std::unordered_map<const Buffer*, Entry> arrays_;
};

UploadCache& upload_cache() {
  static UploadCache* c = new UploadCache();  // leaked on purpose: device buffers may outlive statics
  return *c;
}

}  // namespace

Device device_of(std::initializer_list<const Array*> arrays, const char* op) {
  Device d = Device::cpu();
  bool first = true;
  for (const Array* a : arrays) {
    if (!a->valid()) continue;
    if (first) {
      d = a->device();
      first = false;
    } else if (!(a->device() == d)) {
      throw ValueError(format_error(op, "arrays on different devices: " + d.str() + " and " + a->device().str() +
                                            " (move one with to_device)"));
    }
  }
  return d;
}

Device unify_devices(std::initializer_list<Array*> arrays, const char* op) {
  Device d = Device::cpu();
  for (Array* a : arrays)
    if (a->valid() && !a->device().is_cpu()) {
      d = a->device();
      break;
    }
  if (d.is_cpu()) return d;
  for (Array* a : arrays) {
    if (!a->valid() || a->device() == d) continue;
    if (a->device().is_cpu() && a->size() <= kHostUploadLimit) {
      *a = upload_cache().get(*a, d);
      continue;
    }
    throw ValueError(format_error(op, "arrays on different devices: " + d.str() + " and " + a->device().str() + " " +
                                          shape_str(a->shape()) + " (move one with to_device)"));
  }
  return d;
}

Device target_device(StreamOrDevice s) {
  Device d = s.has_device ? s.device : default_device();
  if (!d.is_cpu()) init_devices();
  return d;
}

}  // namespace ops_detail
}  // namespace loom
