// Python methods of str, dict, list and tuple that templates call (`message.content.strip()`,
// `tool.get('x')`, `'{}'.format(x)`), plus printf-style `%` formatting. Mutating methods exist but
// are "unsafe" in ImmutableSandboxedEnvironment: looking them up gives an Undefined that fails
// when called, exactly like jinja2.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "loom/chat/interpreter.h"
#include "loom/chat/unicode.h"

namespace loom::chat {
namespace {

using Cps = std::vector<char32_t>;

std::string arg_str(const Value& v, const char* fname) {
  if (!v.is_string())
    throw PyError{std::string(fname) + " arg must be None or str, not " + v.type_name()};
  return v.str();
}

// str.strip/lstrip/rstrip(chars=None).
std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  Cps c = utf8::decode(s);
  Cps set;
  bool ws = chars.is_undefined() || chars.is_none();
  if (!ws) set = utf8::decode(arg_str(chars, "strip"));
  auto drop = [&](char32_t x) {
    return ws ? utf8::is_space(x) : std::find(set.begin(), set.end(), x) != set.end();
  };
  std::size_t b = 0, e = c.size();
  if (left)
    while (b < e && drop(c[b])) ++b;
  if (right)
    while (e > b && drop(c[e - 1])) --e;
  return utf8::encode(Cps(c.begin() + static_cast<std::ptrdiff_t>(b), c.begin() + static_cast<std::ptrdiff_t>(e)));
}

// str.split(sep=None, maxsplit=-1) and rsplit.
Value split(const std::string& s, const Value& sepv, const Value& maxv, bool from_right) {
  std::int64_t maxsplit = (maxv.is_undefined() || maxv.is_none()) ? -1 : maxv.as_int();
  ValueList out;
  if (sepv.is_undefined() || sepv.is_none()) {
    Cps c = utf8::decode(s);
    std::vector<std::pair<std::size_t, std::size_t>> words;
    if (!from_right) {
      std::size_t i = 0;
      while (i < c.size()) {
        while (i < c.size() && utf8::is_space(c[i])) ++i;
        if (i >= c.size()) break;
        if (maxsplit >= 0 && static_cast<std::int64_t>(words.size()) == maxsplit) {
          std::size_t e = c.size();
          while (e > i && utf8::is_space(c[e - 1])) --e;
          words.emplace_back(i, e);
          break;
        }
        std::size_t j = i;
        while (j < c.size() && !utf8::is_space(c[j])) ++j;
        words.emplace_back(i, j);
        i = j;
      }
    } else {
      std::size_t i = c.size();
      while (i > 0) {
        while (i > 0 && utf8::is_space(c[i - 1])) --i;
        if (i == 0) break;
        if (maxsplit >= 0 && static_cast<std::int64_t>(words.size()) == maxsplit) {
          std::size_t b = 0;
          while (b < i && utf8::is_space(c[b])) ++b;
          words.emplace_back(b, i);
          break;
        }
        std::size_t j = i;
        while (j > 0 && !utf8::is_space(c[j - 1])) --j;
        words.emplace_back(j, i);
        i = j;
      }
      std::reverse(words.begin(), words.end());
    }
    for (auto [b, e] : words)
      out.push_back(Value::string(utf8::encode(Cps(c.begin() + static_cast<std::ptrdiff_t>(b), c.begin() + static_cast<std::ptrdiff_t>(e)))));
    return Value::list(std::move(out));
  }
  std::string sep = arg_str(sepv, "split");
  if (sep.empty()) throw PyError{"empty separator"};
  std::vector<std::string> parts;
  if (!from_right) {
    std::size_t start = 0;
    while (true) {
      if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) break;
      auto p = s.find(sep, start);
      if (p == std::string::npos) break;
      parts.push_back(s.substr(start, p - start));
      start = p + sep.size();
    }
    parts.push_back(s.substr(start));
  } else {
    std::size_t end = s.size();
    while (true) {
      if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) break;
      if (end < sep.size()) break;
      auto p = s.rfind(sep, end - sep.size());
      if (p == std::string::npos) break;
      parts.push_back(s.substr(p + sep.size(), end - p - sep.size()));
      end = p;
    }
    parts.push_back(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
  }
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return Value::list(std::move(out));
}

bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    if (!a.is_string())
      throw PyError{std::string(prefix ? "startswith" : "endswith") +
                    " first arg must be str or a tuple of str, not " + a.type_name()};
    const std::string& x = a.str();
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.kind() == Kind::Tuple) {
    for (const auto& a : affix.items())
      if (one(a)) return true;
    return false;
  }
  return one(affix);
}

std::string replace(const std::string& s, const std::string& old, const std::string& neu, std::int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `neu` between every code point (and at both ends).
    Cps c = utf8::decode(s);
    std::int64_t done = 0;
    for (std::size_t i = 0; i <= c.size(); ++i) {
      if (count < 0 || done < count) {
        out += neu;
        ++done;
      }
      if (i < c.size()) utf8::append(out, c[i]);
    }
    return out;
  }
  std::size_t start = 0;
  std::int64_t done = 0;
  while (count < 0 || done < count) {
    auto p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += neu;
    start = p + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

// Python str.title(): upper-case a cased char that follows an uncased one, lower-case the rest.
std::string title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : utf8::decode(s)) {
    bool cased = utf8::is_upper(c) || utf8::is_lower(c);
    utf8::append(out, cased ? (prev_cased ? utf8::to_lower(c) : utf8::to_upper(c)) : c);
    prev_cased = cased;
  }
  return out;
}

std::string capitalize(const std::string& s) {
  Cps c = utf8::decode(s);
  std::string out;
  for (std::size_t i = 0; i < c.size(); ++i) utf8::append(out, i == 0 ? utf8::to_upper(c[i]) : utf8::to_lower(c[i]));
  return out;
}

Value method_value(std::string name, std::function<Value(CallArgs&)> fn) { return Value::function(std::move(name), std::move(fn)); }

Value unsafe(const Value& obj, const std::string& name) {
  return Value::undefined("access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe.");
}

