// Minimal JSON scanning (strings with all escapes, integers, skipping any value).
#include "loom/tokenizer/json_scan.h"

#include <cstring>

#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer::detail {

bool JsonScanner::skip_ws() {
  while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  return p_ < end_;
}

bool JsonScanner::expect(char c) {
  if (!skip_ws() || *p_ != c) return false;
  ++p_;
  return true;
}

bool JsonScanner::peek(char c) { return skip_ws() && *p_ == c; }

namespace {
int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool JsonScanner::parse_string(std::string& out) {
  out.clear();
  if (!expect('"')) return false;
  while (p_ < end_) {
    const char* q = p_;
    while (q < end_ && *q != '"' && *q != '\\' && static_cast<unsigned char>(*q) >= 0x20) ++q;
    out.append(p_, size_t(q - p_));
    p_ = q;
    if (p_ >= end_) return false;
    char c = *p_++;
    if (c == '"') return unicode::is_valid_utf8(out);
    if (c != '\\') return false;  // raw control character
    if (p_ >= end_) return false;
    char e = *p_++;
    switch (e) {
      case '"': out.push_back('"'); break;
      case '\\': out.push_back('\\'); break;
      case '/': out.push_back('/'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'u': {
        auto read4 = [&](unsigned& v) {
          if (end_ - p_ < 4) return false;
          v = 0;
          for (int i = 0; i < 4; ++i) {
            int h = hexval(p_[i]);
            if (h < 0) return false;
            v = v * 16 + unsigned(h);
          }
          p_ += 4;
          return true;
        };
        unsigned cp = 0;
        if (!read4(cp)) return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo = 0;
          if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') return false;
          p_ += 2;
          if (!read4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return false;
        }
        unicode::append(out, char32_t(cp));
        break;
      }
      default:
        return false;
    }
  }
  return false;
}

bool JsonScanner::parse_int(long long& out) {
  if (!skip_ws()) return false;
  bool neg = false;
  if (*p_ == '-') {
    neg = true;
    ++p_;
  }
  if (p_ >= end_ || *p_ < '0' || *p_ > '9') return false;
  long long v = 0;
  while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
    if (v > (1LL << 40)) return false;
    v = v * 10 + (*p_++ - '0');
  }
  if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) return false;
  out = neg ? -v : v;
  return true;
}

bool JsonScanner::skip_string() {
  ++p_;  // opening quote
  while (p_ < end_) {
    const void* hit = std::memchr(p_, '"', size_t(end_ - p_));
    if (!hit) return false;
    const char* q = static_cast<const char*>(hit);
    size_t backslashes = 0;
    for (const char* b = q - 1; b >= p_ && *b == '\\'; --b) ++backslashes;
    p_ = q + 1;
    if (backslashes % 2 == 0) return true;
  }
  return false;
}

bool JsonScanner::skip_value(std::string_view& span) {
  if (!skip_ws()) return false;
  const char* start = p_;
  if (*p_ == '"') {
    if (!skip_string()) return false;
  } else if (*p_ == '{' || *p_ == '[') {
    int depth = 0;
    while (p_ < end_) {
      char c = *p_;
      if (c == '"') {
        if (!skip_string()) return false;
        continue;
      }
      ++p_;
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) break;
      }
    }
    if (depth != 0) return false;
  } else {
    while (p_ < end_ && *p_ != ',' && *p_ != '}' && *p_ != ']' && *p_ != ' ' && *p_ != '\n' && *p_ != '\r' && *p_ != '\t') ++p_;
    if (p_ == start) return false;
  }
  span = std::string_view(start, size_t(p_ - start));
  return true;
}

bool split_object(std::string_view text, std::vector<std::pair<std::string, std::string_view>>& members) {
  JsonScanner s(text);
  if (!s.expect('{')) return false;
  if (s.peek('}')) return s.expect('}');
  std::string key;
  while (true) {
    std::string_view span;
    if (!s.parse_string(key) || !s.expect(':') || !s.skip_value(span)) return false;
    members.emplace_back(key, span);
    if (s.peek(',')) {
      s.expect(',');
      continue;
    }
    return s.expect('}');
  }
}

}  // namespace loom::tokenizer::detail
