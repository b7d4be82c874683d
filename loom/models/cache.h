// Per-layer caches (all cache types live in loom_models). KVCache stores keys and values in
// 256-position pages that are allocated once and never copied on growth; attention reads them as a
// list of blocks. Prompt-cache files use mlx-lm's [B, H, T, D] layout (state()/set_state()).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "loom/core/array.h"
#include "loom/ops/fast.h"

namespace loom::models {

// Base of every per-layer cache type.
class LayerCache {
 public:
  virtual ~LayerCache() = default;
  // Number of positions stored (including left padding).
  virtual int64_t offset() const = 0;
};

class KVCache : public LayerCache {
 public:
  static constexpr int64_t kPageSize = 256;

  // Appends k/v [B, Hkv, L, D] at the current offset and returns all stored positions as blocks.
  fast::KVBlocks update_and_fetch(const Array& keys, const Array& values);
  int64_t offset() const override { return offset_; }
  // Drops the last n positions (the pages stay allocated).
  void trim(int64_t n);
  // Contiguous copies [B, H, offset, D] (mlx-lm's layout).
  std::pair<Array, Array> state() const;
  void set_state(const Array& keys, const Array& values);

 private:
  void ensure_capacity(int64_t positions, const Array& like_k, const Array& like_v);
  std::vector<Array> k_pages_, v_pages_;  // each [B, Hkv, kPageSize, D]
  int64_t offset_ = 0;
};

// The whole model's cache: one entry per layer plus the batch's left padding.
class Cache {
 public:
  std::vector<std::unique_ptr<LayerCache>> layers;
  // Left padding per batch row (int32 [B]); empty for a single unpadded sequence.
  Array left_padding;

  int64_t offset() const { return layers.empty() ? 0 : layers[0]->offset(); }
  template <typename T>
  T& at(size_t i) {
    return static_cast<T&>(*layers.at(i));
  }
};

}  // namespace loom::models
