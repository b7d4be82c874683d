#include "loom/core/device.h"

#include "loom/common/error.h"

namespace loom {
namespace {
Device& default_dev() {
  static Device d = Device::cpu();
  return d;
}
}  // namespace

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda" || s == "gpu") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) return Device::cuda(std::stoi(s.substr(5)));
  throw ValueError(format_error("device", "unknown device '" + s + "' (expected cpu, cuda or cuda:N)"));
}

Device default_device() { return default_dev(); }
void set_default_device(Device d) { default_dev() = d; }
void synchronize(Device) {}  // CPU kernels complete before returning.

}  // namespace loom
