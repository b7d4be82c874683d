// Hugging Face `quantization_config` formats that mlx-lm converts at load (mlx_lm/utils.py load_model,
// models/gpt_oss.py and models/deepseek_v3.py sanitize), rewritten into loom's formats on the raw weight
// map, before the model's sanitize and the strict match:
//  - "awq" (AutoAWQ GEMM), "gptq" (AutoGPTQ v1 / GPTQModel v2 checkpoints, bits 2/4/8) and
//    "compressed-tensors" pack-quantized int (bits 2/4/8): kept quantized as MLX affine (w = scale * q + bias,
//    bias = -zero * scale), repacked into LSB-first uint32 rows [out, in*bits/32] with f32 scales/biases
//    [out, in/group]. A group larger than 128 (or per-channel) is stored as MLX groups of 128/64/32 with the
//    scale repeated, which is exact. Activation-ordered layers (a non-trivial g_idx) and groups no MLX group
//    size divides are dequantized instead.
//  - "compressed-tensors" naive/int-quantized int8: kept as MLX affine 8-bit the same way (codes + 128).
//  - "fp8" (DeepSeek-V3 / Qwen3-FP8 / Mistral: float8_e4m3fn weight * weight_scale_inv, per tensor or per
//    [128, 128] block, partial edge blocks included) and "compressed-tensors" float-quantized FP8 (weight *
//    weight_scale per tensor / channel / group / block): dequantized to the float dtype (as mlx-lm).
//  - "mxfp4" (gpt-oss): `<name>_blocks` uint8 [..., G, 16] + `<name>_scales` uint8 [..., G] are MLX mxfp4
//    already (E2M1 element 2j in the low nibble of byte j, E8M0 scales): viewed as uint32 rows [..., G*4] and
//    renamed `<name>.weight` / `<name>.scales`, no arithmetic (mlx-lm's gpt_oss sanitize does the same view).
// Exactness: repacked layers dequantize bit-exactly to the format's (q - zero) * scale computed in f32 (f16 and
// bf16 scales times small integers are exact in f32); dequantized FP8 is the f32 product rounded once to the
// target dtype.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "loom/core/dtype.h"
#include "loom/core/quant.h"
#include "loom/io/config.h"
#include "loom/models/model.h"

namespace loom::models {

struct HfQuantOptions {
  // dtype of the layers dequantized at load. Default: the config's torch_dtype when it is float16, bfloat16
  // or float32, else bfloat16.
  std::optional<Dtype> dequant_dtype;
};

struct HfQuantSummary {
  std::string method;                       // the quant_method handled
  int repacked = 0;                         // layers kept quantized (MLX affine or mxfp4)
  int dequantized = 0;                      // layers dequantized to float
  std::optional<QuantSpec> spec;            // the most common format of the repacked layers
  std::map<std::string, QuantSpec> layers;  // every repacked layer (checkpoint key prefix) and its format
};

// The quant_method values convert_hf_quantization handles.
const std::vector<std::string>& hf_quant_methods();

// When `config` (or its text_config) has a `quantization_config` with a quant_method other than MLX's own
// (and no MLX `quantization` object), rewrites `weights` in place as described above and updates `config`:
// "quantization" and "quantization_config" become the MLX object of the repacked layers ({group_size, bits,
// mode} of the most common format plus a per-layer entry for each layer that differs), or
// "quantization_config" becomes null when every layer was dequantized. Returns nullopt (and changes nothing)
// for MLX checkpoints and unquantized ones. `file_of(key)` names the file of a tensor in error messages.
// Throws NotSupportedError for an unknown quant_method (listing the supported ones), bits, group size or
// format, and IoError naming the tensor and its file for missing or inconsistent tensors.
std::optional<HfQuantSummary> convert_hf_quantization(io::Config& config, WeightMap& weights,
                                                      const std::function<std::string(const std::string&)>& file_of,
                                                      const HfQuantOptions& options = {});

}  // namespace loom::models
