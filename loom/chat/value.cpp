// Python value semantics for the Jinja engine: truthiness, str/repr, equality and ordering, len and
// iteration, and JSON in both directions (json.dumps exactly as Python writes it).
#include "loom/chat/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "loom/chat/unicode.h"

namespace loom::chat {

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.s_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::none() {
  Value v;
  v.kind_ = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::Bool;
  v.b_ = b;
  return v;
}
Value Value::integer(std::int64_t i) {
  Value v;
  v.kind_ = Kind::Int;
  v.i_ = i;
  return v;
}
Value Value::floating(double f) {
  Value v;
  v.kind_ = Kind::Float;
  v.f_ = f;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.s_ = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::markup(std::string s) {
  Value v = string(std::move(s));
  v.b_ = true;
  return v;
}

std::string html_escape(const Value& v) {
  std::string s = v.to_str();
  if (v.is_markup()) return s;
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

Value Value::list(ValueList items) {
  Value v;
  v.kind_ = Kind::List;
  v.list_ = std::make_shared<ValueList>(std::move(items));
  return v;
}
Value Value::tuple(ValueList items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::Tuple;
  return v;
}
Value Value::generator(ValueList items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::Generator;
  return v;
}
Value Value::dict() {
  Value v;
  v.kind_ = Kind::Dict;
  v.dict_ = std::make_shared<DictData>();
  return v;
}
Value Value::function(std::string name, std::function<Value(CallArgs&)> fn) {
  Value v;
  v.kind_ = Kind::Function;
  v.fn_ = std::make_shared<FunctionData>(FunctionData{std::move(name), std::move(fn)});
  return v;
}
Value Value::object(std::string type_name) {
  Value v;
  v.kind_ = Kind::Object;
  v.obj_ = std::make_shared<ObjectData>();
  v.obj_->type_name = std::move(type_name);
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return floating(static_cast<double>(u));
      return integer(static_cast<std::int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      for (const auto& e : j) items.push_back(from_json(e));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = dict();
      for (auto it = j.begin(); it != j.end(); ++it)
        d.dict_data().set(string(it.key()), from_json(it.value()));
      return d;
    }
    default: return none();
  }
}

const std::string& Value::undefined_hint() const {
  static const std::string empty;
  return s_ ? *s_ : empty;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b_;
    case Kind::Int: return i_ != 0;
    case Kind::Float: return f_ != 0.0;
    case Kind::String: return !s_->empty();
    case Kind::List:
    case Kind::Tuple: return !list_->empty();
    case Kind::Dict: return !dict_->entries.empty();
    default: return true;
  }
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Function: return "function";
    case Kind::Generator: return "generator";
    case Kind::Object: return obj_->type_name;
  }
  return "object";
}

bool Value::same_identity(const Value& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::List:
    case Kind::Tuple:
    case Kind::Generator: return list_ == o.list_;
    case Kind::Dict: return dict_ == o.dict_;
    case Kind::Function: return fn_ == o.fn_;
    case Kind::Object: return obj_ == o.obj_;
    default: return py_equal(*this, o);
  }
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // e.g. "-1.2345e+02" with the shortest digits
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  auto epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    // Python's repr switches to exponent form when exp < -4 or exp >= 16.
    if (exp < 0) {
      out += "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits + std::string(static_cast<std::size_t>(exp + 1 - digits.size()), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + ebuf;
}

std::string py_str_repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (char32_t c : utf8::decode(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!utf8::is_printable(c)) {
      char buf[16];
      if (c < 0x100)
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000)
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      else
        std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    } else {
      utf8::append(out, c);
    }
  }
  out.push_back(q);
  return out;
}

