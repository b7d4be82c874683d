#include "loom/common/error.h"

namespace loom {

std::string format_error(std::string_view where, std::string_view what) {
  std::string out;
  out.reserve(where.size() + what.size() + 3);
  out += '[';
  out += where;
  out += "] ";
  out += what;
  return out;
}

}  // namespace loom
