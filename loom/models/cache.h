// Per-layer caches (all cache types live in loom_models). KVCache stores keys and values in
// 256-position pages that are allocated once and never copied on growth; attention reads them as a
// list of blocks. RotatingKVCache (mlx-lm's, for --max-kv-size) holds at most max_size positions:
// the first `keep` forever, the rest in a ring. Prompt-cache files use mlx-lm's [B, H, T, D] layout
// (state()/set_state()).
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/array.h"
#include "loom/core/quant.h"
#include "loom/ops/fast.h"
#include "loom/ops/quantized.h"

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
  virtual fast::KVBlocks update_and_fetch(const Array& keys, const Array& values);
  // The same step for a captured (replayed) decode step, whose work must not depend on the host's
  // offset: k/v are written at the storage position the device holds in `position` (int32, one
  // element, == offset() when the step runs), and the blocks returned are every allocated page up to
  // the one holding offset() (length = their capacity; attention hides the positions past each
  // query by the causal rule on device-side query offsets). The new positions must lie in the page
  // holding offset(), so a replay stays valid for every step until that page is full.
  fast::KVBlocks update_and_fetch_at(const Array& keys, const Array& values, const Array& position);
  // update_and_fetch_at with the write left to the caller (a fused op): the pages the L new positions of
  // keys/values [B, H, L, D] land in (allocated now), the position their first slot stands for, and the
  // blocks to attend. The caller writes, then counts the positions with advance(L).
  struct PageWrite {
    Array k_page, v_page;
    int64_t base = 0;
    fast::KVBlocks blocks;
  };
  PageWrite write_at(const Array& keys, const Array& values);
  // Allocates pages up to `positions` like the existing ones; false when there are none yet.
  bool reserve(int64_t positions);
  // Counts n positions written by a replayed step (update_and_fetch_at's host bookkeeping).
  void advance(int64_t n) { offset_ += n; }
  // The key pages (their identity tells a replayed step whether its captured pointers still hold).
  const std::vector<Array>& key_pages() const { return k_pages_; }
  // Positions the allocated pages hold, and the bytes one more position costs (0 before the first page).
  int64_t capacity() const { return static_cast<int64_t>(k_pages_.size()) * kPageSize; }
  int64_t bytes_per_position() const {
    return k_pages_.empty() ? 0 : static_cast<int64_t>(k_pages_[0].nbytes() + v_pages_[0].nbytes()) / kPageSize;
  }
  int64_t offset() const override { return offset_; }
  // Drops the last n positions (the pages stay allocated).
  virtual void trim(int64_t n);
  // Contiguous copies [B, H, offset, D] (mlx-lm's layout).
  virtual std::pair<Array, Array> state() const;
  virtual void set_state(const Array& keys, const Array& values);

 private:
  void ensure_capacity(int64_t positions, const Array& like_k, const Array& like_v);
  std::vector<Array> k_pages_, v_pages_;  // each [B, Hkv, kPageSize, D]
  int64_t offset_ = 0;
};

// mlx-lm's RotatingKVCache (mlx_lm/models/cache.py), same bookkeeping: a buffer of at most max_size
// positions (grown `step` at a time) whose first `keep` slots hold the first tokens forever.
//  - One new token (decode, `_update_in_place`): once the buffer is full, it overwrites the oldest
//    non-kept slot; the write index `idx` wraps from max_size back to `keep`.
//  - Several new tokens (prefill, `_update_concat`): the buffer is put back in temporal order,
//    trimmed to the kept tokens + the newest (max_size - keep - 1), and the new tokens are appended,
//    so it briefly holds up to max_size - 1 + L positions and every new token sees max_size of
//    context (attention then masks a max_size window, see cached_attention).
// offset() counts absolute positions (RoPE uses it); size() is what is stored.
//
// update_and_fetch returns the stored positions in TEMPORAL order as up to three views of the ring
// ([kept slots], [idx, end) = oldest, [keep, idx) = newest), no copy. So storage order is time order:
// the kept tokens first, then a contiguous run of the most recent tokens ending with the new ones,
// and the new tokens are the last L stored positions; a causal mask in storage coordinates (query
// row i at size - L + i) is then right, which is all cached_attention needs.
//
// It derives from KVCache so that models reaching their layer caches as KVCache& (DecoderBody)
// work unchanged; none of KVCache's pages are used.
class RotatingKVCache : public KVCache {
 public:
  RotatingKVCache(int64_t max_size, int64_t keep = 0, int64_t step = 256);

  fast::KVBlocks update_and_fetch(const Array& keys, const Array& values) override;
  int64_t offset() const override { return offset_; }
  int64_t size() const { return std::min(offset_, max_size_); }
  int64_t max_size() const { return max_size_; }
  int64_t keep() const { return keep_; }
  int64_t idx() const { return idx_; }  // next write slot (mlx-lm's _idx)
  // mlx-lm's is_trimmable/trim: only before the ring has wrapped (offset < max_size); throws otherwise.
  bool is_trimmable() const { return offset_ < max_size_; }
  void trim(int64_t n) override;
  // mlx-lm's state: the buffer (ring order, not temporal), sliced to offset while not full.
  std::pair<Array, Array> state() const override;
  // Keys/values in mlx-lm's state layout; the meta state must be set first (or use set_full_state).
  void set_state(const Array& keys, const Array& values) override;
  // mlx-lm's meta_state: (keep, max_size, offset, _idx) as strings.
  std::array<std::string, 4> meta_state() const;
  // from_state: buffer + meta state together.
  void set_full_state(const Array& keys, const Array& values, const std::array<std::string, 4>& meta);

