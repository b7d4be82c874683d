// Shared pieces of the pipeline: split behaviours, JSON helpers, the byte-level alphabet.
#include "loom/tokenizer/components.h"

#include <nlohmann/json.hpp>

#include <array>

#include "loom/common/error.h"

namespace loom::tokenizer::detail {

SplitBehavior parse_split_behavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  throw ValueError(format_error("tokenizer", "unknown split behavior '" + name + "'"));
}

void split_piece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                 SplitBehavior behavior, bool invert, std::vector<Piece>& out) {
  // Cover the text with (start, end, is_match) segments, as HF's Pattern::find_matches does.
  struct Seg {
    size_t s, e;
    bool m;
  };
  const std::string& t = piece.text;
  std::vector<Seg> segs;
  segs.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (auto [s, e] : matches) {
    if (prev != s) segs.push_back({prev, s, false});
    segs.push_back({s, e, true});
    prev = e;
  }
  if (prev != t.size() || t.empty()) segs.push_back({prev, t.size(), false});
  if (invert) {
    for (Seg& g : segs) g.m = !g.m;
  }
  std::vector<std::pair<size_t, size_t>> parts;
  switch (behavior) {
    case SplitBehavior::removed:
      for (const Seg& g : segs)
        if (!g.m) parts.emplace_back(g.s, g.e);
      break;
    case SplitBehavior::isolated:
      for (const Seg& g : segs) parts.emplace_back(g.s, g.e);
      break;
    case SplitBehavior::merged_with_previous: {
      bool prev_match = false;
      for (const Seg& g : segs) {
        if (g.m && !prev_match && !parts.empty()) {
          parts.back().second = g.e;
        } else {
          parts.emplace_back(g.s, g.e);
        }
        prev_match = g.m;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool prev_match = false;
      for (const Seg& g : segs) {
        if (!g.m && prev_match && !parts.empty()) {
          parts.back().second = g.e;
        } else {
          parts.emplace_back(g.s, g.e);
        }
        prev_match = g.m;
      }
      break;
    }
    case SplitBehavior::contiguous: {
      bool prev_match = false;
      for (const Seg& g : segs) {
        if (g.m == prev_match && !parts.empty()) {
          parts.back().second = g.e;
        } else {
          parts.emplace_back(g.s, g.e);
        }
        prev_match = g.m;
      }
      break;
    }
  }
  for (auto [s, e] : parts) {
    if (s == e) continue;
    out.push_back(Piece{t.substr(s, e - s), piece.at_start && s == 0});
  }
}

const Json& field(const Json& j, const char* key, const char* where) {
  if (!j.is_object() || !j.contains(key)) {
    throw ValueError(format_error("tokenizer", std::string(where) + ": missing '" + key + "'"));
  }
  return j[key];
}

std::string string_field(const Json& j, const char* key, const char* where) {
  const Json& v = field(j, key, where);
  if (!v.is_string()) {
    throw ValueError(format_error("tokenizer", std::string(where) + ": '" + key + "' must be a string"));
  }
  return v.get<std::string>();
}

bool bool_field(const Json& j, const char* key, bool fallback) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) throw ValueError(format_error("tokenizer", std::string("'") + key + "' must be a bool"));
  return j[key].get<bool>();
}

std::pair<std::string, bool> pattern_field(const Json& j, const char* where) {
  const Json& p = field(j, "pattern", where);
  if (p.is_object() && p.contains("String") && p["String"].is_string()) return {p["String"].get<std::string>(), false};
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) return {p["Regex"].get<std::string>(), true};
  throw ValueError(format_error("tokenizer", std::string(where) + ": pattern must be {String} or {Regex}"));
}

namespace {
struct ByteAlphabet {
  std::array<std::string, 256> to_char;
  std::array<int, 324> to_byte;  // code points 0..323 cover the whole alphabet
  ByteAlphabet() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? char32_t(b) : char32_t(256 + n++);
      unicode::append(to_char[b], cp);
      to_byte[cp] = b;
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}
}  // namespace

const std::string& byte_to_char(unsigned char b) { return alphabet().to_char[b]; }

int char_to_byte(char32_t c) { return c < 324 ? alphabet().to_byte[c] : -1; }

std::vector<std::pair<size_t, size_t>> find_literal(std::string_view text, std::string_view needle) {
  std::vector<std::pair<size_t, size_t>> out;
  if (needle.empty()) return out;
  size_t pos = 0;
  while ((pos = text.find(needle, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + needle.size());
    pos += needle.size();
  }
  return out;
}

}  // namespace loom::tokenizer::detail
