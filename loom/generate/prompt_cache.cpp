#include "loom/generate/prompt_cache.h"

#include "loom/common/error.h"
#include "loom/io/safetensors.h"
#include "loom/ops/ops.h"

namespace loom::generate {

void save_prompt_cache(const std::string& path, const models::Cache& cache,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Array>> tensors;
  std::map<std::string, std::string> meta;
  for (size_t i = 0; i < cache.layers.size(); ++i) {
    auto* kv = dynamic_cast<const models::KVCache*>(cache.layers[i].get());
    if (!kv) throw NotSupportedError(format_error("save_prompt_cache", "layer " + std::to_string(i) +
                                                                           " is not a KVCache; only KVCache is supported so far"));
    if (kv->offset() == 0) throw ValueError(format_error("save_prompt_cache", "the cache is empty"));
    auto [k, v] = kv->state();
    std::string l = std::to_string(i);
    tensors.emplace_back(l + ".0", contiguous(k));
    tensors.emplace_back(l + ".1", contiguous(v));
    meta["0." + l] = "";
    meta["2." + l] = "KVCache";
  }
  for (const auto& [key, value] : metadata) meta["1." + key] = value;
  io::save_safetensors(path, tensors, meta);
}

models::Cache load_prompt_cache(const std::string& path, const models::LanguageModel& model,
                                std::map<std::string, std::string>* metadata) {
  auto file = io::SafetensorsFile::open(path);
  const auto& meta = file->metadata();
  models::Cache cache = model.make_cache();
  size_t n = 0;
  while (meta.count("2." + std::to_string(n))) ++n;
  if (n != cache.layers.size())
    throw ValueError(format_error("load_prompt_cache", "'" + path + "' holds " + std::to_string(n) +
                                                           " layers but the model has " + std::to_string(cache.layers.size())));
  for (size_t i = 0; i < n; ++i) {
    std::string l = std::to_string(i);
    const std::string& cls = meta.at("2." + l);
    auto* kv = dynamic_cast<models::KVCache*>(cache.layers[i].get());
    if (cls != "KVCache" || !kv)
      throw NotSupportedError(format_error("load_prompt_cache", "layer " + l + " is a " + cls +
                                                                    "; only KVCache prompt caches are supported so far"));
    // set_state copies into the cache's own pages, so the mapping can go away afterwards.
    kv->set_state(file->load(l + ".0"), file->load(l + ".1"));
  }
  if (metadata) {
    metadata->clear();
    for (const auto& [key, value] : meta)
      if (key.rfind("1.", 0) == 0) (*metadata)[key.substr(2)] = value;
  }
  return cache;
}

}  // namespace loom::generate
