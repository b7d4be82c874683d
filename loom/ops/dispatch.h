// Device dispatch for the ops layer. Only the CPU backend exists in this build; an array on any
// other device gets a clear NotSupportedError naming the op (the CUDA backend adds its branch here).
#pragma once

#include <initializer_list>
#include <string>

#include "loom/common/error.h"
#include "loom/core/array.h"

namespace loom::ops_detail {

inline Device device_of(std::initializer_list<const Array*> arrays, const char* op) {
  Device d = Device::cpu();
  bool first = true;
  for (const Array* a : arrays) {
    if (!a->valid()) continue;
    if (first) {
      d = a->device();
      first = false;
    } else if (!(a->device() == d)) {
      throw ValueError(format_error(op, "arrays on different devices: " + d.str() + " and " + a->device().str()));
    }
  }
  if (!d.is_cpu())
    throw NotSupportedError(format_error(op, "device " + d.str() + " is not supported by this build (CPU only)"));
  return d;
}

inline void require_valid(const Array& a, const char* op, const char* what) {
  if (!a.valid()) throw ValueError(format_error(op, std::string(what) + " is an empty (default-constructed) array"));
}

}  // namespace loom::ops_detail
