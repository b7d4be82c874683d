// UTF-8 helpers and Unicode properties (utf8proc tables, Rust std semantics on top).
#include "loom/tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>

#include "loom/common/error.h"

namespace loom::tokenizer::unicode {

char32_t decode(std::string_view s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  unsigned char b = p[0];
  if (b < 0x80) {
    *len = 1;
    return b;
  }
  if (b < 0xE0) {
    *len = 2;
    return (char32_t(b & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (b < 0xF0) {
    *len = 3;
    return (char32_t(b & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  *len = 4;
  return (char32_t(b & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) | (char32_t(p[2] & 0x3F) << 6) |
         (p[3] & 0x3F);
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

namespace {
// Length of the valid UTF-8 sequence at i, or 0 with *bad set to the size of the maximal
// invalid subpart (WHATWG / Rust from_utf8_lossy rules).
size_t valid_len(std::string_view s, size_t i, size_t* bad) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  unsigned char b = p[i];
  if (b < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= n) {
      *bad = k;
      return 0;
    }
    unsigned char c = p[i + k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}
}  // namespace

std::string from_utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t bad = 0, n = valid_len(s, i, &bad);
    if (n) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t bad = 0, n = valid_len(s, i, &bad);
    if (!n) return false;
    i += n;
  }
  return true;
}

namespace {
int category(char32_t c) { return utf8proc_category(utf8proc_int32_t(c)); }
}  // namespace

bool is_whitespace(char32_t c) {
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool is_numeric(char32_t c) {
  int k = category(c);
  return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

bool is_alphabetic(char32_t c) {
  int k = category(c);
  if (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) return true;
  if (k == UTF8PROC_CATEGORY_NL) return true;
  // Other_Alphabetic: mostly spacing/nonspacing vowel signs, plus circled and squared letters.
  if (k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC) {
    return utf8proc_get_property(utf8proc_int32_t(c))->combining_class == 0;
  }
  return (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
         (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

bool is_word(char32_t c) {
  if (c < 0x80) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  }
  int k = category(c);
  return is_alphabetic(c) || is_mark(c) || k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_PC ||
         c == 0x200C || c == 0x200D;
}

bool is_punctuation(char32_t c) {
  int k = category(c);
  return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

bool is_mark(char32_t c) {
  int k = category(c);
  return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

bool is_mark_nonspacing(char32_t c) { return category(c) == UTF8PROC_CATEGORY_MN; }

bool is_other(char32_t c) {
  int k = category(c);
  return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CS ||
         k == UTF8PROC_CATEGORY_CO;
}

void append_lowercase(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c >= 'A' && c <= 'Z' ? c + 32 : c));
  } else if (c == 0x130) {  // the one unconditional multi-code-point lowercase mapping
    out += "i\xCC\x87";
  } else {
    append(out, char32_t(utf8proc_tolower(utf8proc_int32_t(c))));
  }
}

namespace {
// Compatibility decompositions added in Unicode 12.0 or later. HF's NFKC/NFKD tables
// (unicode-normalization-alignments) predate them and leave these code points unchanged; so does
// loom (found by the per-code-point test, tests/tokenizer/codepoints_test.cpp).
bool newer_compat_decomposition(char32_t c) {
  return c == 0x32FF || (c >= 0xA7F2 && c <= 0xA7F4) || c == 0xAB69 || (c >= 0x10780 && c <= 0x107BA) ||
         (c >= 0x1E030 && c <= 0x1E06D) || c == 0x1F16C || (c >= 0x1FBF0 && c <= 0x1FBF9);
}

std::string normalize_run(std::string_view s, int flags);
}  // namespace

std::string normalize(std::string_view s, NormalForm form) {
  int flags = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::nfc: flags |= UTF8PROC_COMPOSE; break;
    case NormalForm::nfd: flags |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::nfkc: flags |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::nfkd: flags |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  if (!(flags & UTF8PROC_COMPAT)) return normalize_run(s, flags);
  // Keep the code points HF does not decompose (all starters), normalizing the text between them.
  std::string out;
  size_t start = 0, len = 0;
  for (size_t i = 0; i < s.size(); i += len) {
    char32_t c = decode(s, i, &len);
    if (c < 0x32FF || !newer_compat_decomposition(c)) continue;
    out += normalize_run(s.substr(start, i - start), flags);
    out.append(s.substr(i, len));
    start = i + len;
  }
  out += normalize_run(s.substr(start), flags);
  return out;
}

namespace {
std::string normalize_run(std::string_view s, int flags) {
  if (s.empty()) return std::string();
  utf8proc_uint8_t* out = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                        &out, utf8proc_option_t(flags));
  if (n < 0) {
    std::free(out);
    throw ValueError(format_error("tokenizer", std::string("unicode normalization failed: ") +
                                                   utf8proc_errmsg(n)));
  }
  std::string result(reinterpret_cast<char*>(out), size_t(n));
  std::free(out);
  return result;
}
}  // namespace

}  // namespace loom::tokenizer::unicode