 private:
  fast::KVBlocks temporal_blocks() const;
  fast::KVBlocks update_in_place(const Array& keys, const Array& values);
  fast::KVBlocks update_concat(const Array& keys, const Array& values);
  Array keys_, values_;  // [B, Hkv, capacity, D]
  int64_t max_size_, keep_, step_;
  int64_t offset_ = 0, idx_ = 0;
};

// mlx-lm's ChunkedKVCache (mlx_lm/models/cache.py; Llama 4's chunked local attention layers): stores
// the positions [start_position, offset) in time order. maybe_trim_front(), called before each model
// step, drops the oldest positions so that at most chunk_size remain (start_position moves up): a
// query at position >= offset only sees keys of its own chunk of chunk_size positions, and that
// chunk starts after offset - chunk_size, so nothing it can see is dropped. A multi-token step then
// appends to what is left, so the cache briefly holds up to chunk_size + L positions.
//
// update_and_fetch returns the stored positions as one view; storage index s holds absolute position
// start_position + s (cached_attention shifts the attention positions by start_position). Dropping
// from the front only advances an index; the kept positions are moved to a fresh buffer when the
// buffer's end is reached, so a decode step copies chunk_size positions once every `step` tokens.
//
// Prompt-cache state: the stored positions [B, Hkv, offset - start_position, D] and meta state
// (chunk_size, start_position), mlx-lm's names. Loading sets offset = start_position + stored length
// (mlx-lm's loader sets offset = stored length, which agrees while start_position is 0; once it has
// trimmed, mlx-lm's own state() returns a zero-padded buffer instead, which no loader can undo).
// It derives from KVCache so that models reaching their layer caches as KVCache& work unchanged;
// none of KVCache's pages are used. It is never quantized (mlx-lm: no to_quantized).
class ChunkedKVCache : public KVCache {
 public:
  explicit ChunkedKVCache(int64_t chunk_size, int64_t step = 256);

  // Keeps only the newest chunk_size stored positions (mlx-lm's maybe_trim_front).
  void maybe_trim_front();
  // Appends k/v [B, Hkv, L, D] and returns the stored positions [start_position, offset) as one block.
  fast::KVBlocks update_and_fetch(const Array& keys, const Array& values) override;
  int64_t offset() const override { return offset_; }
  int64_t start_position() const { return start_; }
  int64_t chunk_size() const { return chunk_size_; }
  int64_t size() const { return offset_ - start_; }  // stored positions
  // mlx-lm's trim: drops up to n of the newest positions, never below start_position.
  void trim(int64_t n) override;
  // The stored positions, contiguous copies [B, Hkv, size(), D].
  std::pair<Array, Array> state() const override;
  // Replaces the stored positions; offset becomes start_position + T (set the meta state first, or
  // use set_full_state).
  void set_state(const Array& keys, const Array& values) override;
  // mlx-lm's meta_state: (chunk_size, start_position) as strings.
  std::array<std::string, 2> meta_state() const;
  void set_full_state(const Array& keys, const Array& values, const std::array<std::string, 2>& meta);

 private:
  Array keys_, values_;  // [B, Hkv, capacity, D]; positions live at [front_, front_ + size())
  int64_t chunk_size_, step_;
  int64_t offset_ = 0, start_ = 0, front_ = 0;
};

// mlx-lm's QuantizedKVCache (--kv-bits): keys and values stored MLX-affine-quantized along the head
// dim (quantize() of [B, Hkv, L, D] gives wq [B, Hkv, L, D*bits/32] uint32 and scales/biases
// [B, Hkv, L, D/group_size] in the keys' dtype), growing kPageSize positions at a time like
// KVCache: pages are allocated once and never copied on growth (mlx-lm grows by concatenating
// 256-position steps; the stored values are the same).
//
// update_and_fetch returns the stored positions DEQUANTIZED (one float block per page), so the
// float attention path (masks, GQA, left padding) applies unchanged; see quantized_attention in
// model.h. It derives from KVCache so that models reaching their layer caches as KVCache& work
// unchanged; none of KVCache's pages are used. state()/set_state() (float) are refused: a
// quantized cache's state is its (wq, scales, biases) tuples, quantized_state().
class QuantizedKVCache : public KVCache {
 public:
  // bits 2-8 (not 7) and group_size 32/64/128, as MLX's affine quantize accepts.
  explicit QuantizedKVCache(int group_size = 64, int bits = 8);

