// Jinja2 lexer; the comments name the jinja2 lexer rule each branch mirrors.
#include "loom/chat/lexer.h"

#include <algorithm>
#include <cstdio>

#include "loom/chat/error.h"
#include "loom/chat/unicode.h"

namespace loom::chat {

TemplateError::TemplateError(int line, int column, const std::string& message)
    : loom::ValueError(loom::format_error(
          "chat", "line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
                      message)),
      line_(line), column_(column), message_(message) {}

TemplateError::TemplateError(const std::string& message)
    : loom::ValueError(loom::format_error("chat", message)), message_(message) {}

std::pair<int, int> TokenStream::position(std::size_t offset) const {
  offset = std::min(offset, source.size());
  int line = 1 + static_cast<int>(std::count(source.begin(), source.begin() + offset, '\n'));
  auto nl = source.rfind('\n', offset == 0 ? std::string::npos : offset - 1);
  std::size_t start = (offset == 0 || nl == std::string::npos) ? 0 : nl + 1;
  if (offset > 0 && nl != std::string::npos && nl >= offset) start = 0;
  int col = 1 + static_cast<int>(utf8::length(std::string_view(source).substr(start, offset - start)));
  return {line, col};
}

namespace {

// Python `\s` on the code point starting at byte i; returns its byte length or 0.
std::size_t space_at(std::string_view s, std::size_t i) {
  if (i >= s.size()) return 0;
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return utf8::is_space(c) ? 1 : 0;
  std::size_t n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  auto cps = utf8::decode(s.substr(i, n));
  return (cps.size() == 1 && utf8::is_space(cps[0])) ? n : 0;
}

std::size_t skip_space(std::string_view s, std::size_t i) {
  while (std::size_t n = space_at(s, i)) i += n;
  return i;
}

std::string rstrip_space(std::string_view s) {
  // Strip from the right: decode once, trim trailing spaces, re-encode.
  auto cps = utf8::decode(s);
  while (!cps.empty() && utf8::is_space(cps.back())) cps.pop_back();
  return utf8::encode(cps);
}

bool all_space(std::string_view s) {
  if (s.empty()) return false;  // `\s+` needs one character
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t n = space_at(s, i);
    if (!n) return false;
    i += n;
  }
  return true;
}

bool is_name_start(unsigned char c) { return c == '_' || std::isalpha(c) || c >= 0x80; }
bool is_name_char(unsigned char c) { return c == '_' || std::isalnum(c) || c >= 0x80; }

class Lexer {
 public:
  explicit Lexer(std::string src) { out_.source = std::move(src); }

  TokenStream run() {
    const std::string& s = out_.source;
    while (pos_ < s.size()) lex_root();
    out_.tokens.push_back({TokenType::Eof, "", s.size()});
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(std::size_t offset, const std::string& msg) {
    auto [l, c] = out_.position(offset);
    throw TemplateError(l, c, msg);
  }

  void emit(TokenType t, std::string v, std::size_t off) { out_.tokens.push_back({t, std::move(v), off}); }

  // Applies the OptionalLStrip rule to the text before a tag and emits it.
  void emit_text(std::string_view text, std::size_t off, char sign, bool is_variable) {
    std::string t(text);
    if (sign == '-') {
      t = rstrip_space(text);
    } else if (sign != '+' && !is_variable) {
      auto nl = text.rfind('\n');
      std::size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && all_space(text.substr(l_pos))) t = std::string(text.substr(0, l_pos));
    }
    if (!t.empty()) emit(TokenType::Data, std::move(t), off);
  }

  // Matches a tag end at pos_: "+END", "-END\s*", or "END" (plus "\n" if trim). Returns false if
  // no end is here.
  bool match_end(std::string_view end, bool trim) {
    const std::string& s = out_.source;
    std::string_view rest = std::string_view(s).substr(pos_);
    std::size_t start = pos_;
    if (rest.size() > end.size() && rest[0] == '+' && rest.substr(1, end.size()) == end) {
      pos_ += 1 + end.size();
    } else if (rest.size() > end.size() && rest[0] == '-' && rest.substr(1, end.size()) == end) {
      pos_ = skip_space(s, pos_ + 1 + end.size());
    } else if (rest.substr(0, end.size()) == end) {
      pos_ += end.size();
      if (trim && pos_ < s.size() && s[pos_] == '\n') ++pos_;
    } else {
      return false;
    }
    line_starting_ = pos_ > start && s[pos_ - 1] == '\n';
    return true;
  }

  void lex_root() {
    const std::string& s = out_.source;
    std::size_t p = pos_;
    std::size_t tag = std::string::npos;
    for (std::size_t i = p; i + 1 < s.size(); ++i) {
      if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) {
        tag = i;
        break;
      }
    }
    if (tag == std::string::npos) {  // rule "data": the rest of the template
      emit(TokenType::Data, s.substr(p), p);
      pos_ = s.size();
      return;
    }
    char kind = s[tag + 1];
    char sign = (tag + 2 < s.size() && (s[tag + 2] == '-' || s[tag + 2] == '+')) ? s[tag + 2] : 0;
    std::string_view text = std::string_view(s).substr(p, tag - p);
    std::size_t after = tag + 2 + (sign ? 1 : 0);
    if (kind == '%' && lex_raw(text, p, tag, sign, after)) return;
    emit_text(text, p, sign, kind == '{');
    line_starting_ = false;
    pos_ = after;
    if (kind == '#') return lex_comment(tag);
    emit(kind == '{' ? TokenType::VarBegin : TokenType::BlockBegin, "", tag);
    lex_tag(kind == '{', tag);
  }

