// UTF-8 and the slice of Python's Unicode character database that chat templates reach. Case mapping
// covers ASCII, Latin-1, Greek and Cyrillic; other scripts are left unchanged (see README note).
#include "loom/chat/unicode.h"

namespace loom::chat::utf8 {

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    }
    int n = (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (n < 0 || i + n >= s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += n + 1;
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) append(out, c);
  return out;
}

std::size_t length(std::string_view s) {
  std::size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_printable(char32_t c) {
  if (c == ' ') return true;
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if (is_space(c)) return false;                                          // Zs, Zl, Zp
  if ((c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E)) return false;  // Cf
  if ((c >= 0x2060 && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB)) return false;
  if ((c >= 0x0600 && c <= 0x0605) || c == 0x061C || c == 0x06DD || c == 0x070F || c == 0x180E)
    return false;
  if (c >= 0xD800 && c <= 0xDFFF) return false;                           // Cs
  if ((c >= 0xE000 && c <= 0xF8FF) || c >= 0xF0000) return false;        // Co
  if (c >= 0xE0000 && c <= 0xE007F) return false;
  if (c == 0xFFFE || c == 0xFFFF || c > 0x10FFFF) return false;          // Cn
  return true;
}

// Simple one-to-one case pairs: {lower_first, lower_last, upper_first}.
namespace {
struct Range {
  char32_t lo, hi, up;
};
constexpr Range kRanges[] = {
    {0x61, 0x7A, 0x41},     {0xE0, 0xF6, 0xC0},     {0xF8, 0xFE, 0xD8},
    {0x3B1, 0x3C1, 0x391},  {0x3C3, 0x3CB, 0x3A3},  {0x430, 0x44F, 0x410},
    {0x450, 0x45F, 0x400},
};
}  // namespace

bool is_lower(char32_t c) {
  for (const auto& r : kRanges)
    if (c >= r.lo && c <= r.hi) return true;
  return c == 0xDF || c == 0xFF || c == 0x3C2;
}

bool is_upper(char32_t c) {
  for (const auto& r : kRanges)
    if (c >= r.up && c <= r.up + (r.hi - r.lo)) return true;
  return false;
}

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  if (c == 0xD7 || c == 0xF7) return false;
  if (c >= 0xC0 && c <= 0x24F) return true;
  if (is_lower(c) || is_upper(c)) return true;
  // Letters of scripts without case (CJK, Kana, Hangul, Arabic, Hebrew, Devanagari, Thai).
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3040 && c <= 0x30FF) ||
         (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0x05D0 && c <= 0x05EA) ||
         (c >= 0x0620 && c <= 0x064A) || (c >= 0x0904 && c <= 0x0939) ||
         (c >= 0x0E01 && c <= 0x0E30);
}

bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }

char32_t to_upper(char32_t c) {
  for (const auto& r : kRanges)
    if (c >= r.lo && c <= r.hi) return r.up + (c - r.lo);
  if (c == 0xFF) return 0x178;
  if (c == 0x3C2) return 0x3A3;
  return c;
}

char32_t to_lower(char32_t c) {
  for (const auto& r : kRanges)
    if (c >= r.up && c <= r.up + (r.hi - r.lo)) return r.lo + (c - r.up);
  if (c == 0x178) return 0xFF;
  return c;
}

std::string upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : decode(s)) {
    if (c == 0xDF) {  // German sharp s upper-cases to "SS" in Python
      out += "SS";
      continue;
    }
    append(out, to_upper(c));
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : decode(s)) append(out, to_lower(c));
  return out;
}

}  // namespace loom::chat::utf8