  // Quantizes k/v [B, Hkv, L, D] (D divisible by group_size), stores them at the current offset,
  // and returns every stored position dequantized to the keys' dtype.
  fast::KVBlocks update_and_fetch(const Array& keys, const Array& values) override;
  // The storing half of update_and_fetch.
  void update(const Array& keys, const Array& values);
  // The first offset() positions dequantized, one block per page.
  fast::KVBlocks fetch_dequantized() const;
  int64_t offset() const override { return offset_; }
  void trim(int64_t n) override;  // drops the last n positions (pages stay)
  std::pair<Array, Array> state() const override;
  void set_state(const Array& keys, const Array& values) override;

  int bits() const { return spec_.bits; }
  int group_size() const { return spec_.group_size; }
  const QuantSpec& spec() const { return spec_; }
  // mlx-lm's state: contiguous (wq, scales, biases) for keys and values, each [B, Hkv, offset, .].
  std::pair<QuantizedArrays, QuantizedArrays> quantized_state() const;
  // Replaces the contents with already quantized keys/values [B, Hkv, T, .] (T >= offset).
  void set_quantized_state(const QuantizedArrays& keys, const QuantizedArrays& values, int64_t offset);
  // mlx-lm's meta_state: (offset, group_size, bits) as strings.
  std::array<std::string, 3> meta_state() const;

 private:
  struct Page {
    QuantizedArrays k, v;  // each [B, Hkv, kPageSize, .]
  };
  void ensure_capacity(int64_t positions, const QuantizedArrays& k, const QuantizedArrays& v);
  std::vector<Page> pages_;
  QuantSpec spec_;
  int64_t offset_ = 0;
};

// mlx-lm's KVCache.to_quantized: a QuantizedKVCache holding quantize() of the stored positions.
std::unique_ptr<QuantizedKVCache> to_quantized(const KVCache& cache, int group_size, int bits);

// mlx-lm's --kv-bits / --kv-group-size / --quantized-kv-start.
struct KVQuantization {
  int bits = 8;
  int group_size = 64;
  int64_t start = 0;  // quantize once the cache holds at least this many positions
};
// Throws "[kv-bits] ..." for bits/group sizes MLX's affine quantization does not accept.
void validate(const KVQuantization& q);

// mlx-lm's ArraysCache: a recurrent layer's state as a fixed number of arrays (e.g. Mamba's conv
// state and SSM state), each empty until the layer first sets it. The state arrays are replaced,
// not appended to, so a recurrent layer's cache does not grow with the sequence. Unlike mlx-lm's it
// counts the positions consumed (the layer calls advance()), so Cache::offset() and make_step work
// whatever the first layer's type is.
class ArraysCache : public LayerCache {
 public:
  explicit ArraysCache(size_t size) : state_(size) {}
  Array& operator[](size_t i) { return state_.at(i); }
  const Array& operator[](size_t i) const { return state_.at(i); }
  size_t size() const { return state_.size(); }
  int64_t offset() const override { return offset_; }
  void advance(int64_t n) { offset_ += n; }
  void set_offset(int64_t n) { offset_ = n; }
  std::vector<Array>& state() { return state_; }
  const std::vector<Array>& state() const { return state_; }

 private:
  std::vector<Array> state_;
  int64_t offset_ = 0;
};

// mlx-lm's CacheList: one layer holding several caches (e.g. a recurrent state beside a KV cache).
class CacheList : public LayerCache {
 public:
  std::vector<std::unique_ptr<LayerCache>> caches;
  int64_t offset() const override { return caches.empty() ? 0 : caches[0]->offset(); }
  template <typename T>
  T& at(size_t i) {
    return static_cast<T&>(*caches.at(i));
  }
};

// How LanguageModel::make_cache builds a cache (mlx-lm's make_prompt_cache arguments).
struct CacheOptions {
  std::optional<int64_t> max_kv_size;  // set: one RotatingKVCache(max_kv_size, keep) per layer
  int64_t keep = 4;                    // mlx-lm keeps the first 4 tokens for --max-kv-size
};

// The whole model's cache: one entry per layer plus the batch's left padding.
class Cache {
 public:
  std::vector<std::unique_ptr<LayerCache>> layers;
  // Left padding per batch row (int32 [B]); empty for a single unpadded sequence.
  Array left_padding;
  // Set only while a decode step is captured for replay (generate/decode_graph.h): the step's storage
  // offset as int32 [B] on the model's device. make_step then takes positions from it, and the KV
  // layers write through KVCache::update_and_fetch_at, so the recorded work reads every per-step
  // position from the device.
  Array device_offset;

  int64_t offset() const { return layers.empty() ? 0 : layers[0]->offset(); }
  template <typename T>
  T& at(size_t i) {
    return static_cast<T&>(*layers.at(i));
  }
};

// mlx-lm's maybe_quantize_kv_cache, run after every model call of generation: once the cache holds
// at least q.start positions, every plain KVCache layer becomes a QuantizedKVCache (to_quantized);
// layers already quantized stay. A RotatingKVCache layer is an error, as in mlx-lm ("RotatingKVCache
// Quantization NYI"). Returns true when it converted something.
bool maybe_quantize_kv_cache(Cache& cache, const KVQuantization& q);

}  // namespace loom::models