  // `{% raw %}...{% endraw %}`: returns false when the block tag at `tag` is not a raw begin.
  bool lex_raw(std::string_view text, std::size_t p, std::size_t tag, char sign, std::size_t after) {
    const std::string& s = out_.source;
    std::size_t q = skip_space(s, after);
    if (s.compare(q, 3, "raw") != 0) return false;
    q = skip_space(s, q + 3);
    std::size_t body;
    if (s.compare(q, 3, "-%}") == 0) {
      body = skip_space(s, q + 3);
    } else if (s.compare(q, 2, "%}") == 0) {
      body = q + 2;
    } else {
      return false;
    }
    emit_text(text, p, sign, false);
    // Find the earliest "{%[-+]?\s*endraw\s*(+%}|-%}\s*|%}\n?)".
    for (std::size_t i = body; i + 1 < s.size(); ++i) {
      if (s[i] != '{' || s[i + 1] != '%') continue;
      std::size_t k = i + 2;
      char esign = (k < s.size() && (s[k] == '-' || s[k] == '+')) ? s[k] : 0;
      if (esign) ++k;
      k = skip_space(s, k);
      if (s.compare(k, 6, "endraw") != 0) continue;
      pos_ = skip_space(s, k + 6);
      std::size_t save = pos_;
      if (!match_end("%}", /*trim=*/true)) {
        pos_ = save;
        continue;
      }
      std::size_t after_end = pos_;
      bool ls = line_starting_;
      line_starting_ = false;  // the raw begin tag does not end with a newline
      if (s[body - 1] == '\n') line_starting_ = true;
      emit_text(std::string_view(s).substr(body, i - body), body, esign, false);
      pos_ = after_end;
      line_starting_ = ls;
      return true;
    }
    fail(tag, "Missing end of raw directive");
  }

  // Rule "comment": the earliest "+#}", "-#}\s*" or "#}\n?" after the comment body start.
  void lex_comment(std::size_t tag) {
    const std::string& s = out_.source;
    std::size_t body = pos_;
    for (std::size_t i = body; i + 1 < s.size(); ++i) {
      bool signed_end = (s[i] == '-' || s[i] == '+') && s.compare(i + 1, 2, "#}") == 0;
      if (!signed_end && s.compare(i, 2, "#}") != 0) continue;
      pos_ = i;
      match_end("#}", /*trim=*/true);
      return;
    }
    fail(tag, "Missing end of comment tag");
  }

  void lex_tag(bool variable, std::size_t tag) {
    const std::string& s = out_.source;
    std::vector<char> balance;
    std::string_view end = variable ? "}}" : "%}";
    while (true) {
      if (pos_ >= s.size()) fail(tag, variable ? "unexpected end of template, expected 'end of print statement'"
                                              : "unexpected end of template, expected 'end of statement block'");
      if (balance.empty()) {
        std::size_t start = pos_;
        if (match_end(end, /*trim=*/!variable)) {
          emit(variable ? TokenType::VarEnd : TokenType::BlockEnd, "", start);
          return;
        }
      }
      if (std::size_t n = space_at(s, pos_)) {
        pos_ = skip_space(s, pos_ + n);
        continue;
      }
      if (lex_number() || lex_name() || lex_string()) continue;
      lex_operator(balance);
    }
  }

