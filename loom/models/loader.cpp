#include "loom/models/loader.h"

#include <map>
#include <set>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/io/safetensors.h"
#include "loom/models/hf_quant.h"
#include "loom/models/registry.h"
#include "loom/nn/layers.h"
#include "loom/ops/ops.h"

namespace loom::models {

std::unique_ptr<LanguageModel> create_model(const io::Config& config) {
  if (!config.has("model_type"))
    throw ConfigError(format_error("config", "missing 'model_type' in " + config.source()));
  return find_model(config.get_string("model_type")).create(config);
}

namespace {

QuantMode parse_quant_mode(const std::string& m, const std::string& where) {
  for (QuantMode q : {QuantMode::affine, QuantMode::mxfp4, QuantMode::nvfp4, QuantMode::mxfp8})
    if (m == quant_mode_name(q)) return q;
  throw ConfigError(format_error("config", "unknown quantization mode '" + m + "' in " + where));
}

// {group_size, bits, mode} of a quantization object (missing keys take the mode's defaults).
QuantSpec parse_quant_spec(const io::Config& q, const std::string& where) {
  QuantSpec spec = default_quant_spec(parse_quant_mode(q.get_string("mode", "affine"), where));
  spec.group_size = static_cast<int>(q.get_int("group_size", spec.group_size));
  spec.bits = static_cast<int>(q.get_int("bits", spec.bits));
  if (!quant_spec_valid(spec)) throw ConfigError(format_error("config", "unsupported quantization " + quant_spec_str(spec) + " in " + where));
  return spec;
}

// The quantization object mlx-lm reads: "quantization", else an mlx-style "quantization_config".
std::optional<io::Config> quant_object(const io::Config& c) {
  if (c.is_object("quantization")) return c.sub("quantization");
  if (!c.is_object("quantization_config")) return std::nullopt;
  io::Config q = c.sub("quantization_config");
  if (!q.has("quant_method")) return q;
  std::string method = q.get_string("quant_method");
  if (method == "mxfp4") return io::Config::parse(R"({"group_size": 32, "bits": 4, "mode": "mxfp4"})", "quant_method mxfp4");
  throw NotSupportedError(format_error("load", "quantization_config with quant_method '" + method + "' (" + c.source() +
                                                   ") is not supported yet"));
}

// Infers a layer's format from its packed shapes when no config says it.
QuantSpec infer_quant_spec(const std::string& path, const nn::Quantizable& layer, const WeightMap& w) {
  auto fail = [&](const std::string& why) {
    return IoError(format_error("load", "cannot infer the quantization of '" + path + "': " + why));
  };
  auto wi = w.find(path + ".weight");
  const Array& sc = w.at(path + ".scales");
  if (wi == w.end()) throw fail("'" + path + ".scales' is present but '" + path + ".weight' is missing");
  const Array& wq = wi->second;
  int64_t cols = layer.quant_axis_size();
  if (wq.dtype() != Dtype::u32 || wq.ndim() < 1 || sc.ndim() < 1)
    throw fail("packed weight must be uint32, got " + std::string(name(wq.dtype())) + " " + shape_str(wq.shape()));
  int64_t packed = wq.shape(-1) * 32, ng = sc.shape(-1);
  if (packed % cols != 0 || ng <= 0 || cols % ng != 0)
    throw fail("bits not inferable from weight " + shape_str(wq.shape()) + " and scales " + shape_str(sc.shape()) +
               " for " + std::to_string(cols) + " input features");
  QuantSpec spec{QuantMode::affine, static_cast<int>(packed / cols), static_cast<int>(cols / ng)};
  bool has_biases = w.count(path + ".biases") != 0;
  if (!has_biases) {
    if (sc.dtype() != Dtype::u8)
      throw fail("missing '" + path + ".biases' (scales are " + std::string(name(sc.dtype())) +
                 ", so the layer is affine-quantized and needs biases)");
    if (spec.bits == 4 && spec.group_size == 32) spec.mode = QuantMode::mxfp4;
    else if (spec.bits == 4 && spec.group_size == 16) spec.mode = QuantMode::nvfp4;
    else if (spec.bits == 8 && spec.group_size == 32) spec.mode = QuantMode::mxfp8;
    else throw fail("uint8 scales without biases but bits=" + std::to_string(spec.bits) + " group_size=" +
                    std::to_string(spec.group_size) + " match no fp format");
  }
  if (!quant_spec_valid(spec)) throw fail("inferred " + quant_spec_str(spec) + ", which is not a supported format");
  return spec;
}

// Checks the dtypes of bound quantized layers (shapes were checked by the strict match).
void check_quantized_dtypes(LanguageModel& model) {
  for (auto& [path, mod] : model.modules()) {
    auto* q = dynamic_cast<nn::Quantizable*>(mod);
    if (!q || !q->quantized()) continue;
    const nn::QuantizedWeight& qw = *q->quantized();
    if (qw.w.dtype() != Dtype::u32)
      throw IoError(format_error("load", "quantized weight '" + path + ".weight' must be uint32, got " + std::string(name(qw.w.dtype()))));
    bool affine = qw.spec.mode == QuantMode::affine;
    if (affine != is_floating(qw.scales.dtype()) || (!affine && qw.scales.dtype() != Dtype::u8))
      throw IoError(format_error("load", "'" + path + ".scales' has dtype " + std::string(name(qw.scales.dtype())) + ", expected " +
                                             (affine ? "a floating dtype" : "uint8") + " for " + quant_spec_str(qw.spec)));
  }
}

std::string where_from(const io::WeightStore& store, const std::string& key) {
  return store.contains(key) ? store.file_of(key) : std::string("(produced by sanitize)");
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

// Uploads the bound parameters to `device`, after checking they fit its free memory (with 5% and
// 256 MiB spare for activations and the KV cache) — so a model too large fails before it starts.
void upload(std::vector<nn::ParamSlot>& slots, const std::string& dir, Device device) {
  size_t bytes = 0;
  for (auto& s : slots) bytes += s.value->nbytes();
  size_t free_b = 0, total_b = 0;
  device_memory(device, free_b, total_b);
  double need = static_cast<double>(bytes) * 1.05 + 256.0 * (1 << 20);
  if (need > static_cast<double>(free_b))
    throw Error(format_error("load", "the weights of " + dir + " need " + gib(static_cast<double>(bytes)) + " on " +
                                         describe_device(device) + ", which has " + gib(static_cast<double>(free_b)) +
                                         " free of " + gib(static_cast<double>(total_b)) +
                                         " (quantize the model or use --device cpu)"));
  for (auto& s : slots) *s.value = to_device(*s.value, device);
  synchronize(device);
}

void bind_weights(LanguageModel& model, WeightMap& weights, const io::WeightStore& store, const std::string& dir,
          const LoadOptions& opt) {
  auto slots = model.parameters();
  std::set<std::string> expected;
  for (const auto& s : slots) expected.insert(s.path);
  for (const auto& [key, value] : weights)
    if (!expected.count(key))
      throw IoError(format_error("load", "unexpected weight '" + key + "' in " + where_from(store, key) +
                                             " (the model has no such parameter)"));
  for (auto& slot : slots) {
    auto it = weights.find(slot.path);
    if (it == weights.end())
      throw IoError(format_error("load", "missing weight '" + slot.path + "' in " + dir + " (looked in " +
                                             std::to_string(store.files().size()) + " safetensors file(s))"));
    const Array& w = it->second;
    if (w.shape() != slot.shape)
      throw IoError(format_error("load", "weight '" + slot.path + "' in " + where_from(store, slot.path) + " has shape " +
                                             shape_str(w.shape()) + ", expected " + shape_str(slot.shape)));
    Array v = w;
    if (is_floating(v.dtype())) {
      bool storage_only = !is_compute_dtype(v.dtype());
      bool narrow = opt.dtype != Dtype::f32 && v.dtype() != opt.dtype;
      if (storage_only || narrow) v = astype(v, storage_only && opt.dtype == Dtype::f32 ? Dtype::f32 : opt.dtype);
    }
    *slot.value = v;
  }
  if (!opt.device.is_cpu()) upload(slots, dir, opt.device);
}

}  // namespace

std::optional<QuantSpec> config_quantization(const io::Config& config) {
  auto q = quant_object(config);
  if (!q) return std::nullopt;
  return parse_quant_spec(*q, config.source());
}

int apply_quantization(LanguageModel& model, const io::Config& config, const WeightMap& weights) {
  std::optional<io::Config> q = quant_object(config);
  std::optional<QuantSpec> base;
  if (q) base = parse_quant_spec(*q, config.source());
  return nn::quantize_module(model, [&](const std::string& path, nn::Quantizable& layer) -> std::optional<QuantSpec> {
    if (q && q->has(path)) {
      if (q->is_object(path)) return parse_quant_spec(q->sub(path), config.source() + " [quantization." + path + "]");
      return q->get_bool(path, false) ? base : std::nullopt;
    }
    if (!weights.count(path + ".scales")) return std::nullopt;
    return base ? *base : infer_quant_spec(path, layer, weights);
  });
}

std::map<std::string, QuantSpec> quantize_model(LanguageModel& model, const QuantSpec& base) {
  std::map<std::string, QuantSpec> special;
  nn::quantize_module(model, [&](const std::string& path, nn::Quantizable& layer) -> std::optional<QuantSpec> {
    if (layer.quant_axis_size() % base.group_size != 0) return std::nullopt;
    std::optional<QuantSpec> spec = model.quant_predicate(path, layer, base);
    if (spec && !(*spec == base)) special[path] = *spec;
    return spec;
  });
  return special;
}

LoadedModel load_model(const std::string& dir, const LoadOptions& opt) {
  LoadedModel out;
  out.path = dir;
  out.config = io::Config::load(dir);
  out.model_type = out.config.get_string("model_type", "");
  out.model = create_model(out.config);
  io::WeightStore store = io::WeightStore::open_folder(dir);
  WeightMap weights;
  std::map<Dtype, int64_t> dtype_count;
  for (const auto& name : store.names()) {
    weights.emplace(name, store.load(name));
    const auto& info = store.info(name);
    if (is_floating(info.dtype)) dtype_count[info.dtype] += shape_size(info.shape);
  }
  int64_t best = -1;
  for (auto [dt, n] : dtype_count)
    if (n > best) best = n, out.weight_dtype = dt;
  // Hugging Face quantization_config formats (AWQ, GPTQ, compressed-tensors, FP8, gpt-oss mxfp4) become MLX
  // quantized or float tensors first, and the config's quantization object says which (hf_quant.h).
  convert_hf_quantization(out.config, weights, [&](const std::string& key) { return where_from(store, key); });
  out.model->sanitize(weights);
  apply_quantization(*out.model, out.config, weights);
  bind_weights(*out.model, weights, store, dir, opt);
  check_quantized_dtypes(*out.model);
  out.model->dtype = opt.dtype;
  return out;
}

}  // namespace loom::models
