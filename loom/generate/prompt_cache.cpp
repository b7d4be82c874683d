#include "loom/generate/prompt_cache.h"

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <stdexcept>

#include "loom/common/error.h"
#include "loom/io/safetensors.h"
#include "loom/ops/ops.h"

namespace loom::generate {

namespace {

// ---- recurrent (ArraysCache) and composite (CacheList) layers ----
using TensorList = std::vector<std::pair<std::string, Array>>;
using MetaMap = std::map<std::string, std::string>;

// A contiguous copy the cache owns (a loaded tensor is a view of the mapped file).
Array owned_copy(const Array& a) {
  Array out = Array::empty(a.shape(), a.dtype(), a.device());
  assign(out, a);
  return out;
}

// Writes one cache's state as mlx-lm's tree_flatten names it: tensors under `t` ("<layer>" at the top,
// "<layer>.<j>" inside a CacheList) and its meta_state under the metadata key `m` ("0.<layer>" at the
// top, "0.<layer>.1.<j>" inside a CacheList). Returns mlx-lm's class name.
//  - ArraysCache: state (cache list, left_padding, lengths) -> "<t>.0.<i>" per state array, "<t>.1" and
//    "<t>.2" empty f32 arrays (mlx-lm's stand-in for None; loom keeps the batch's padding in
//    Cache::left_padding, and a saved cache is a single unpadded sequence); meta_state "".
//  - CacheList: state [child states] -> "<t>.<j>..."; meta_state ([class names], [child meta states]) ->
//    "<m>.0.<j>" = class, "<m>.1.<j>..." = child meta state.
//  - KVCache / RotatingKVCache / QuantizedKVCache / ChunkedKVCache as the top-level layers are written.
std::string save_state_tree(const models::LayerCache& c, const std::string& t, const std::string& m,
                            TensorList& tensors, MetaMap& meta) {
  auto put_meta = [&](const auto& ms) {
    for (size_t j = 0; j < ms.size(); ++j) meta[m + "." + std::to_string(j)] = ms[j];
  };
  if (auto* a = dynamic_cast<const models::ArraysCache*>(&c)) {
    for (size_t i = 0; i < a->size(); ++i) {
      if (!(*a)[i].valid())
        throw ValueError(format_error("save_prompt_cache", "the cache is empty (a recurrent state is unset)"));
      tensors.emplace_back(t + ".0." + std::to_string(i), contiguous((*a)[i]));
    }
    tensors.emplace_back(t + ".1", zeros({0}, Dtype::f32));
    tensors.emplace_back(t + ".2", zeros({0}, Dtype::f32));
    meta[m] = "";
    return "ArraysCache";
  }
  if (auto* list = dynamic_cast<const models::CacheList*>(&c)) {
    if (list->caches.empty()) throw ValueError(format_error("save_prompt_cache", "a CacheList holds no caches"));
    for (size_t j = 0; j < list->caches.size(); ++j) {
      std::string js = std::to_string(j);
      meta[m + ".0." + js] = save_state_tree(*list->caches[j], t + "." + js, m + ".1." + js, tensors, meta);
    }
    return "CacheList";
  }
  if (c.offset() == 0) throw ValueError(format_error("save_prompt_cache", "the cache is empty"));
  if (auto* q = dynamic_cast<const models::QuantizedKVCache*>(&c)) {
    auto [k, v] = q->quantized_state();
    for (auto [which, qa] : {std::pair{"0", &k}, std::pair{"1", &v}}) {
      tensors.emplace_back(t + "." + which + ".0", qa->wq);
      tensors.emplace_back(t + "." + which + ".1", qa->scales);
      tensors.emplace_back(t + "." + which + ".2", qa->biases);
    }
    put_meta(q->meta_state());
    return "QuantizedKVCache";
  }
  if (auto* ch = dynamic_cast<const models::ChunkedKVCache*>(&c)) {
    auto [k, v] = ch->state();
    tensors.emplace_back(t + ".0", k);
    tensors.emplace_back(t + ".1", v);
    put_meta(ch->meta_state());
    return "ChunkedKVCache";
  }
  auto* kv = dynamic_cast<const models::KVCache*>(&c);
  if (!kv) throw NotSupportedError(format_error("save_prompt_cache", "a layer cache of unknown type"));
  auto [k, v] = kv->state();
  tensors.emplace_back(t + ".0", contiguous(k));
  tensors.emplace_back(t + ".1", contiguous(v));
  if (auto* rot = dynamic_cast<const models::RotatingKVCache*>(kv)) {
    put_meta(rot->meta_state());
    return "RotatingKVCache";
  }
  meta[m] = "";
  return "KVCache";
}

// The meta state entries "<m>.0" .. "<m>.<N-1>".
template <size_t N>
std::array<std::string, N> read_meta(const MetaMap& meta, const std::string& m, const std::string& what,
                                     const std::string& path) {
  std::array<std::string, N> ms;
  for (size_t j = 0; j < N; ++j) {
    auto it = meta.find(m + "." + std::to_string(j));
    if (it == meta.end())
      throw ValueError(format_error("load_prompt_cache", "'" + path + "': " + what + " lacks its meta state"));
    ms[j] = it->second;
  }
  return ms;
}

// A prompt-cache file whose tensors are moved to the model's device as they are read, so a cache
// loaded for a GPU model continues on the GPU.
struct StateFile {
  const io::SafetensorsFile& file;
  Device device;
  Array load(const std::string& key) const { return to_device(file.load(key), device); }
  const io::TensorInfo* find(const std::string& key) const { return file.find(key); }
};

// The device of the model's weights (the CPU for a model without parameters).
Device model_device(const models::LanguageModel& model) {
  // parameters() only lists the slots; it does not change the model.
  auto params = const_cast<models::LanguageModel&>(model).parameters();
  for (const auto& p : params)
    if (p.value && p.value->valid()) return p.value->device();
  return Device::cpu();
}

// The inverse of save_state_tree for a cache of class `cls`. `like` is the model's own cache for this
// place (from make_cache), used to check an ArraysCache's number of state arrays; may be null.
std::unique_ptr<models::LayerCache> load_state_tree(const StateFile& file, const MetaMap& meta,
                                                    const std::string& cls, const std::string& t, const std::string& m,
                                                    const std::string& path, const models::LayerCache* like) {
  const std::string what = "layer cache '" + t + "' (" + cls + ")";
  if (cls == "ArraysCache") {
    // mlx-lm writes "<t>.0.<i>" (state = (cache list, left_padding, lengths)); its releases before
    // that wrote the bare list, "<t>.<i>". Both load.
    bool nested = file.find(t + ".0.0") != nullptr;
    std::string base = nested ? t + ".0." : t + ".";
    size_t n = 0;
    while (file.find(base + std::to_string(n))) ++n;
    if (n == 0) throw ValueError(format_error("load_prompt_cache", "'" + path + "': " + what + " holds no state"));
    if (like && !dynamic_cast<const models::ArraysCache*>(like))
      throw ValueError(
          format_error("load_prompt_cache", "'" + path + "': " + what + " is recurrent but the model's layer is not"));
    if (auto* want = dynamic_cast<const models::ArraysCache*>(like); want && want->size() != n)
      throw ValueError(format_error("load_prompt_cache", "'" + path + "': " + what + " holds " + std::to_string(n) +
                                                             " state arrays but the model's layer has " +
                                                             std::to_string(want->size())));
    if (nested)
      for (const char* extra : {".1", ".2"})
        if (const io::TensorInfo* info = file.find(t + extra); info && shape_size(info->shape) > 0)
          throw NotSupportedError(format_error("load_prompt_cache", "'" + path + "': " + what +
                                                                        " is a padded batch cache (left_padding or "
                                                                        "lengths set); only single sequences load"));
    auto a = std::make_unique<models::ArraysCache>(n);
    for (size_t i = 0; i < n; ++i) (*a)[i] = owned_copy(file.load(base + std::to_string(i)));
    return a;
  }
  if (cls == "CacheList") {
    auto list = std::make_unique<models::CacheList>();
    auto* like_list = dynamic_cast<const models::CacheList*>(like);
    if (like && !like_list)
      throw ValueError(format_error("load_prompt_cache",
                                    "'" + path + "': " + what + " is a CacheList but the model's layer is not"));
    for (size_t j = 0;; ++j) {
      std::string js = std::to_string(j);
      auto it = meta.find(m + ".0." + js);
      if (it == meta.end()) break;
      const models::LayerCache* like_child =
          like_list && j < like_list->caches.size() ? like_list->caches[j].get() : nullptr;
      list->caches.push_back(load_state_tree(file, meta, it->second, t + "." + js, m + ".1." + js, path, like_child));
    }
    if (list->caches.empty())
      throw ValueError(format_error("load_prompt_cache", "'" + path + "': " + what + " lists no caches"));
    if (like_list && like_list->caches.size() != list->caches.size())
      throw ValueError(format_error(
          "load_prompt_cache", "'" + path + "': " + what + " holds " + std::to_string(list->caches.size()) +
                                   " caches but the model's layer has " + std::to_string(like_list->caches.size())));
    return list;
  }
  if (cls == "KVCache") {
    auto kv = std::make_unique<models::KVCache>();
    kv->set_state(file.load(t + ".0"), file.load(t + ".1"));
    return kv;
  }
  if (cls == "RotatingKVCache") {
    auto rot = std::make_unique<models::RotatingKVCache>(1, 0);  // sizes come from the meta state
    rot->set_full_state(file.load(t + ".0"), file.load(t + ".1"), read_meta<4>(meta, m, what, path));
    return rot;
  }
  if (cls == "ChunkedKVCache") {
    auto ch = std::make_unique<models::ChunkedKVCache>(1);  // chunk_size comes from the meta state
    ch->set_full_state(file.load(t + ".0"), file.load(t + ".1"), read_meta<2>(meta, m, what, path));
    return ch;
  }
  if (cls == "QuantizedKVCache") {
    auto ms = read_meta<3>(meta, m, what, path);
    int64_t v[3];
    for (int j = 0; j < 3; ++j) {
      try {
        size_t used = 0;
        v[j] = std::stoll(ms[j], &used);
        if (used != ms[j].size()) throw std::invalid_argument(ms[j]);
      } catch (const std::exception&) {
        throw ValueError(format_error(
            "load_prompt_cache", "'" + path + "': " + what + " meta state entry '" + ms[j] + "' is not an integer"));
      }
    }
    auto q = std::make_unique<models::QuantizedKVCache>(static_cast<int>(v[1]), static_cast<int>(v[2]));
    auto load3 = [&](const std::string& which) {
      return QuantizedArrays{file.load(t + "." + which + ".0"), file.load(t + "." + which + ".1"),
                             file.load(t + "." + which + ".2")};
    };
    q->set_quantized_state(load3("0"), load3("1"), v[0]);
    return q;
  }
  throw NotSupportedError(format_error("load_prompt_cache", "'" + path + "': " + what + " is of an unsupported class"));
}

// mlx-lm's ArraysCache counts no positions, so a loaded recurrent layer takes the offset of the file's
// attention caches (every layer has seen the same tokens). Without any (a purely recurrent model) it
// stays 0: there the offset is read only by the context-window check, and these models have none.
void restore_recurrent_offsets(models::Cache& cache) {
  int64_t known = -1;
  std::vector<models::ArraysCache*> recurrent;
  std::function<void(models::LayerCache*)> visit = [&](models::LayerCache* c) {
    if (auto* a = dynamic_cast<models::ArraysCache*>(c))
      recurrent.push_back(a);
    else if (auto* list = dynamic_cast<models::CacheList*>(c))
      for (auto& child : list->caches) visit(child.get());
    else
      known = std::max(known, c->offset());
  };
  for (auto& layer : cache.layers) visit(layer.get());
  if (known >= 0)
    for (models::ArraysCache* a : recurrent) a->set_offset(known);
}

}  // namespace

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
    if (auto* chunked = dynamic_cast<const models::ChunkedKVCache*>(cache.layers[i].get())) {
      // The stored positions [start_position, offset) as "<layer>.0/1"; meta_state (chunk_size,
      // start_position) flattens to "0.<layer>.0" and "0.<layer>.1".
      if (chunked->size() == 0) throw ValueError(format_error("save_prompt_cache", "the cache is empty"));
      auto [k, v] = chunked->state();
      tensors.emplace_back(l + ".0", k);
      tensors.emplace_back(l + ".1", v);
      auto ms = chunked->meta_state();
      for (size_t j = 0; j < ms.size(); ++j) meta["0." + l + "." + std::to_string(j)] = ms[j];
      meta["2." + l] = "ChunkedKVCache";
      continue;
    }
    if (dynamic_cast<const models::ArraysCache*>(cache.layers[i].get()) ||
        dynamic_cast<const models::CacheList*>(cache.layers[i].get())) {
      // Recurrent and composite layers: mlx-lm's tree_flatten of their state (save_state_tree).
      meta["2." + l] = save_state_tree(*cache.layers[i], l, "0." + l, tensors, meta);
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
  const StateFile states{*file, model_device(model)};
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
      rot->set_full_state(states.load(l + ".0"), states.load(l + ".1"), ms);
      cache.layers[i] = std::move(rot);
      continue;
    }
    if (cls == "ChunkedKVCache") {
      std::array<std::string, 2> ms;
      for (size_t j = 0; j < ms.size(); ++j) {
        auto it = meta.find("0." + l + "." + std::to_string(j));
        if (it == meta.end())
          throw ValueError(format_error("load_prompt_cache", "'" + path + "': layer " + l +
                                                                 " is a ChunkedKVCache without its meta state"));
        ms[j] = it->second;
      }
      auto chunked = std::make_unique<models::ChunkedKVCache>(1);  // chunk_size comes from the meta state
      chunked->set_full_state(states.load(l + ".0"), states.load(l + ".1"), ms);
      cache.layers[i] = std::move(chunked);
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
        return QuantizedArrays{states.load(l + "." + which + ".0"), states.load(l + "." + which + ".1"),
                               states.load(l + "." + which + ".2")};
      };
      q->set_quantized_state(load3("0"), load3("1"), m[0]);
      cache.layers[i] = std::move(q);
      continue;
    }
    if (cls == "ArraysCache" || cls == "CacheList") {
      cache.layers[i] = load_state_tree(states, meta, cls, l, "0." + l, path, cache.layers[i].get());
      continue;
    }
    auto* kv = dynamic_cast<models::KVCache*>(cache.layers[i].get());
    if (cls != "KVCache" || !kv || dynamic_cast<models::RotatingKVCache*>(kv))
      throw NotSupportedError(format_error("load_prompt_cache",
                                           "layer " + l + " is a " + cls +
                                               "; only KVCache, RotatingKVCache and QuantizedKVCache prompt caches "
                                               "are supported so far"));
    // set_state copies into the cache's own pages, so the mapping can go away afterwards.
    kv->set_state(states.load(l + ".0"), states.load(l + ".1"));
  }
  restore_recurrent_offsets(cache);
  if (metadata) {
    metadata->clear();
    for (const auto& [key, value] : meta)
      if (key.rfind("1.", 0) == 0) (*metadata)[key.substr(2)] = value;
  }
  return cache;
}

}  // namespace loom::generate