  bool lex_number() {
    const std::string& s = out_.source;
    std::size_t p = pos_;
    if (p >= s.size() || !std::isdigit(static_cast<unsigned char>(s[p]))) return false;
    if (p > 0 && s[p - 1] == '.') {
      // float_re has (?<!\.); an integer may still follow.
    } else if (std::size_t n = match_float(p)) {
      emit(TokenType::Float, s.substr(p, n), p);
      pos_ += n;
      return true;
    }
    std::size_t q = p;
    auto digits = [&](auto pred) {
      std::size_t start = q;
      while (q < s.size() && (pred(s[q]) || (s[q] == '_' && q + 1 < s.size() && pred(s[q + 1]) && q > start)))
        ++q;
      return q > start;
    };
    auto dec = [](char c) { return c >= '0' && c <= '9'; };
    char x = q + 1 < s.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(s[q + 1]))) : 0;
    if (s[q] == '0' && (x == 'x' || x == 'o' || x == 'b')) {
      std::size_t save = q;
      q += 2;
      if (q < s.size() && s[q] == '_') ++q;
      bool ok = x == 'x' ? digits([](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })
                : x == 'o' ? digits([](char c) { return c >= '0' && c <= '7'; })
                           : digits([](char c) { return c == '0' || c == '1'; });
      if (!ok) q = save + 1;
    } else if (s[q] == '0') {
      ++q;
      while (q + 1 < s.size() && (s[q] == '0' || (s[q] == '_' && s[q + 1] == '0'))) ++q;
    } else {
      digits(dec);
    }
    emit(TokenType::Integer, s.substr(p, q - p), p);
    pos_ = q;
    return true;
  }

  // float_re: digits ( (.digits)? e[+-]?digits | .digits ); returns the match length or 0.
  std::size_t match_float(std::size_t p) const {
    const std::string& s = out_.source;
    auto digits = [&](std::size_t q) {
      std::size_t start = q;
      while (q < s.size() && (std::isdigit(static_cast<unsigned char>(s[q])) ||
                              (s[q] == '_' && q > start && q + 1 < s.size() &&
                               std::isdigit(static_cast<unsigned char>(s[q + 1])))))
        ++q;
      return q;
    };
    std::size_t q = digits(p);
    std::size_t frac_end = q;
    if (q + 1 < s.size() && s[q] == '.' && std::isdigit(static_cast<unsigned char>(s[q + 1])))
      frac_end = digits(q + 1);
    std::size_t e = frac_end;
    if (e < s.size() && (s[e] == 'e' || s[e] == 'E')) {
      std::size_t k = e + 1;
      if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
      if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) return digits(k) - p;
    }
    return frac_end > q ? frac_end - p : 0;
  }

  bool lex_name() {
    const std::string& s = out_.source;
    if (!is_name_start(static_cast<unsigned char>(s[pos_]))) return false;
    std::size_t q = pos_;
    while (q < s.size() && is_name_char(static_cast<unsigned char>(s[q]))) ++q;
    emit(TokenType::Name, s.substr(pos_, q - pos_), pos_);
    pos_ = q;
    return true;
  }

  bool lex_string() {
    const std::string& s = out_.source;
    char q = s[pos_];
    if (q != '\'' && q != '"') return false;
    std::size_t i = pos_ + 1;
    while (i < s.size() && s[i] != q) i += s[i] == '\\' ? 2 : 1;
    if (i >= s.size()) fail(pos_, "unexpected char '" + std::string(1, q) + "'");
    emit(TokenType::String, unescape(std::string_view(s).substr(pos_ + 1, i - pos_ - 1)), pos_);
    pos_ = i + 1;
    return true;
  }

  // Python's "unicode-escape" decoding of a string literal body.
  static std::string unescape(std::string_view b) {
    std::string out;
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (b[i] != '\\' || i + 1 >= b.size()) {
        out.push_back(b[i]);
        continue;
      }
      char c = b[++i];
      auto hex = [&](int n) -> long {
        long v = 0;
        for (int k = 1; k <= n; ++k) {
          if (i + k >= b.size() || !std::isxdigit(static_cast<unsigned char>(b[i + k]))) return -1;
          v = v * 16 + std::stol(std::string(1, b[i + k]), nullptr, 16);
        }
        return v;
      };
      switch (c) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'v': out.push_back('\v'); break;
        case '\n': break;
        case 'x':
        case 'u':
        case 'U': {
          int n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
          long v = hex(n);
          if (v < 0 || v > 0x10FFFF) throw TemplateError("invalid \\" + std::string(1, c) + " escape in string literal");
          utf8::append(out, static_cast<char32_t>(v));
          i += n;
          break;
        }
        default:
          if (c >= '0' && c <= '7') {
            int v = c - '0';
            for (int k = 0; k < 2 && i + 1 < b.size() && b[i + 1] >= '0' && b[i + 1] <= '7'; ++k)
              v = v * 8 + (b[++i] - '0');
            utf8::append(out, static_cast<char32_t>(v));
          } else {
            out.push_back('\\');
            out.push_back(c);
          }
      }
    }
    return out;
  }

  void lex_operator(std::vector<char>& balance) {
    const std::string& s = out_.source;
    static const char* two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : two) {
      if (s.compare(pos_, 2, op) == 0) {
        emit(TokenType::Operator, op, pos_);
        pos_ += 2;
        return;
      }
    }
    char c = s[pos_];
    static const std::string singles = "+-/*%~[](){}|.,:;=<>";
    if (singles.find(c) == std::string::npos) {
      fail(pos_, std::string("unexpected char '") + c + "'");
    }
    if (c == '(' || c == '[' || c == '{') {
      balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) fail(pos_, std::string("unexpected '") + c + "'");
      char want = balance.back();
      balance.pop_back();
      if (want != c) fail(pos_, std::string("unexpected '") + c + "', expected '" + want + "'");
    }
    emit(TokenType::Operator, std::string(1, c), pos_);
    ++pos_;
  }

  TokenStream out_;
  std::size_t pos_ = 0;
  bool line_starting_ = true;
};

// Splits on \r\n, \r and \n, drops one trailing empty line, joins with \n.
std::string normalize_newlines(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out.push_back(src[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

TokenStream tokenize(std::string_view source) { return Lexer(normalize_newlines(source)).run(); }

}  // namespace loom::chat
