#include "loom/generate/prompt_cache.h"

#include <array>
#include <memory>

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
    if (!kv)
      throw NotSupportedError(format_error("save_prompt_cache", "layer " + std::to_string(i) +
                                                                    " is not a KVCache or RotatingKVCache; only those are "
                                                                    "supported so far"));
    if (kv->offset() == 0) throw ValueError(format_error("save_prompt_cache", "the cache is empty"));
    auto [k, v] = kv->state();
    std::string l = std::to_string(i);
    tensors.emplace_back(l + ".0", contiguous(k));
    tensors.emplace_back(l + ".1", contiguous(v));
    if (auto* rot = dynamic_cast<const models::RotatingKVCache*>(kv)) {
      // meta_state (keep, max_size, offset, _idx) flattens to "0.<layer>.0" .. "0.<layer>.3".
      auto ms = rot->meta_state();
      for (size_t j = 0; j < ms.size(); ++j) meta["0." + l + "." + std::to_string(j)] = ms[j];
      meta["2." + l] = "RotatingKVCache";
    } else {
      meta["0." + l] = "";
      meta["2." + l] = "KVCache";
    }
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
    if (cls == "RotatingKVCache") {
      // As mlx-lm's load_prompt_cache, the file's class and meta state decide (from_state).
      std::array<std::string, 4> ms;
      for (size_t j = 0; j < ms.size(); ++j) {
        auto it = meta.find("0." + l + "." + std::to_string(j));
        if (it == meta.end())
          throw ValueError(format_error("load_prompt_cache", "'" + path + "': layer " + l +
                                                                 " is a RotatingKVCache without its meta state"));
        ms[j] = it->second;
      }
      auto rot = std::make_unique<models::RotatingKVCache>(1, 0);  // sizes come from the meta state
      rot->set_full_state(file->load(l + ".0"), file->load(l + ".1"), ms);
      cache.layers[i] = std::move(rot);
      continue;
    }
    auto* kv = dynamic_cast<models::KVCache*>(cache.layers[i].get());
    if (cls != "KVCache" || !kv || dynamic_cast<models::RotatingKVCache*>(kv))
      throw NotSupportedError(format_error("load_prompt_cache", "layer " + l + " is a " + cls +
                                                                    "; only KVCache and RotatingKVCache prompt caches "
                                                                    "are supported so far"));
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