bool str_method(const Value& obj, const std::string& name, Value& out) {
  const std::string s = obj.str();
  auto pred = [&](auto fn) {
    out = method_value(name, [s, fn](CallArgs& a) {
      a.finish("str", 0);
      Cps c = utf8::decode(s);
      return Value::boolean(!c.empty() && std::all_of(c.begin(), c.end(), fn));
    });
    return true;
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    out = method_value(name, [s, l, r, name](CallArgs& a) {
      Value chars = a.get(0, "chars");
      a.finish(name, 1);
      return Value::string(strip(s, chars, l, r));
    });
  } else if (name == "split" || name == "rsplit") {
    bool right = name == "rsplit";
    out = method_value(name, [s, right, name](CallArgs& a) {
      Value sep = a.get(0, "sep"), maxsplit = a.get(1, "maxsplit");
      a.finish(name, 2);
      return split(s, sep, maxsplit, right);
    });
  } else if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    out = method_value(name, [s, prefix, name](CallArgs& a) {
      Value affix = a.get(0, "prefix");
      a.finish(name, 1);
      return Value::boolean(affix_match(s, affix, prefix));
    });
  } else if (name == "replace") {
    out = method_value(name, [s](CallArgs& a) {
      Value o = a.get(0, "old"), n = a.get(1, "new"), c = a.get(2, "count");
      a.finish("replace", 3);
      return Value::string(replace(s, arg_str(o, "replace"), arg_str(n, "replace"),
                                   c.is_undefined() ? -1 : c.as_int()));
    });
  } else if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" ||
             name == "swapcase") {
    out = method_value(name, [s, name](CallArgs& a) {
      a.finish(name, 0);
      if (name == "upper") return Value::string(utf8::upper(s));
      if (name == "lower") return Value::string(utf8::lower(s));
      if (name == "title") return Value::string(title(s));
      if (name == "capitalize") return Value::string(capitalize(s));
      std::string r;
      for (char32_t c : utf8::decode(s)) utf8::append(r, utf8::is_upper(c) ? utf8::to_lower(c) : utf8::to_upper(c));
      return Value::string(r);
    });
  } else if (name == "format") {
    out = method_value(name, [s](CallArgs& a) { return Value::string(py_format(s, a)); });
  } else if (name == "join") {
    out = method_value(name, [s](CallArgs& a) {
      Value it = a.get(0, "iterable");
      a.finish("join", 1);
      std::string r;
      bool first = true;
      for (const auto& v : iterate(it)) {
        if (!v.is_string()) throw PyError{"sequence item: expected str instance, " + v.type_name() + " found"};
        if (!first) r += s;
        first = false;
        r += v.str();
      }
      return Value::string(r);
    });
  } else if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    out = method_value(name, [s, name](CallArgs& a) {
      Value sub = a.get(0, "sub");
      a.finish(name, 1);
      std::string x = arg_str(sub, name.c_str());
      if (name == "count") {
        if (x.empty()) return Value::integer(static_cast<std::int64_t>(utf8::length(s)) + 1);
        std::int64_t n = 0;
        for (auto p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++n;
        return Value::integer(n);
      }
      auto p = (name == "find" || name == "index") ? s.find(x) : s.rfind(x);
      if (p == std::string::npos) {
        if (name == "index" || name == "rindex") throw PyError{"substring not found"};
        return Value::integer(-1);
      }
      return Value::integer(static_cast<std::int64_t>(utf8::length(std::string_view(s).substr(0, p))));
    });
  } else if (name == "isdigit" || name == "isnumeric" || name == "isdecimal") {
    return pred(utf8::is_digit);
  } else if (name == "isalpha") {
    return pred(utf8::is_alpha);
  } else if (name == "isspace") {
    return pred(utf8::is_space);
  } else if (name == "isalnum") {
    return pred([](char32_t c) { return utf8::is_alpha(c) || utf8::is_digit(c); });
  } else if (name == "isupper" || name == "islower") {
    bool up = name == "isupper";
    out = method_value(name, [s, up](CallArgs&) {
      bool any = false;
      for (char32_t c : utf8::decode(s)) {
        if (up ? utf8::is_lower(c) : utf8::is_upper(c)) return Value::boolean(false);
        if (up ? utf8::is_upper(c) : utf8::is_lower(c)) any = true;
      }
      return Value::boolean(any);
    });
  } else if (name == "splitlines") {
    out = method_value(name, [s](CallArgs& a) {
      a.finish("splitlines", 0);
      ValueList lines;
      std::string cur;
      Cps c = utf8::decode(s);
      for (std::size_t i = 0; i < c.size(); ++i) {
        char32_t x = c[i];
        bool br = x == '\n' || x == '\r' || x == 0x0B || x == 0x0C || x == 0x1C || x == 0x1D ||
                  x == 0x1E || x == 0x85 || x == 0x2028 || x == 0x2029;
        if (!br) {
          utf8::append(cur, x);
          continue;
        }
        if (x == '\r' && i + 1 < c.size() && c[i + 1] == '\n') ++i;
        lines.push_back(Value::string(cur));
        cur.clear();
      }
      if (!cur.empty()) lines.push_back(Value::string(cur));
      return Value::list(std::move(lines));
    });
  } else {
    return false;
  }
  return true;
}

