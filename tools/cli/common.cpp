#include "tools/cli/common.h"

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>

#include "loom/common/error.h"
#include "loom/core/device_runtime.h"
#include "loom/hub/hub.h"
#include "loom/ops/device.h"
#include "loom/ops/quantized.h"

namespace loom::cli {

std::vector<int32_t> parse_token_list(const std::string& s) {
  std::vector<int32_t> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno || v < 0 || v > INT32_MAX)
      throw ValueError(format_error("cli", "--tokens: '" + item + "' is not a token id (expected e.g. 1,2,3)"));
    out.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

Dtype parse_compute_dtype(const std::string& s) {
  Dtype dt = dtype_from_name(s);
  if (dt != Dtype::f32 && dt != Dtype::bf16 && dt != Dtype::f16)
    throw ValueError(format_error("cli", "--dtype must be float32, bfloat16 or float16, got '" + s + "'"));
  return dt;
}

Device resolve_device(const std::string& s) {
  Device d = s == "auto" ? best_device() : parse_device(s);
  if (!device_available(d)) require_device_runtime(d, "cli");  // throws, saying why
  set_default_device(d);  // arrays the model makes on the fly (positions, masks) start there too
  return d;
}

void add_qmm_option(CLI::App* cmd) {
  cmd->add_option_function<std::string>(
      "--qmm", [](const std::string& v) { set_qmm_precision(parse_qmm_precision(v, "--qmm")); },
      "Quantized matmul on the CPU: fast (default; int8 activations for affine 4/8-bit weights) or exact "
      "(f32 activations); default from LOOM_QMM");
}

std::string model_path(const std::string& model) { return hub::resolve_model_path(model); }

Dtype resolve_dtype(const std::string& s, Device device) {
  if (s == "auto") return device.is_cuda() ? Dtype::bf16 : Dtype::f32;
  return parse_compute_dtype(s);
}

}  // namespace loom::cli
