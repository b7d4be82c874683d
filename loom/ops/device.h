// Choosing and using devices: which exist, which is the default, moving arrays between them.
#pragma once

#include <string>

#include "loom/core/array.h"

namespace loom {

// Registers the CUDA runtime with loom_core (idempotent; the functions below call it).
void init_devices();
// True when arrays can live on d in this build on this machine.
bool device_available(Device d);
// The device a user who did not choose gets: the first CUDA GPU when usable, else the CPU.
Device best_device();
// Free and total memory of a device in bytes (the host's for the CPU).
void device_memory(Device d, size_t& free_bytes, size_t& total_bytes);
// "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)".
std::string describe_device(Device d);

}  // namespace loom
