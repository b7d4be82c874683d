#include "loom/core/device.h"

#include <atomic>

#include "loom/common/error.h"
#include "loom/core/device_runtime.h"

namespace loom {
namespace {
Device& default_dev() {
  static Device d = Device::cpu();
  return d;
}
std::atomic<DeviceRuntime*> g_cuda_runtime{nullptr};
}  // namespace

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda" || s == "gpu") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    std::string n = s.substr(5);
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) return Device::cuda(std::stoi(n));
  }
  throw ValueError(format_error("device", "unknown device '" + s + "' (expected cpu, cuda or cuda:N)"));
}

Device default_device() { return default_dev(); }
void set_default_device(Device d) { default_dev() = d; }

void synchronize(Device d) {
  if (d.is_cpu()) return;  // CPU kernels complete before returning.
  if (DeviceRuntime* rt = device_runtime(d.type)) rt->synchronize(d);
}

void register_device_runtime(Device::Type type, DeviceRuntime* runtime) {
  if (type == Device::Type::cuda) g_cuda_runtime.store(runtime);
}

DeviceRuntime* device_runtime(Device::Type type) {
  return type == Device::Type::cuda ? g_cuda_runtime.load() : nullptr;
}

DeviceRuntime& require_device_runtime(Device d, const char* where) {
  DeviceRuntime* rt = device_runtime(d.type);
  if (!rt)
    throw NotSupportedError(format_error(where, "device " + d.str() +
                                                    " is not available: this build has no CUDA backend "
                                                    "(configure with -DLOOM_CUDA=ON)"));
  int n = rt->device_count();
  if (d.index < 0 || d.index >= n)
    throw NotSupportedError(format_error(where, "device " + d.str() + " is not available: " +
                                                    (n == 0 ? std::string("no CUDA GPU or driver was found")
                                                            : std::to_string(n) + " CUDA device(s) visible")));
  return *rt;
}

}  // namespace loom
