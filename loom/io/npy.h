// NumPy .npy files (format version 1.0/2.0, little-endian, C order): what `loom logits` writes and
// what tests read. Supported dtypes: f32, f16, f64 (read as f64), i32, i64, u32, u8, i8, bool, bf16 is not
// a numpy dtype and is written as f32.
#pragma once

#include <string>

#include "loom/core/array.h"

namespace loom::io {

void save_npy(const std::string& path, const Array& a);
Array load_npy(const std::string& path);

}  // namespace loom::io
