#include "loom/models/loader.h"

#include <map>
#include <set>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/io/safetensors.h"
#include "loom/models/registry.h"
#include "loom/ops/ops.h"

namespace loom::models {

std::unique_ptr<LanguageModel> create_model(const io::Config& config) {
  if (!config.has("model_type"))
    throw ConfigError(format_error("config", "missing 'model_type' in " + config.source()));
  return find_model(config.get_string("model_type")).create(config);
}

namespace {

std::string where_from(const io::WeightStore& store, const std::string& key) {
  return store.contains(key) ? store.file_of(key) : std::string("(produced by sanitize)");
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
}

}  // namespace

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
  out.model->sanitize(weights);
  bind_weights(*out.model, weights, store, dir, opt);
  out.model->dtype = opt.dtype;
  return out;
}

}  // namespace loom::models