bool dict_method(const Value& obj, const std::string& name, Value& out) {
  if (name == "items" || name == "keys" || name == "values") {
    out = method_value(name, [obj, name](CallArgs& a) {
      a.finish(name, 0);
      ValueList r;
      for (const auto& [k, v] : obj.dict_data().entries) {
        if (name == "items") r.push_back(Value::tuple({k, v}));
        else r.push_back(name == "keys" ? k : v);
      }
      return Value::list(std::move(r));
    });
  } else if (name == "get") {
    out = method_value(name, [obj](CallArgs& a) {
      Value key = a.get(0, "key");
      Value dflt = a.has(1, "default") ? a.get(1, "default") : Value::none();
      a.finish("get", 2);
      const Value* v = obj.dict_data().find(key);
      return v ? *v : dflt;
    });
  } else if (name == "copy") {
    out = method_value(name, [obj](CallArgs&) {
      Value d = Value::dict();
      d.dict_data() = obj.dict_data();
      return d;
    });
  } else if (name == "pop" || name == "popitem" || name == "update" || name == "clear" ||
             name == "setdefault") {
    out = unsafe(obj, name);
  } else {
    return false;
  }
  return true;
}

bool seq_method(const Value& obj, const std::string& name, Value& out) {
  if (name == "index" || name == "count") {
    out = method_value(name, [obj, name](CallArgs& a) {
      Value x = a.get(0, "value");
      a.finish(name, 1);
      std::int64_t n = 0;
      for (std::size_t i = 0; i < obj.items().size(); ++i) {
        if (!py_equal(obj.items()[i], x)) continue;
        if (name == "index") return Value::integer(static_cast<std::int64_t>(i));
        ++n;
      }
      if (name == "index") throw PyError{x.repr() + " is not in list"};
      return Value::integer(n);
    });
    return true;
  }
  if (obj.kind() != Kind::List) return false;
  if (name == "copy") {
    out = method_value(name, [obj](CallArgs&) { return Value::list(obj.items()); });
    return true;
  }
  if (name == "append" || name == "pop" || name == "insert" || name == "extend" || name == "remove" ||
      name == "reverse" || name == "sort" || name == "clear") {
    out = unsafe(obj, name);
    return true;
  }
  return false;
}

}  // namespace

bool find_method(const Value& obj, const std::string& name, Value& out) {
  switch (obj.kind()) {
    case Kind::String: return str_method(obj, name, out);
    case Kind::Dict: return dict_method(obj, name, out);
    case Kind::List:
    case Kind::Tuple: return seq_method(obj, name, out);
    default: return false;
  }
}

// ---- formatting ----

namespace {

struct Spec {
  char fill = ' ';
  char align = 0;
  char sign = '-';
  bool alt = false;
  bool zero = false;
  int width = -1;
  int precision = -1;
  char type = 0;
};

Spec parse_spec(const std::string& f) {
  Spec s;
  std::size_t i = 0;
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (f.size() >= 2 && is_align(f[1])) {
    s.fill = f[0];
    s.align = f[1];
    i = 2;
  } else if (!f.empty() && is_align(f[0])) {
    s.align = f[0];
    i = 1;
  }
  if (i < f.size() && (f[i] == '+' || f[i] == '-' || f[i] == ' ')) s.sign = f[i++];
  if (i < f.size() && f[i] == '#') s.alt = true, ++i;
  if (i < f.size() && f[i] == '0') s.zero = true, ++i;
  while (i < f.size() && std::isdigit(static_cast<unsigned char>(f[i]))) s.width = std::max(s.width, 0) * 10 + (f[i++] - '0');
  if (i < f.size() && f[i] == '.') {
    ++i;
    s.precision = 0;
    while (i < f.size() && std::isdigit(static_cast<unsigned char>(f[i]))) s.precision = s.precision * 10 + (f[i++] - '0');
  }
  if (i < f.size()) s.type = f[i++];
  if (i != f.size()) throw PyError{"Invalid format specifier '" + f + "'"};
  return s;
}

std::string pad(const std::string& body, const Spec& s, bool numeric) {
  std::size_t len = utf8::length(body);
  if (s.width < 0 || static_cast<std::size_t>(s.width) <= len) return body;
  std::size_t n = static_cast<std::size_t>(s.width) - len;
  char align = s.align ? s.align : (numeric ? '>' : '<');
  char fill = s.fill;
  if (s.zero && !s.align) {
    fill = '0';
    align = '=';
  }
  if (align == '<') return body + std::string(n, fill);
  if (align == '>') return std::string(n, fill) + body;
  if (align == '^') return std::string(n / 2, fill) + body + std::string(n - n / 2, fill);
  // '=': padding after the sign.
  if (!body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' '))
    return body.substr(0, 1) + std::string(n, fill) + body.substr(1);
  return std::string(n, fill) + body;
}

