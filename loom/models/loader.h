// Loading a model folder: read tensor names (safetensors headers), normalise config.json, build the
// architecture, run its sanitize over zero-copy mmap views, match keys strictly (missing and
// unexpected keys are errors naming the key and the file), then bind the views to the parameters,
// casting only where the requested dtype says so.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "loom/core/device.h"
#include "loom/core/dtype.h"
#include "loom/core/quant.h"
#include "loom/io/config.h"
#include "loom/models/model.h"

namespace loom::models {

struct LoadOptions {
  // Activation dtype. f32 (default) keeps bf16/f16 weights as stored (kernels convert on the fly);
  // bf16/f16 also casts f32 weights to it.
  Dtype dtype = Dtype::f32;
  // Where the weights live and the model computes. A non-CPU device gets every parameter uploaded
  // once after the strict match, after a preflight that the weights fit its free memory.
  Device device = Device::cpu();
};

struct LoadedModel {
  std::unique_ptr<LanguageModel> model;
  io::Config config;
  std::string model_type;
  std::string path;
  Dtype weight_dtype = Dtype::f32;  // most common floating dtype in the checkpoint
};

LoadedModel load_model(const std::string& dir, const LoadOptions& options = {});

// Switches the model's quantizable layers to quantized before binding, as mlx-lm decides it:
// a per-layer entry of config["quantization"] (or "quantization_config") wins (an object of its own
// bits/group_size/mode, or false), else a layer is quantized when `<path>.scales` is in the
// checkpoint — with the config's defaults, or inferred from the shapes when the config has none.
// Returns the number of layers switched. Throws ConfigError/IoError naming the layer when the
// format cannot be inferred or the config is malformed.
int apply_quantization(LanguageModel& model, const io::Config& config, const WeightMap& weights);
// The config's model-wide quantization (config["quantization"] or an mlx-style
// ["quantization_config"]), if any.
std::optional<QuantSpec> config_quantization(const io::Config& config);
// Builds the architecture of a config without weights.
std::unique_ptr<LanguageModel> create_model(const io::Config& config);

}  // namespace loom::models
