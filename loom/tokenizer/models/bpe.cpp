// BPE model: splits a word into characters (with continuing_subword_prefix / end_of_word_suffix,
// byte_fallback to <0xXX> tokens, or unk), then applies merges lowest rank first, leftmost first
// among equal ranks (HF's priority-queue order). ignore_merges returns whole-word vocabulary hits
// directly. Results are cached per word.
#include <algorithm>
#include <cstdio>
#include <mutex>
#include <queue>

#include "loom/common/error.h"
#include "loom/tokenizer/models/models.h"

namespace loom::tokenizer::detail {

namespace {
// Word cache keys: std::string looked up by string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return hash_bytes(s); }
};

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

std::optional<std::string> optional_string(const Json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_string()) throw ValueError(format_error("tokenizer", std::string("BPE: '") + key + "' must be a string"));
  return j[key].get<std::string>();
}

class Bpe final : public Model {
 public:
  Bpe(const Json& j, BpeTables&& tables) : vocab_(std::move(tables.vocab)) {
    unk_ = optional_string(j, "unk_token");
    prefix_ = optional_string(j, "continuing_subword_prefix");
    suffix_ = optional_string(j, "end_of_word_suffix");
    fuse_unk_ = bool_field(j, "fuse_unk", false);
    byte_fallback_ = bool_field(j, "byte_fallback", false);
    ignore_merges_ = bool_field(j, "ignore_merges", false);
    int32_t max_id = -1;
    vocab_.for_each([&](std::string_view, int32_t id) { max_id = std::max(max_id, id); });
    if (size_t(max_id + 1) > vocab_.size() * 4 + 1024) throw ValueError(format_error("tokenizer", "BPE: vocabulary ids are too sparse"));
    inverse_.assign(size_t(max_id + 1), std::string_view());
    present_.assign(size_t(max_id + 1), false);
    vocab_.for_each([&](std::string_view tok, int32_t id) {
      inverse_[size_t(id)] = tok;
      present_[size_t(id)] = true;
    });
    if (unk_) unk_id_ = lookup(vocab_, *unk_);
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        byte_ids_[b] = lookup(vocab_, name);
      }
    }
    merges_.reserve(tables.merges.size());
    int32_t rank = 0;
    for (const auto& m : tables.merges) {
      merges_.insert_or_assign(pair_key(m[0], m[1]), PairMap::Value{rank++, m[2]});  // HF: a repeated pair keeps its last rank
    }
  }

  void tokenize(std::string_view word, std::vector<int32_t>& ids) const override {
    if (word.empty()) return;
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> out;
    int32_t whole = ignore_merges_ ? lookup(vocab_, word) : -1;
    if (whole >= 0) {
      out.push_back(whole);
    } else {
      out = merge_word(word);
    }
    ids.insert(ids.end(), out.begin(), out.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity && word.size() < 256) cache_.emplace(std::string(word), std::move(out));
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int32_t id = lookup(vocab_, token);
    return id < 0 ? std::nullopt : std::optional<int32_t>(id);
  }
  std::optional<std::string_view> id_to_token(int32_t id) const override {
    if (id < 0 || size_t(id) >= inverse_.size() || !present_[size_t(id)]) return std::nullopt;
    return inverse_[size_t(id)];
  }
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  static constexpr size_t kCacheCapacity = 1 << 16;

  // Initial symbols of a word (HF's merge_word, before merges).
  void initial_symbols(std::string_view w, std::vector<int32_t>& syms) const {
    std::string s;
    int32_t unk = -1;  // pending unk symbol (fused while fuse_unk)
    size_t len = 0;
    for (size_t i = 0; i < w.size(); i += len) {
      len = unicode::lead_len(static_cast<unsigned char>(w[i]));
      if (i + len > w.size()) len = w.size() - i;
      bool last = i + len >= w.size();
      s.clear();
      if (i > 0 && prefix_) s += *prefix_;
      s.append(w.data() + i, len);
      if (last && suffix_) s += *suffix_;
      int32_t id = lookup(vocab_, s);
      if (id >= 0) {
        if (unk >= 0) {
          syms.push_back(unk);
          unk = -1;
        }
        syms.push_back(id);
        continue;
      }
      if (byte_fallback_) {
        bool all = std::all_of(s.begin(), s.end(), [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; });
        if (all) {
          for (char c : s) syms.push_back(byte_ids_[static_cast<unsigned char>(c)]);
          continue;
        }
      }
      if (unk_) {
        if (unk_id_ < 0) throw ValueError(format_error("tokenizer", "BPE: unk_token '" + *unk_ + "' is not in the vocabulary"));
        if (unk >= 0 && !fuse_unk_) syms.push_back(unk);
        unk = unk_id_;
      }
    }
    if (unk >= 0) syms.push_back(unk);
  }

  std::vector<int32_t> merge_word(std::string_view w) const {
    std::vector<int32_t> ids;
    initial_symbols(w, ids);
    const size_t n = ids.size();
    if (n < 2) return ids;
    // Doubly linked symbols; a heap of candidate merges keyed by (rank, position).
    std::vector<int32_t> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t i = 0; i < n; ++i) {
      prev[i] = int32_t(i) - 1;
      next[i] = i + 1 < n ? int32_t(i + 1) : -1;
    }
    struct Cand {
      int32_t rank, pos, new_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int32_t pos) {
      int32_t nx = next[size_t(pos)];
      if (nx < 0) return;
      if (const auto* m = merges_.find(pair_key(ids[size_t(pos)], ids[size_t(nx)]))) heap.push({m->rank, pos, m->id});
    };
    for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      size_t p = size_t(c.pos);
      if (!alive[p] || next[p] < 0) continue;
      size_t q = size_t(next[p]);
      const auto* m = merges_.find(pair_key(ids[p], ids[q]));
      if (!m || m->id != c.new_id || m->rank != c.rank) continue;
      ids[p] = c.new_id;
      alive[q] = false;
      next[p] = next[q];
      if (next[q] >= 0) prev[size_t(next[q])] = int32_t(p);
      if (prev[p] >= 0) push(prev[p]);
      push(int32_t(p));
    }
    std::vector<int32_t> out;
    out.reserve(n);
    for (int32_t i = 0; i >= 0; i = next[size_t(i)]) out.push_back(ids[size_t(i)]);
    return out;
  }

  VocabMap vocab_;
  std::vector<std::string_view> inverse_;  // points into vocab_'s key arena
  std::vector<bool> present_;
  PairMap merges_;
  std::optional<std::string> unk_, prefix_, suffix_;
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256] = {};
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};
}  // namespace

