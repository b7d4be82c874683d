#include "loom/generate/prompt_cache.h"

#include <array>
#include <memory>
#include <stdexcept>

#include "loom/common/error.h"
#include "loom/io/safetensors.h"
#include "loom/ops/ops.h"

namespace loom::generate {

void save_prompt_cache(const std::string& path, const models::Cache& cache,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Array>> tensors;
  std::map<std::string, std::string> meta;
  for (size_t i = 0; i < cache.layers.size(); ++i) {
    std::string l = std::to_string(i);
    if (auto* qkv = dynamic_cast<const models::QuantizedKVCache*>(cache.layers[i].get())) {
      // mlx-lm's state is ((wq, scales, biases), (wq, scales, biases)): tree_flatten names them
      // "<layer>.<0 keys|1 values>.<0 wq|1 scales|2 biases>"; meta_state (offset, group_size, bits)
      // becomes "0.<layer>.0..2".
      if (qkv->offset() == 0) throw ValueError(format_error("save_prompt_cache", "the cache is empty"));
      auto [k, v] = qkv->quantized_state();
      for (auto [which, q] : {std::pair{"0", &k}, std::pair{"1", &v}}) {
        tensors.emplace_back(l + "." + which + ".0", q->wq);
        tensors.emplace_back(l + "." + which + ".1", q->scales);
        tensors.emplace_back(l + "." + which + ".2", q->biases);
      }
      auto ms = qkv->meta_state();
      for (size_t j = 0; j < ms.size(); ++j) meta["0." + l + "." + std::to_string(j)] = ms[j];
      meta["2." + l] = "QuantizedKVCache";
      continue;
    }
    auto* kv = dynamic_cast<const models::KVCache*>(cache.layers[i].get());
    if (!kv)
      throw NotSupportedError(format_error("save_prompt_cache",
                                           "layer " + l + " is not a KVCache, RotatingKVCache or QuantizedKVCache; "
                                                          "only those are supported so far"));
    if (kv->offset() == 0) throw ValueError(format_error("save_prompt_cache", "the cache is empty"));
    auto [k, v] = kv->state();
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
    if (cls == "QuantizedKVCache") {
      std::array<std::string, 3> ms;
      for (size_t j = 0; j < ms.size(); ++j) {
        auto it = meta.find("0." + l + "." + std::to_string(j));
        if (it == meta.end())
          throw ValueError(format_error("load_prompt_cache", "'" + path + "': layer " + l +
                                                                 " is a QuantizedKVCache without its meta state"));
        ms[j] = it->second;
      }
      int64_t m[3];
      for (int j = 0; j < 3; ++j) {
        try {
          size_t used = 0;
          m[j] = std::stoll(ms[j], &used);
          if (used != ms[j].size()) throw std::invalid_argument(ms[j]);
        } catch (const std::exception&) {
          throw ValueError(format_error("load_prompt_cache", "'" + path + "': layer " + l + " meta state entry '" +
                                                                 ms[j] + "' is not an integer"));
        }
      }
      // meta_state is (offset, group_size, bits); set_quantized_state copies into the cache's pages.
      auto q = std::make_unique<models::QuantizedKVCache>(static_cast<int>(m[1]), static_cast<int>(m[2]));
      auto load3 = [&](const std::string& which) {
        return QuantizedArrays{file->load(l + "." + which + ".0"), file->load(l + "." + which + ".1"),
                               file->load(l + "." + which + ".2")};
      };
      q->set_quantized_state(load3("0"), load3("1"), m[0]);
      cache.layers[i] = std::move(q);
      continue;
    }
    auto* kv = dynamic_cast<models::KVCache*>(cache.layers[i].get());
    if (cls != "KVCache" || !kv || dynamic_cast<models::RotatingKVCache*>(kv))
      throw NotSupportedError(format_error("load_prompt_cache",
                                           "layer " + l + " is a " + cls +
                                               "; only KVCache, RotatingKVCache and QuantizedKVCache prompt caches "
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
