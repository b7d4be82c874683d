#include "loom/generate/decode_graph.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <typeinfo>

#include "loom/common/error.h"
#include "loom/ops/ops.h"

namespace loom::generate {

DecodeGraph::DecodeGraph(bool enabled) : enabled_(enabled) {}

bool DecodeGraph::default_enabled() {
  const char* v = std::getenv("LOOM_CUDA_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

bool DecodeGraph::applies(const models::Cache& cache, const Array& tokens) const {
  if (!enabled_ || !tokens.device().is_cuda() || tokens.ndim() != 2 || tokens.shape(1) != 1) return false;
  if (cache.layers.empty() || cache.device_offset.valid() || cache.offset() == 0) return false;
  for (const auto& layer : cache.layers) {
    if (!layer || typeid(*layer) != typeid(models::KVCache)) return false;
    const auto& kv = static_cast<const models::KVCache&>(*layer);
    if (kv.offset() != cache.offset() || kv.key_pages().empty()) return false;
  }
  return true;
}

Array DecodeGraph::copy_of_output() const {
  Array out = Array::empty(out_.shape(), out_.dtype(), out_.device());
  assign(out, out_);
  return out;
}

Array DecodeGraph::forward(models::LanguageModel& model, models::Cache& cache, const Array& tokens) {
  if (!applies(cache, tokens)) return model.forward(tokens, cache, models::LogitsMode::last);
  const Device dev = tokens.device();
  const int64_t B = tokens.shape(0), offset = cache.offset();
  // What the recording depends on: the batch size, the cache, the page holding this step's position
  // and every page before it (their pointers are baked into the recorded kernels), left padding.
  std::vector<const void*> key{&cache, reinterpret_cast<const void*>(static_cast<intptr_t>(B)),
                               reinterpret_cast<const void*>(static_cast<intptr_t>(offset / models::KVCache::kPageSize)),
                               cache.left_padding.valid() ? cache.left_padding.raw_data() : nullptr};
  for (auto& layer : cache.layers) {
    auto& kv = static_cast<models::KVCache&>(*layer);
    kv.reserve(offset + 1);
    const auto& pages = kv.key_pages();
    for (int64_t p = 0; p <= offset / models::KVCache::kPageSize; ++p) key.push_back(pages[p].raw_data());
  }
  if (!tokens_.valid() || tokens_.shape(0) != B || tokens_.device() != dev) {
    graph_.reset();
    tokens_ = Array::empty({B, 1}, Dtype::i32, dev);
    offsets_ = Array::empty({B}, Dtype::i32, dev);
  }
  assign(tokens_, tokens);
  assign(offsets_, full({B}, static_cast<double>(offset), Dtype::i32, dev));
  if (graph_ && key == key_) {
    graph_->launch();
    for (auto& layer : cache.layers) static_cast<models::KVCache&>(*layer).advance(1);
    ++replays_;
    return copy_of_output();
  }
  // Record. The recording's own forward advances the cache's host offsets (nothing runs yet); the
  // launch below then performs this step.
  graph_.reset();
  out_ = Array();
  DeviceRuntime& rt = require_device_runtime(dev, "decode graph");
  cache.device_offset = offsets_;
  try {
    rt.begin_capture(dev);
    Array out = model.forward(tokens_, cache, models::LogitsMode::last);
    graph_ = rt.end_capture(dev);
    out_ = out;
  } catch (const std::exception& e) {
    rt.abort_capture(dev);
    cache.device_offset = Array();
    for (auto& layer : cache.layers) {
      auto& kv = static_cast<models::KVCache&>(*layer);
      kv.trim(kv.offset() - offset);
    }
    enabled_ = false;
    failure_ = e.what();
    // (loom/common/log.h cannot join ops.h in one file: loom::log is also the op.)
    std::fprintf(stderr, "loom: decode runs without CUDA graphs: recording the step failed: %s\n", failure_.c_str());
    return model.forward(tokens, cache, models::LogitsMode::last);
  }
  cache.device_offset = Array();
  key_ = std::move(key);
  ++captures_;
  graph_->launch();
  ++replays_;
  return copy_of_output();
}

}  // namespace loom::generate
