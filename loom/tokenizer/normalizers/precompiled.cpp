// Precompiled normalizer: SentencePiece's compiled normalization rules (precompiled_charsmap).
// The charsmap is base64 of: uint32 LE byte size of a double-array trie, the trie (darts-clone
// 32-bit units), then NUL-terminated replacement strings addressed by the trie's values. Like HF,
// each grapheme cluster shorter than 6 bytes is looked up whole first, then char by char, and a
// lookup takes the first (shortest) prefix the trie reports.
#include <utf8proc.h>

#include <cstring>

#include "loom/common/error.h"
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

namespace {
std::string base64_decode(const std::string& in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() * 3 / 4);
  int buf = 0, bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) throw ValueError(format_error("tokenizer", "Precompiled: invalid base64 charsmap"));
    buf = (buf << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((buf >> bits) & 0xFF));
    }
  }
  return out;
}

class Precompiled final : public Normalizer {
 public:
  explicit Precompiled(const Json& j) {
    const Json& v = field(j, "precompiled_charsmap", "Precompiled");
    if (v.is_null()) return;
    if (!v.is_string()) throw ValueError(format_error("tokenizer", "Precompiled: charsmap must be a string"));
    std::string raw = base64_decode(v.get<std::string>());
    if (raw.size() < 4) throw ValueError(format_error("tokenizer", "Precompiled: charsmap too short"));
    uint32_t trie_size = 0;
    std::memcpy(&trie_size, raw.data(), 4);
    if (trie_size % 4 != 0 || trie_size == 0 || size_t(trie_size) > raw.size() - 4) {
      throw ValueError(format_error("tokenizer", "Precompiled: bad trie size"));
    }
    units_.resize(trie_size / 4);
    std::memcpy(units_.data(), raw.data() + 4, trie_size);
    normalized_ = raw.substr(4 + trie_size);
  }

  void normalize(std::string& text) const override {
    if (units_.empty() || text.empty()) return;
    std::string out;
    out.reserve(text.size());
    size_t start = 0, len = 0;
    utf8proc_int32_t state = 0;
    char32_t prev = unicode::decode(text, 0, &len);
    size_t i = len;
    while (true) {
      bool end = i >= text.size();
      char32_t c = 0;
      size_t clen = 0;
      if (!end) c = unicode::decode(text, i, &clen);
      if (end || utf8proc_grapheme_break_stateful(utf8proc_int32_t(prev), utf8proc_int32_t(c), &state)) {
        emit_grapheme(std::string_view(text).substr(start, i - start), out);
        if (end) break;
        start = i;
      }
      prev = c;
      i += clen;
    }
    text = std::move(out);
  }

 private:
  // The replacement for the shortest trie key that prefixes chunk, or nullptr.
  const char* transform(std::string_view chunk) const {
    size_t pos = 0;
    uint32_t unit = units_[0];
    pos ^= offset(unit);
    for (unsigned char b : chunk) {
      pos ^= b;
      if (pos >= units_.size()) return nullptr;
      unit = units_[pos];
      if ((unit & ((1u << 31) | 0xFF)) != b) return nullptr;
      pos ^= offset(unit);
      if (pos >= units_.size()) return nullptr;
      if ((unit >> 8) & 1) {
        uint32_t value = units_[pos] & ((1u << 31) - 1);
        if (value >= normalized_.size()) return nullptr;
        return normalized_.c_str() + value;
      }
    }
    return nullptr;
  }
  static uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

  void emit_grapheme(std::string_view g, std::string& out) const {
    if (g.size() < 6) {
      if (const char* norm = transform(g)) {
        out += norm;
        return;
      }
    }
    size_t len = 0;
    for (size_t i = 0; i < g.size(); i += len) {
      unicode::decode(g, i, &len);
      std::string_view part = g.substr(i, len);
      if (const char* norm = transform(part)) {
        out += norm;
      } else {
        out += part;
      }
    }
  }

  std::vector<uint32_t> units_;
  std::string normalized_;
};
}  // namespace

std::unique_ptr<Normalizer> make_precompiled(const Json& j) { return std::make_unique<Precompiled>(j); }

}  // namespace loom::tokenizer::detail
