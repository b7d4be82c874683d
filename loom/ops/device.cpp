// Devices as the ops layer sees them: registering the CUDA runtime with loom_core, choosing the
// default device, moving arrays between devices, and finding an op's device.
#include "loom/ops/device.h"

#include <unistd.h>

#include <mutex>

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
      *a = to_device(*a, d);
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
