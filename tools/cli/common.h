// Helpers shared by the CLI subcommands.
#pragma once

#include <string>
#include <vector>

#include "loom/core/device.h"
#include "loom/core/dtype.h"

namespace CLI {
class App;
}

namespace loom::cli {

// Parses "1,2,3" into token ids; throws ValueError naming the bad item.
std::vector<int32_t> parse_token_list(const std::string& s);
// Parses --dtype values (float32, bfloat16, float16).
Dtype parse_compute_dtype(const std::string& s);
// --device: "auto" (the first CUDA GPU when one is usable, else cpu), "cpu", "cuda", "cuda:N"; a device
// this build or machine lacks is an error saying why. Also makes it the process's default device.
Device resolve_device(const std::string& s);
// --dtype with "auto": bfloat16 on CUDA, float32 on the CPU (DESIGN.md's precision policy).
Dtype resolve_dtype(const std::string& s, Device device);
// The model `loom generate` uses without --model (mlx_lm.generate has a default too): a small 4-bit
// instruct model from mlx-community, downloaded into the Hugging Face cache on first use.
inline constexpr const char* kDefaultModel = "mlx-community/Qwen3-0.6B-4bit";
// A local model folder, or the snapshot folder of a Hub repo id (downloaded when not cached).
std::string model_path(const std::string& model);
// Help texts of the two options, shared by every command that loads a model.
inline constexpr const char* kDeviceHelp = "Device: auto (default: cuda when a GPU is usable, else cpu), cpu, cuda, cuda:N";
// --qmm exact|fast on `cmd`: sets the process's quantized-matmul precision (loom/ops/quantized.h) while
// the command line is parsed, overriding LOOM_QMM. Every command that runs a model adds it.
void add_qmm_option(CLI::App* cmd);
inline constexpr const char* kDtypeHelp = "Compute dtype: auto (default: bfloat16 on cuda, float32 on cpu), float32, bfloat16, float16";

}  // namespace loom::cli
