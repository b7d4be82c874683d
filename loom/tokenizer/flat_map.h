// Open-addressing hash tables for the hot lookups of the models: token text -> id (keys packed in
// one arena) and merge pair -> (rank, id). Flat storage keeps loading a 150k-entry vocabulary and
// per-character lookups during encoding cheap (std::unordered_map allocates a node per entry).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace loom::tokenizer::detail {

inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xC2B2AE3D27D4EB4Full);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0x9FB21C651E98DF25ull;
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  return h ^ (h >> 32);
}

// string -> int32 id. A repeated key keeps the last id (as HF's HashMap insert does). Each slot
// holds hash, key location and id, so a lookup touches one slot and the key bytes.
class StringIdMap {
 public:
  void reserve(size_t n) {
    if (n * 2 > slots_.size()) rehash(n * 2);
  }
  void insert_or_assign(std::string_view key, int32_t id) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(64, slots_.size() * 2));
    uint64_t h = hash_bytes(key);
    size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) {
        s = {uint32_t(h), uint32_t(arena_.size()), uint32_t(key.size()), id};
        arena_.append(key);
        ++size_;
        return;
      }
      if (s.hash == uint32_t(h) && key_of(s) == key) {
        s.id = id;
        return;
      }
    }
  }
  // The id of key, or -1.
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    uint64_t h = hash_bytes(key);
    size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return -1;
      if (s.hash == uint32_t(h) && s.len == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0) {
        return s.id;
      }
    }
  }
  size_t size() const { return size_; }
  // Calls f(key, id) for every key (views stay valid while the map is not modified).
  template <class F>
  void for_each(F f) const {
    for (const Slot& s : slots_) {
      if (s.len != kEmpty) f(key_of(s), s.id);
    }
  }

 private:
  static constexpr uint32_t kEmpty = ~0u;
  struct Slot {
    uint32_t hash = 0, offset = 0, len = kEmpty;
    int32_t id = 0;
  };
  std::string_view key_of(const Slot& s) const { return std::string_view(arena_).substr(s.offset, s.len); }
  void rehash(size_t n) {
    size_t cap = 64;
    while (cap < n) cap *= 2;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    size_t mask = cap - 1;
    for (const Slot& s : old) {
      if (s.len == kEmpty) continue;
      size_t i = hash_bytes(key_of(s)) & mask;
      while (slots_[i].len != kEmpty) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::string arena_;
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

// uint64 key -> (rank, id); a repeated key keeps its last value.
class PairMap {
 public:
  struct Value {
    int32_t rank, id;
  };
  void reserve(size_t n) {
    size_t cap = 64;
    while (cap < n * 2) cap *= 2;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, {0, 0});
  }
  void insert_or_assign(uint64_t key, Value v) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    size_t mask = keys_.size() - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
      if (keys_[i] == kEmpty || keys_[i] == key) {
        if (keys_[i] == kEmpty) ++size_;
        keys_[i] = key;
        values_[i] = v;
        return;
      }
    }
  }
  const Value* find(uint64_t key) const {
    if (keys_.empty()) return nullptr;
    size_t mask = keys_.size() - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k;
  }
  void grow() {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<Value> old_values = std::move(values_);
    reserve(std::max<size_t>(32, old_keys.size()));
    size_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] != kEmpty) insert_or_assign(old_keys[i], old_values[i]);
    }
  }
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t size_ = 0;
};

}  // namespace loom::tokenizer::detail