std::array<int32_t, 3> resolve_merge(const VocabMap& vocab, std::string_view a, std::string_view b, size_t strip,
                                     std::string& scratch) {
  int32_t ia = lookup(vocab, a), ib = lookup(vocab, b);
  if (ia < 0 || ib < 0) {
    throw ValueError(format_error("tokenizer", "BPE: merge token '" + std::string(ia < 0 ? a : b) + "' is not in the vocabulary"));
  }
  scratch.assign(a);
  if (b.size() >= strip) scratch.append(b.substr(strip));
  int32_t in = lookup(vocab, scratch);
  if (in < 0) throw ValueError(format_error("tokenizer", "BPE: merged token '" + scratch + "' is not in the vocabulary"));
  return {ia, ib, in};
}

std::unique_ptr<Model> make_bpe_from_tables(const Json& options, BpeTables&& tables) {
  return std::make_unique<Bpe>(options, std::move(tables));
}

std::unique_ptr<Model> make_bpe(const Json& j) {
  BpeTables t;
  std::vector<std::string> inverse;
  std::vector<bool> present;
  read_vocab_object(field(j, "vocab", "BPE"), t.vocab, inverse, present, "BPE");
  const size_t strip = j.contains("continuing_subword_prefix") && j["continuing_subword_prefix"].is_string()
                           ? j["continuing_subword_prefix"].get_ref<const std::string&>().size()
                           : 0;
  const Json& merges = j.contains("merges") ? j["merges"] : Json::array();
  if (!merges.is_array()) throw ValueError(format_error("tokenizer", "BPE: 'merges' must be a list"));
  t.merges.reserve(merges.size());
  std::string scratch;
  for (const Json& m : merges) {
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) throw ValueError(format_error("tokenizer", "BPE: merge '" + s + "' has no space"));
      t.merges.push_back(resolve_merge(t.vocab, std::string_view(s).substr(0, sp), std::string_view(s).substr(sp + 1), strip, scratch));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      t.merges.push_back(resolve_merge(t.vocab, m[0].get_ref<const std::string&>(), m[1].get_ref<const std::string&>(), strip, scratch));
    } else {
      throw ValueError(format_error("tokenizer", "BPE: a merge must be \"a b\" or [a, b]"));
    }
  }
  return make_bpe_from_tables(j, std::move(t));
}

}  // namespace loom::tokenizer::detail