std::string format_value(const Value& v, const std::string& spec_text) {
  if (spec_text.empty()) return v.to_str();
  Spec s = parse_spec(spec_text);
  if (v.is_number() && s.type != 's') {
    char t = s.type ? s.type : (v.kind() == Kind::Float ? 0 : 'd');
    std::string body;
    char buf[512];
    if (t == 'd') {
      if (v.kind() == Kind::Float) throw PyError{"Unknown format code 'd' for object of type 'float'"};
      body = std::to_string(v.as_int());
    } else if (t == 'f' || t == 'F' || t == 'e' || t == 'E' || t == '%' || t == 'g' || t == 'G') {
      double d = v.as_double() * (t == '%' ? 100.0 : 1.0);
      std::string f = std::string("%.") + std::to_string(s.precision < 0 ? 6 : s.precision) +
                      (t == '%' ? 'f' : t);
      std::snprintf(buf, sizeof(buf), f.c_str(), d);
      body = std::string(buf) + (t == '%' ? "%" : "");
    } else if (t == 'x' || t == 'X' || t == 'o' || t == 'b') {
      std::int64_t x = v.as_int();
      bool neg = x < 0;
      unsigned long long u = neg ? 0ULL - static_cast<unsigned long long>(x) : static_cast<unsigned long long>(x);
      int base = t == 'o' ? 8 : t == 'b' ? 2 : 16;
      const char* dig = t == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
      do {
        body.insert(body.begin(), dig[u % base]);
        u /= base;
      } while (u);
      if (neg) body = "-" + body;
    } else if (t == 0) {
      if (s.precision >= 0) {
        std::snprintf(buf, sizeof(buf), "%.*g", s.precision, v.as_double());
        body = buf;
      } else {
        body = v.to_str();
      }
    } else {
      throw PyError{std::string("Unknown format code '") + t + "' for object of type '" + v.type_name() + "'"};
    }
    if (s.sign == '+' && body[0] != '-') body = "+" + body;
    if (s.sign == ' ' && body[0] != '-') body = " " + body;
    return pad(body, s, true);
  }
  std::string body = v.to_str();
  if (s.precision >= 0) {
    Cps c = utf8::decode(body);
    if (c.size() > static_cast<std::size_t>(s.precision)) c.resize(static_cast<std::size_t>(s.precision));
    body = utf8::encode(c);
  }
  return pad(body, s, false);
}

}  // namespace

