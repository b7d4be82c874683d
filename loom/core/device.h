// Devices and streams. Execution is eager and asynchronous per stream: CPU work runs now (with the
// thread pool inside the kernel), CUDA work queues on the stream; synchronize() waits.
#pragma once

#include <string>

namespace loom {

struct Device {
  enum class Type { cpu, cuda };
  Type type = Type::cpu;
  int index = 0;

  static Device cpu() { return {Type::cpu, 0}; }
  static Device cuda(int i = 0) { return {Type::cuda, i}; }
  bool is_cpu() const { return type == Type::cpu; }
  bool is_cuda() const { return type == Type::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

// Parses "cpu", "cuda", "cuda:1".
Device parse_device(const std::string& s);

// A queue of work on one device. CPU has one implicit stream.
struct Stream {
  Device device;
  int index = 0;
};

// Where an op runs: an explicit stream, a device (its default stream), or the default device.
struct StreamOrDevice {
  StreamOrDevice() = default;
  StreamOrDevice(Device d) : device(d), has_device(true) {}  // NOLINT: implicit by design, as MLX
  StreamOrDevice(Stream s) : device(s.device), has_device(true) {}  // NOLINT
  Device device;
  bool has_device = false;
};

// Default device for new arrays (CPU unless changed).
Device default_device();
void set_default_device(Device d);
// Waits for all queued work on the device.
void synchronize(Device d = default_device());

}  // namespace loom
