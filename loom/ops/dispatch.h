// Device dispatch for the ops layer. An op finds its device from its operands (device_of, strict),
// or lets small host operands join a CUDA op (unify_devices: MLX's unified memory lets mlx-lm code
// mix scalars, RoPE frequencies and token ids with device arrays freely), then calls the kernel of
// that device: LOOM_KERNEL(device, name)(args...) picks loom::cpu::name or loom::cuda::name, which
// share one signature (backend/kernel_api.inc).
#pragma once

#include <initializer_list>
#include <string>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cuda/kernels.h"
#include "loom/common/error.h"
#include "loom/core/array.h"

#define LOOM_KERNEL(device, fn) ((device).is_cuda() ? &::loom::cuda::fn : &::loom::cpu::fn)

namespace loom::ops_detail {

// Host arrays up to this many elements are uploaded when they meet device arrays in one op.
constexpr int64_t kHostUploadLimit = 1 << 16;

// The device of the valid arrays, which must all agree; a ValueError naming `op` otherwise.
Device device_of(std::initializer_list<const Array*> arrays, const char* op);
// As device_of, but a small host array among device arrays is replaced (in place) by its upload.
Device unify_devices(std::initializer_list<Array*> arrays, const char* op);
// The device an op creating an array runs on: the requested one, else the default device.
Device target_device(StreamOrDevice s);

inline void require_valid(const Array& a, const char* op, const char* what) {
  if (!a.valid()) throw ValueError(format_error(op, std::string(what) + " is an empty (default-constructed) array"));
}

}  // namespace loom::ops_detail
