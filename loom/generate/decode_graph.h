// Decode steps replayed as device graphs (CUDA graphs). A decode step of a small model is a few
// hundred short kernels, and queuing them one by one from the host costs more than running them;
// recorded once and replayed, the step costs one launch. DecodeGraph records the model's forward on
// static input buffers (token ids and the step's offset, both on the device) with the cache in
// "device positions" mode (Cache::device_offset: RoPE, the KV write and the attention masks read the
// offset from the device), then replays it for every step until the step's KV page changes (every
// 256 positions) or anything else the recording depends on does (the cache, its pages, the batch
// size): then it records again.
//
// It applies to one-token steps on a CUDA device over a cache of plain KVCache layers (the Llama
// family, MoE decoders); anything else runs the model's forward as usual. If recording fails (a
// model whose forward reads the device back or uploads host data per step), the failure is logged
// once, the step runs normally, and this DecodeGraph stays off. LOOM_CUDA_GRAPHS=0 turns graphs off
// (for comparisons: graphs on and off give identical logits, tests/cuda/decode_graph_test.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/device_runtime.h"
#include "loom/models/model.h"

namespace loom::generate {

class DecodeGraph {
 public:
  // enabled = false: every step runs eagerly. Default: on unless LOOM_CUDA_GRAPHS=0.
  explicit DecodeGraph(bool enabled = default_enabled());
  static bool default_enabled();

  // model.forward(tokens, cache, LogitsMode::last) for tokens int32 [B, 1] on the model's device,
  // from a replayed graph when it applies. The cache advances by one position either way.
  Array forward(models::LanguageModel& model, models::Cache& cache, const Array& tokens);

  bool enabled() const { return enabled_; }
  // Why recording failed (empty while it has not).
  const std::string& failure() const { return failure_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }

 private:
  bool applies(const models::Cache& cache, const Array& tokens) const;
  // A copy of the graph's output (the next replay overwrites out_).
  Array copy_of_output() const;

  bool enabled_;
  std::string failure_;
  std::unique_ptr<DeviceGraph> graph_;
  std::vector<const void*> key_;  // what the recording depends on (see forward)
  Array tokens_, offsets_, out_;  // static buffers the graph reads and writes
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace loom::generate