std::string Value::to_str() const {
  switch (kind_) {
    case Kind::Undefined: return "";
    case Kind::String: return *s_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "None";
    case Kind::Bool: return b_ ? "True" : "False";
    case Kind::Int: return std::to_string(i_);
    case Kind::Float: return py_float_repr(f_);
    case Kind::String: return py_str_repr(*s_);
    case Kind::List:
    case Kind::Tuple: {
      std::string out = kind_ == Kind::List ? "[" : "(";
      for (std::size_t i = 0; i < list_->size(); ++i) {
        if (i) out += ", ";
        out += (*list_)[i].repr();
      }
      if (kind_ == Kind::Tuple && list_->size() == 1) out += ",";
      return out + (kind_ == Kind::List ? "]" : ")");
    }
    case Kind::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : dict_->entries) {
        if (!first) out += ", ";
        first = false;
        out += k.repr() + ": " + v.repr();
      }
      return out + "}";
    }
    case Kind::Function: return "<function " + fn_->name + ">";
    case Kind::Generator: return "<generator object>";
    case Kind::Object: {
      if (!obj_->repr_override.empty()) return obj_->repr_override;
      Value d = Value::dict();
      d.dict_data() = obj_->attrs;
      return "<" + obj_->type_name + " " + d.repr() + ">";
    }
  }
  return "";
}

static bool is_hashable(const Value& v) {
  switch (v.kind()) {
    case Kind::List:
    case Kind::Dict: return false;
    case Kind::Tuple:
      return std::all_of(v.items().begin(), v.items().end(), is_hashable);
    default: return true;
  }
}

const Value* DictData::find(const Value& key) const {
  for (const auto& e : entries)
    if (py_equal(e.first, key)) return &e.second;
  return nullptr;
}

const Value* DictData::find(std::string_view key) const {
  for (const auto& e : entries)
    if (e.first.is_string() && e.first.str() == key) return &e.second;
  return nullptr;
}

void DictData::set(const Value& key, Value value) {
  if (!is_hashable(key)) throw PyError{"unhashable type: '" + key.type_name() + "'"};
  for (auto& e : entries) {
    if (py_equal(e.first, key)) {
      e.second = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

Value CallArgs::get(std::size_t pos, std::string_view name) {
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
    if (it->first == name) {
      Value v = std::move(it->second);
      kwargs.erase(it);
      return v;
    }
  }
  if (pos < args.size()) return args[pos];
  return Value();
}

bool CallArgs::has(std::size_t pos, std::string_view name) const {
  if (pos < args.size()) return true;
  for (const auto& kw : kwargs)
    if (kw.first == name) return true;
  return false;
}

void CallArgs::finish(std::string_view fname, std::size_t max_pos) const {
  if (!kwargs.empty())
    throw PyError{std::string(fname) + "() got an unexpected keyword argument '" +
                     kwargs.front().first + "'"};
  if (args.size() > max_pos)
    throw PyError{std::string(fname) + "() takes at most " + std::to_string(max_pos) +
                     " positional arguments (" + std::to_string(args.size()) + " given)"};
}

bool py_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Kind::Float || b.kind() == Kind::Float) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.str() == b.str();
    case Kind::List:
    case Kind::Tuple: {
      if (a.items().size() != b.items().size()) return false;
      for (std::size_t i = 0; i < a.items().size(); ++i)
        if (!py_equal(a.items()[i], b.items()[i])) return false;
      return true;
    }
    case Kind::Dict: {
      const auto& ea = a.dict_data().entries;
      if (ea.size() != b.dict_data().entries.size()) return false;
      for (const auto& [k, v] : ea) {
        const Value* o = b.dict_data().find(k);
        if (!o || !py_equal(v, *o)) return false;
      }
      return true;
    }
    default: return a.same_identity(b);
  }
}

bool py_less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Kind::Float || b.kind() == Kind::Float) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_undefined() || b.is_undefined())
    throw PyError{"'" + (a.is_undefined() ? a : b).undefined_hint() + "' is undefined"};
  if (a.kind() == b.kind()) {
    if (a.is_string()) return a.str() < b.str();  // UTF-8 byte order == code point order
    if (a.is_sequence()) {
      const auto& x = a.items();
      const auto& y = b.items();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (py_equal(x[i], y[i])) continue;
        return py_less(x[i], y[i]);
      }
      return x.size() < y.size();
    }
  }
  throw PyError{"'<' not supported between instances of '" + a.type_name() + "' and '" +
                   b.type_name() + "'"};
}

ValueList iterate(const Value& v) {
  switch (v.kind()) {
    case Kind::Undefined: return {};
    case Kind::List:
    case Kind::Tuple:
    case Kind::Generator: return v.items();
    case Kind::Dict: {
      ValueList keys;
      for (const auto& e : v.dict_data().entries) keys.push_back(e.first);
      return keys;
    }
    case Kind::String: {
      ValueList chars;
      for (char32_t c : utf8::decode(v.str())) {
        std::string s;
        utf8::append(s, c);
        chars.push_back(Value::string(std::move(s)));
      }
      return chars;
    }
    default: throw PyError{"'" + v.type_name() + "' object is not iterable"};
  }
}