std::string py_format(const std::string& fmt, CallArgs& args) {
  std::string out;
  std::size_t auto_idx = 0;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      else throw PyError{"Single '}' encountered in format string"};
      out.push_back('}');
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    auto close = fmt.find('}', i);
    if (close == std::string::npos) throw PyError{"Single '{' encountered in format string"};
    std::string field = fmt.substr(i + 1, close - i - 1);
    i = close;
    std::string spec;
    if (auto colon = field.find(':'); colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    bool repr = false;
    if (auto bang = field.find('!'); bang != std::string::npos) {
      repr = field.substr(bang + 1) == "r";
      field = field.substr(0, bang);
    }
    // Field name: index or keyword, then .attr / [key] parts.
    std::size_t end = field.find_first_of(".[");
    std::string head = field.substr(0, end);
    Value v;
    if (head.empty()) {
      if (auto_idx >= args.args.size()) throw PyError{"Replacement index " + std::to_string(auto_idx) + " out of range for positional args tuple"};
      v = args.args[auto_idx++];
    } else if (std::all_of(head.begin(), head.end(), [](char x) { return std::isdigit(static_cast<unsigned char>(x)); })) {
      std::size_t k = std::stoul(head);
      if (k >= args.args.size()) throw PyError{"Replacement index " + head + " out of range for positional args tuple"};
      v = args.args[k];
    } else {
      bool found = false;
      for (const auto& [n, x] : args.kwargs)
        if (n == head) v = x, found = true;
      if (!found) throw PyError{"KeyError: '" + head + "'"};
    }
    while (end != std::string::npos && end < field.size()) {
      if (field[end] == '.') {
        std::size_t nx = field.find_first_of(".[", end + 1);
        v = getattr(v, field.substr(end + 1, nx == std::string::npos ? std::string::npos : nx - end - 1));
        end = nx;
      } else {
        std::size_t rb = field.find(']', end);
        std::string key = field.substr(end + 1, rb - end - 1);
        bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char x) { return std::isdigit(static_cast<unsigned char>(x)); });
        v = getitem(v, digits ? Value::integer(std::stoll(key)) : Value::string(key));
        end = rb == std::string::npos ? rb : rb + 1;
      }
    }
    out += repr ? format_value(Value::string(v.repr()), spec) : format_value(v, spec);
  }
  return out;
}

std::string py_percent_format(const std::string& fmt, const Value& argv) {
  ValueList args = argv.kind() == Kind::Tuple ? argv.items() : ValueList{argv};
  std::size_t next = 0;
  std::string out;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    std::size_t j = i + 1;
    if (j < fmt.size() && fmt[j] == '%') {
      out.push_back('%');
      i = j;
      continue;
    }
    std::string flags;
    while (j < fmt.size() && std::string("-+ #0").find(fmt[j]) != std::string::npos) flags += fmt[j++];
    std::string width, prec;
    while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) width += fmt[j++];
    if (j < fmt.size() && fmt[j] == '.') {
      prec = ".";
      ++j;
      while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) prec += fmt[j++];
    }
    if (j >= fmt.size()) throw PyError{"incomplete format"};
    char t = fmt[j];
    i = j;
    if (next >= args.size()) throw PyError{"not enough arguments for format string"};
    const Value& v = args[next++];
    std::string body;
    char buf[512];
    std::string cf = "%" + flags + width + prec;
    if (t == 's' || t == 'r') {
      std::string s = t == 's' ? v.to_str() : v.repr();
      std::snprintf(buf, sizeof(buf), (cf + "s").c_str(), s.c_str());
      body = s.size() < 400 ? std::string(buf) : s;
    } else if (t == 'd' || t == 'i' || t == 'x' || t == 'X' || t == 'o') {
      if (!v.is_number()) throw PyError{"%" + std::string(1, t) + " format: a real number is required, not " + v.type_name()};
      std::int64_t x = v.kind() == Kind::Float ? static_cast<std::int64_t>(v.as_double()) : v.as_int();
      std::snprintf(buf, sizeof(buf), (cf + "ll" + (t == 'i' ? 'd' : t)).c_str(), static_cast<long long>(x));
      body = buf;
    } else if (std::string("feEgG").find(t) != std::string::npos) {
      if (!v.is_number()) throw PyError{"must be real number, not " + v.type_name()};
      std::snprintf(buf, sizeof(buf), (cf + t).c_str(), v.as_double());
      body = buf;
    } else {
      throw PyError{std::string("unsupported format character '") + t + "'"};
    }
    out += body;
  }
  if (next < args.size() && !argv.is_dict()) throw PyError{"not all arguments converted during string formatting"};
  return out;
}

}  // namespace loom::chat
