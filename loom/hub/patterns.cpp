// File selection as huggingface_hub's filter_repo_objects does it: Python fnmatch.fnmatchcase, where '*'
// crosses '/' (so "*.json" also takes "sub/x.json"), over code points rather than bytes.
#include <cstdint>
#include <string>
#include <vector>

#include "loom/hub/hub.h"

namespace loom::hub {
namespace {

// UTF-8 to code points; a byte that does not start a valid sequence stands for itself, so any input matches
// deterministically.
std::u32string decode(std::string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    char32_t cp = len == 1 ? b : len == 2 ? (b & 0x1f) : len == 3 ? (b & 0x0f) : (b & 0x07);
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      auto c = static_cast<unsigned char>(s[i + k]);
      if ((c >> 6) != 2) ok = false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (!ok) {
      out += static_cast<char32_t>(b);
      ++i;
    } else {
      out += cp;
      i += len;
    }
  }
  return out;
}

struct Token {
  enum Kind { kLiteral, kAny, kStar, kClass } kind = kLiteral;
  char32_t ch = 0;
  bool negate = false;
  std::vector<std::pair<char32_t, char32_t>> ranges;  // inclusive
  bool matches(char32_t c) const {
    switch (kind) {
      case kLiteral:
        return c == ch;
      case kAny:
        return true;
      case kClass: {
        bool in = false;
        for (auto [lo, hi] : ranges) in = in || (lo <= c && c <= hi);
        return in != negate;
      }
      default:
        return false;
    }
  }
};

// fnmatch.translate's reading of a pattern: '[' opens a class only when a closing ']' follows (a ']' right
// after '[' or '[!' is a member); otherwise it is a literal '['.
std::vector<Token> tokenize(const std::u32string& p) {
  std::vector<Token> out;
  size_t n = p.size();
  for (size_t i = 0; i < n;) {
    char32_t c = p[i++];
    Token t;
    if (c == U'*') {
      if (out.empty() || out.back().kind != Token::kStar) {
        t.kind = Token::kStar;
        out.push_back(std::move(t));
      }
      continue;
    }
    if (c == U'?') {
      t.kind = Token::kAny;
    } else if (c == U'[') {
      size_t j = i;
      if (j < n && p[j] == U'!') ++j;
      if (j < n && p[j] == U']') ++j;
      while (j < n && p[j] != U']') ++j;
      if (j >= n) {
        t.ch = U'[';
      } else {
        t.kind = Token::kClass;
        size_t k = i;
        if (p[k] == U'!') {
          t.negate = true;
          ++k;
        }
        // Members between k and j; "a-z" is a range, a '-' first or last is itself.
        while (k < j) {
          if (k + 2 < j && p[k + 1] == U'-') {
            if (p[k] <= p[k + 2]) t.ranges.emplace_back(p[k], p[k + 2]);  // Python drops reversed ranges
            k += 3;
          } else {
            t.ranges.emplace_back(p[k], p[k]);
            ++k;
          }
        }
        i = j + 1;
      }
    } else {
      t.ch = c;
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

std::vector<std::string> default_allow_patterns() {
  return {"*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model", "*.txt", "*.jsonl",
          "*.jinja"};
}

bool match_pattern(std::string_view pattern, std::string_view path) {
  std::string pat(pattern);
  if (!pat.empty() && pat.back() == '/') pat += '*';  // huggingface_hub's _add_wildcard_to_directories
  std::vector<Token> toks = tokenize(decode(pat));
  std::u32string s = decode(path);
  // Greedy matching with backtracking to the last '*': linear in practice, exact for single-character tokens.
  size_t ti = 0, si = 0, star_t = SIZE_MAX, star_s = 0;
  while (si < s.size()) {
    if (ti < toks.size() && toks[ti].kind == Token::kStar) {
      star_t = ti++;
      star_s = si;
    } else if (ti < toks.size() && toks[ti].matches(s[si])) {
      ++ti;
      ++si;
    } else if (star_t != SIZE_MAX) {
      ti = star_t + 1;
      si = ++star_s;
    } else {
      return false;
    }
  }
  while (ti < toks.size() && toks[ti].kind == Token::kStar) ++ti;
  return ti == toks.size();
}

bool is_allowed(std::string_view path, const std::vector<std::string>& allow_patterns,
                const std::vector<std::string>& ignore_patterns) {
  bool allowed = allow_patterns.empty();
  for (const auto& p : allow_patterns) allowed = allowed || match_pattern(p, path);
  if (!allowed) return false;
  for (const auto& p : ignore_patterns) {
    if (match_pattern(p, path)) return false;
  }
  return true;
}

}  // namespace loom::hub