std::int64_t py_len(const Value& v) {
  switch (v.kind()) {
    case Kind::Undefined: return 0;
    case Kind::String: return static_cast<std::int64_t>(utf8::length(v.str()));
    case Kind::List:
    case Kind::Tuple: return static_cast<std::int64_t>(v.items().size());
    case Kind::Dict: return static_cast<std::int64_t>(v.dict_data().entries.size());
    default: throw PyError{"object of type '" + v.type_name() + "' has no len()"};
  }
}

// ---- JSON ----

static void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  for (char32_t c : utf8::decode(s)) {
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    char buf[16];
    if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
      if (c >= 0x10000) {
        char32_t v = c - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      }
      out += buf;
    } else {
      utf8::append(out, c);
    }
  }
  out.push_back('"');
}

static std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return py_float_repr(d);
}

static std::string json_key(const Value& k) {
  switch (k.kind()) {
    case Kind::String: return k.str();
    case Kind::Bool: return k.as_bool() ? "true" : "false";
    case Kind::None: return "null";
    case Kind::Int: return std::to_string(k.as_int());
    case Kind::Float: return json_float(k.as_double());
    default:
      throw PyError{"keys must be str, int, float, bool or None, not " + k.type_name()};
  }
}

static void dump(std::string& out, const Value& v, const JsonDumpOptions& opt, int depth) {
  if (depth > 200) throw PyError{"maximum recursion depth exceeded while encoding a JSON object"};
  auto newline = [&](int level) {
    if (!opt.has_indent) return;
    out.push_back('\n');
    for (int i = 0; i < level; ++i) out += opt.indent;
  };
  switch (v.kind()) {
    case Kind::None: out += "null"; return;
    case Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.as_int()); return;
    case Kind::Float: out += json_float(v.as_double()); return;
    case Kind::String: json_string(out, v.str(), opt.ensure_ascii); return;
    case Kind::List:
    case Kind::Tuple: {
      if (v.items().empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (std::size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += opt.item_sep;
        newline(depth + 1);
        dump(out, v.items()[i], opt, depth + 1);
      }
      newline(depth);
      out.push_back(']');
      return;
    }
    case Kind::Dict: {
      if (v.dict_data().entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [k, val] : v.dict_data().entries) entries.emplace_back(json_key(k), &val);
      if (opt.sort_keys) {
        for (const auto& [k, val] : v.dict_data().entries)
          if (!k.is_string())
            throw PyError{"'<' not supported between instances of 'str' and '" +
                             k.type_name() + "'"};
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out.push_back('{');
      for (std::size_t i = 0; i < entries.size(); ++i) {
        if (i) out += opt.item_sep;
        newline(depth + 1);
        json_string(out, entries[i].first, opt.ensure_ascii);
        out += opt.key_sep;
        dump(out, *entries[i].second, opt, depth + 1);
      }
      newline(depth);
      out.push_back('}');
      return;
    }
    default:
      throw PyError{"Object of type " + v.type_name() + " is not JSON serializable"};
  }
}

std::string py_json_dumps(const Value& v, const JsonDumpOptions& opt) {
  std::string out;
  dump(out, v, opt, 0);
  return out;
}

nlohmann::ordered_json to_json(const Value& v) {
  switch (v.kind()) {
    case Kind::None: return nullptr;
    case Kind::Bool: return v.as_bool();
    case Kind::Int: return v.as_int();
    case Kind::Float: return v.as_double();
    case Kind::String: return v.str();
    case Kind::List:
    case Kind::Tuple: {
      auto a = nlohmann::ordered_json::array();
      for (const auto& e : v.items()) a.push_back(to_json(e));
      return a;
    }
    case Kind::Dict: {
      auto o = nlohmann::ordered_json::object();
      for (const auto& [k, val] : v.dict_data().entries) o[json_key(k)] = to_json(val);
      return o;
    }
    default:
      throw PyError{"Object of type " + v.type_name() + " is not JSON serializable"};
  }
}

}  // namespace loom::chat
