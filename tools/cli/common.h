// Helpers shared by the CLI subcommands.
#pragma once

#include <string>
#include <vector>

#include "loom/core/dtype.h"

namespace loom::cli {

// Parses "1,2,3" into token ids; throws ValueError naming the bad item.
std::vector<int32_t> parse_token_list(const std::string& s);
// Parses --dtype values (float32, bfloat16, float16).
Dtype parse_compute_dtype(const std::string& s);

}  // namespace loom::cli
