// The runtime of a non-CPU device (CUDA), as loom_core sees it. loom_core sits below the backends, so
// a backend registers its runtime here (loom_ops does it on first use: loom::init_devices) and the
// core allocator, Array::to_vector and synchronize() reach the device through this interface.
#pragma once

#include <cstddef>
#include <memory>

#include "loom/core/allocator.h"
#include "loom/core/device.h"

namespace loom {

// A recorded sequence of device work (a CUDA graph), replayed by launch() on the stream it was
// captured from. The memory its work allocated while it was recorded stays reserved for it (never
// handed to other allocations) until it is destroyed.
class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
  // Queues one replay (asynchronous, stream-ordered with everything else on the device).
  virtual void launch() = 0;
};

class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;
  // Number of devices of this type visible now (0 when the driver or the GPU is missing).
  virtual int device_count() = 0;
  // Device memory from the runtime's caching allocator (stream-ordered: safe to reuse on its stream).
  virtual std::shared_ptr<Buffer> allocate(size_t bytes, Device d) = 0;
  // Copies bytes between host and device or within a device; returns when dst holds the data.
  virtual void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = 0;
  virtual void synchronize(Device d) = 0;
  virtual AllocatorStats stats(Device d) = 0;
  virtual void reset_peak(Device d) = 0;
  virtual void clear_cache(Device d) = 0;
  // Capture: between begin_capture and end_capture, work queued on d's stream is recorded, not run,
  // and allocations on d come from a pool private to the graph being recorded (blocks freed while
  // recording are reused by it; blocks still held afterwards stay the graph's until they are freed
  // and the graph is gone). Anything that waits for the device while recording (a host readback, an
  // upload that synchronizes) fails the capture: end_capture then throws, and abort_capture (always
  // safe to call) ends the recording state so the device works normally again.
  virtual void begin_capture(Device d) = 0;
  virtual std::unique_ptr<DeviceGraph> end_capture(Device d) = 0;
  virtual void abort_capture(Device d) noexcept = 0;
};

// Registers the runtime of a device type (called by the backend; the pointer is never freed).
void register_device_runtime(Device::Type type, DeviceRuntime* runtime);
// The runtime of a device type, or nullptr when none is registered (CPU never has one).
DeviceRuntime* device_runtime(Device::Type type);
// The runtime of `d`, or a NotSupportedError naming `where` when this build or machine lacks it.
DeviceRuntime& require_device_runtime(Device d, const char* where);

}  // namespace loom
