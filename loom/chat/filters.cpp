// jinja2's built-in filters and tests, with transformers' `tojson`. Each follows the jinja2 3.1
// implementation's semantics (argument names, defaults, Undefined handling); filters that jinja2
// implements as generators (map, select*, reject*, items, unique, batch, reverse) return a
// Generator value: no len(), always truthy.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "loom/chat/interpreter.h"
#include "loom/chat/parser.h"
#include "loom/chat/unicode.h"

namespace loom::chat {
namespace {

const std::set<std::string, std::less<>> kFilters = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e",
    "escape", "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent",
    "int", "join", "last", "length", "list", "lower", "items", "map", "min", "max", "pprint",
    "random", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select",
    "selectattr", "slice", "sort", "string", "striptags", "sum", "title", "trim", "truncate",
    "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", "tojson"};

const std::set<std::string, std::less<>> kTests = {
    "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean",
    "false", "true", "integer", "float", "lower", "upper", "string", "mapping", "number",
    "sequence", "iterable", "callable", "sameas", "escaped", "in", "==", "eq", "equalto", "!=",
    "ne", ">", "gt", "greaterthan", "ge", ">=", "<", "lt", "lessthan", "<=", "le"};

bool is_none_or_undef(const Value& v) { return v.is_undefined() || v.is_none(); }

Value ignore_case(const Value& v) { return v.is_string() ? Value::string(utf8::lower(v.str())) : v; }

// make_attrgetter: dotted path, integer parts looked up as integers, item-then-attribute access.
Value get_path(const Value& item, const Value& attribute, const Value& dflt = Value()) {
  if (is_none_or_undef(attribute)) return item;
  std::vector<Value> parts;
  if (attribute.is_string()) {
    std::string a = attribute.str();
    std::size_t start = 0;
    while (true) {
      auto dot = a.find('.', start);
      std::string p = a.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      bool digits = !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      parts.push_back(digits ? Value::integer(std::stoll(p)) : Value::string(p));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  } else {
    parts.push_back(attribute);
  }
  Value cur = item;
  for (const auto& p : parts) {
    cur = getitem(cur, p);
    if (!dflt.is_undefined() && !dflt.is_none() && cur.is_undefined()) cur = dflt;
  }
  return cur;
}

Value first_of(const Value& v) {
  ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value last_of(const Value& v) {
  if (v.kind() == Kind::Generator) throw PyError{"'generator' object is not reversible"};
  if (!v.is_undefined() && !v.is_string() && !v.is_sequence() && !v.is_dict())
    throw PyError{"'" + v.type_name() + "' object is not reversible"};
  ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

std::string indent(std::string s, const Value& width, bool first, bool blank) {
  std::string ind = width.is_string() ? width.str() : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, width.is_undefined() ? 4 : width.as_int())), ' ');
  s += "\n";
  // str.splitlines on the few line breaks chat text contains.
  std::vector<std::string> lines;
  CallArgs none;
  Value sl;
  find_method(Value::string(s), "splitlines", sl);
  Value split_lines = sl.fn().call(none);  // keep the list alive while iterating it
  for (const auto& l : split_lines.items()) lines.push_back(l.str());
  std::string rv;
  if (blank) {
    for (std::size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + ind : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (std::size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
  }
  if (first) rv = ind + rv;
  return rv;
}

double py_round(double x, std::int64_t nd) {
  if (!std::isfinite(x)) return x;
  if (nd == 0) return std::nearbyint(x);
  if (nd > 0 && nd < 300) {
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(nd), x);
    return std::strtod(buf, nullptr);
  }
  double p = std::pow(10.0, static_cast<double>(-nd));
  return std::nearbyint(x / p) * p;
}

bool parse_py_int(std::string s, std::int64_t base, std::int64_t& out) {
  Value t = Value::string(s);
  Value strip;
  find_method(t, "strip", strip);
  CallArgs none;
  s = strip.fn().call(none).str();
  std::erase(s, '_');
  if (s.empty()) return false;
  std::size_t i = 0;
  bool neg = false;
  if (s[0] == '+' || s[0] == '-') neg = s[i++] == '-';
  if (base == 16 || base == 8 || base == 2 || base == 0) {
    if (s.size() > i + 1 && s[i] == '0') {
      char x = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i + 1])));
      std::int64_t b = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
      if (b && (base == 0 || base == b)) {
        base = b;
        i += 2;
      }
    }
    if (base == 0) base = 10;
  }
  if (i >= s.size()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str() + i, &end, static_cast<int>(base));
  if (*end != '\0' || errno == ERANGE || s[i] == '+' || s[i] == '-') return false;
  out = neg ? -v : v;
  return true;
}

bool parse_py_float(const Value& v, double& out) {
  if (v.is_number()) {
    out = v.as_double();
    return true;
  }
  if (!v.is_string()) return false;
  std::string s = v.str();
  Value strip;
  find_method(v, "strip", strip);
  CallArgs none;
  s = strip.fn().call(none).str();
  std::string low = utf8::lower(s);
  std::string body = (!low.empty() && (low[0] == '+' || low[0] == '-')) ? low.substr(1) : low;
  if (body == "inf" || body == "infinity" || body == "nan") {
    out = body == "nan" ? NAN : (low[0] == '-' ? -INFINITY : INFINITY);
    return true;
  }
  if (s.empty() || s.find_first_not_of("0123456789+-.eE_") != std::string::npos) return false;
  std::erase(s, '_');
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end && *end == '\0' && end != s.c_str();
}

Value do_int(const Value& v, const Value& dflt, const Value& base) {
  Value d = dflt.is_undefined() ? Value::integer(0) : dflt;
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_int()) return Value::integer(v.as_int());
  if (v.kind() == Kind::Float) {
    if (!std::isfinite(v.as_double())) return d;
    return Value::integer(static_cast<std::int64_t>(v.as_double()));
  }
  if (v.is_string()) {
    std::int64_t r;
    if (parse_py_int(v.str(), base.is_undefined() ? 10 : base.as_int(), r)) return Value::integer(r);
    double f;
    if (parse_py_float(v, f) && std::isfinite(f)) return Value::integer(static_cast<std::int64_t>(f));
  }
  return d;
}

std::vector<Value> sorted_values(ValueList items, bool reverse, bool case_sensitive, const Value& attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& it : items) {
    Value k = get_path(it, attribute);
    keyed.emplace_back(case_sensitive ? k : ignore_case(k), it);
  }
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& a, const auto& b) {
    return reverse ? py_less(b.first, a.first) : py_less(a.first, b.first);
  });
  ValueList out;
  for (auto& [k, v] : keyed) out.push_back(v);
  return out;
}

// transformers: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value do_tojson(const Value& v, CallArgs& a) {
  JsonDumpOptions o;
  Value ensure_ascii = a.get(0, "ensure_ascii"), ind = a.get(1, "indent"), seps = a.get(2, "separators"),
        sort = a.get(3, "sort_keys");
  a.finish("tojson", 4);
  o.ensure_ascii = ensure_ascii.truthy();
  o.sort_keys = sort.truthy();
  if (!is_none_or_undef(ind)) {
    o.has_indent = true;
    o.indent = ind.is_string() ? ind.str() : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, ind.as_int())), ' ');
    o.item_sep = ",";
  }
  if (!is_none_or_undef(seps)) {
    ValueList s = iterate(seps);
    if (s.size() != 2 || !s[0].is_string() || !s[1].is_string()) throw PyError{"separators must be a pair of strings"};
    o.item_sep = s[0].str();
    o.key_sep = s[1].str();
  }
  return Value::string(py_json_dumps(v, o));
}

Value select_like(Interpreter& in, const Value& v, CallArgs& a, bool select, bool attr) {
  ValueList out;
  if (!v.truthy()) return Value::generator({});
  std::size_t off = attr ? 1 : 0;
  if (attr && a.args.empty()) throw PyError{"Missing parameter for attribute name"};
  Value attribute = attr ? a.args[0] : Value();
  bool has_test = a.args.size() > off;
  std::string test = has_test ? a.args[off].to_str() : "";
  CallArgs rest;
  if (has_test) rest.args.assign(a.args.begin() + static_cast<std::ptrdiff_t>(off + 1), a.args.end());
  rest.kwargs = a.kwargs;
  for (const auto& item : iterate(v)) {
    Value x = attr ? get_path(item, attribute) : item;
    CallArgs call = rest;
    bool r = has_test ? in.apply_test(test, x, call) : x.truthy();
    if (r == select) out.push_back(item);
  }
  return Value::generator(std::move(out));
}

Value do_map(Interpreter& in, const Value& v, CallArgs& a) {
  ValueList out;
  if (!v.truthy()) return Value::generator({});
  if (a.args.empty()) {
    Value attribute = a.get(99, "attribute"), dflt = a.get(99, "default");
    if (!a.kwargs.empty()) throw PyError{"Unexpected keyword argument '" + a.kwargs.front().first + "'"};
    if (attribute.is_undefined()) throw PyError{"map requires a filter argument"};
    for (const auto& item : iterate(v)) out.push_back(get_path(item, attribute, dflt));
  } else {
    std::string name = a.args[0].to_str();
    CallArgs rest;
    rest.args.assign(a.args.begin() + 1, a.args.end());
    rest.kwargs = a.kwargs;
    for (const auto& item : iterate(v)) {
      CallArgs call = rest;
      out.push_back(in.apply_filter(name, item, call));
    }
  }
  return Value::generator(std::move(out));
}

}  // namespace

bool is_known_filter(std::string_view name) { return kFilters.count(name) > 0; }
bool is_known_test(std::string_view name) { return kTests.count(name) > 0; }

Value Interpreter::apply_filter(const std::string& name, const Value& v, CallArgs& a) {
  auto str_arg = [&](const Value& x) { return x.to_str(); };
  if (name == "tojson") return do_tojson(v, a);
  if (name == "length" || name == "count") return Value::integer(py_len(v));
  if (name == "string") return v.is_markup() ? v : Value::string(v.to_str());
  if (name == "safe") return Value::markup(v.to_str());
  if (name == "trim") {
    Value chars = a.get(0, "chars");
    Value strip;
    Value s = Value::string(v.to_str());
    find_method(s, "strip", strip);
    CallArgs c;
    if (!chars.is_undefined()) c.args.push_back(chars);
    Value r = strip.fn().call(c);
    return v.is_markup() ? Value::markup(r.str()) : r;
  }
  if (name == "upper") return Value::string(utf8::upper(v.to_str()));
  if (name == "lower") return Value::string(utf8::lower(v.to_str()));
  if (name == "capitalize" || name == "title") {
    Value m;
    Value s = Value::string(v.to_str());
    if (name == "capitalize") {
      find_method(s, "capitalize", m);
      CallArgs none;
      return m.fn().call(none);
    }
    // jinja2's title: split on runs of [-\s({[<], upper-case the first char of each piece.
    std::string out;
    bool start = true;
    for (char32_t c : utf8::decode(s.str())) {
      bool sep = c == '-' || utf8::is_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
      utf8::append(out, sep ? c : (start ? utf8::to_upper(c) : utf8::to_lower(c)));
      start = sep;
    }
    return Value::string(out);
  }
  if (name == "default" || name == "d") {
    Value dflt = a.has(0, "default_value") ? a.get(0, "default_value") : Value::string("");
    bool boolean = a.get(1, "boolean").truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return dflt;
    return v;
  }
  if (name == "first") return first_of(v);
  if (name == "last") return last_of(v);
  if (name == "list") return Value::list(iterate(v));
  if (name == "items") {
    if (v.is_undefined()) return Value::generator({});
    if (!v.is_dict()) throw PyError{"Can only get item pairs from a mapping."};
    ValueList out;
    for (const auto& [k, x] : v.dict_data().entries) out.push_back(Value::tuple({k, x}));
    return Value::generator(std::move(out));
  }
  if (name == "join") {
    std::string d = a.has(0, "d") ? str_arg(a.get(0, "d")) : "";
    Value attribute = a.get(1, "attribute");
    std::string out;
    bool firstv = true;
    for (const auto& item : iterate(v)) {
      if (!firstv) out += d;
      firstv = false;
      out += get_path(item, attribute).to_str();
      check_string(out.size());
    }
    return Value::string(out);
  }
  if (name == "map") return do_map(*this, v, a);
  if (name == "select" || name == "reject") return select_like(*this, v, a, name == "select", false);
  if (name == "selectattr" || name == "rejectattr") return select_like(*this, v, a, name == "selectattr", true);
  if (name == "replace") {
    Value m;
    Value s = Value::string(v.to_str());
    find_method(s, "replace", m);
    CallArgs c;
    c.args = {Value::string(str_arg(a.get(0, "old"))), Value::string(str_arg(a.get(1, "new")))};
    Value count = a.get(2, "count");
    if (!is_none_or_undef(count)) c.args.push_back(count);
    return m.fn().call(c);
  }
  if (name == "int") return do_int(v, a.get(0, "default"), a.get(1, "base"));
  if (name == "float") {
    double f;
    if (v.is_undefined()) fail_undefined(v);
    if (parse_py_float(v, f)) return Value::floating(f);
    Value d = a.get(0, "default");
    return d.is_undefined() ? Value::floating(0.0) : d;
  }
  if (name == "abs") {
    if (v.is_undefined()) fail_undefined(v);
    if (v.kind() == Kind::Float) return Value::floating(std::fabs(v.as_double()));
    if (v.is_int()) return Value::integer(std::llabs(v.as_int()));
    throw PyError{"bad operand type for abs(): '" + v.type_name() + "'"};
  }
  if (name == "round") {
    Value prec = a.get(0, "precision");
    std::string method = a.has(1, "method") ? a.get(1, "method").to_str() : "common";
    std::int64_t p = prec.is_undefined() ? 0 : prec.as_int();
    if (method != "common" && method != "ceil" && method != "floor") throw PyError{"method must be common, ceil or floor"};
    if (!v.is_number()) throw PyError{"type " + v.type_name() + " doesn't define __round__ method"};
    if (method == "common") {
      if (v.is_int()) return Value::integer(v.as_int());
      return Value::floating(py_round(v.as_double(), p));
    }
    double scale = std::pow(10.0, static_cast<double>(p));
    double r = method == "ceil" ? std::ceil(v.as_double() * scale) : std::floor(v.as_double() * scale);
    return Value::floating(r / scale);
  }
  if (name == "indent") {
    // jinja2 appends "\n" and calls splitlines(): only strings work.
    if (v.is_undefined()) fail_undefined(v);
    if (!v.is_string()) throw PyError{"'" + v.type_name() + "' object has no attribute 'splitlines'"};
    Value width = a.get(0, "width");
    bool firstl = a.get(1, "first").truthy(), blank = a.get(2, "blank").truthy();
    return Value::string(indent(v.to_str(), width, firstl, blank));
  }
  if (name == "unique") {
    bool cs = a.get(0, "case_sensitive").truthy();
    Value attribute = a.get(1, "attribute");
    ValueList out, seen;
    for (const auto& item : iterate(v)) {
      Value k = get_path(item, attribute);
      if (!cs) k = ignore_case(k);
      bool dup = false;
      for (const auto& s : seen) dup = dup || py_equal(s, k);
      if (!dup) {
        seen.push_back(k);
        out.push_back(item);
      }
    }
    return Value::generator(std::move(out));
  }
  if (name == "sort") {
    bool reverse = a.get(0, "reverse").truthy(), cs = a.get(1, "case_sensitive").truthy();
    return Value::list(sorted_values(iterate(v), reverse, cs, a.get(2, "attribute")));
  }
  if (name == "dictsort") {
    bool cs = a.get(0, "case_sensitive").truthy();
    std::string by = a.has(1, "by") ? a.get(1, "by").to_str() : "key";
    bool reverse = a.get(2, "reverse").truthy();
    if (by != "key" && by != "value") throw PyError{"You can only sort by either \"key\" or \"value\""};
    if (!v.is_dict()) throw PyError{"'" + v.type_name() + "' object has no attribute 'items'"};
    ValueList pairs;
    for (const auto& [k, x] : v.dict_data().entries) pairs.push_back(Value::tuple({k, x}));
    return Value::list(sorted_values(pairs, reverse, cs, Value::integer(by == "key" ? 0 : 1)));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      auto c = utf8::decode(v.str());
      std::reverse(c.begin(), c.end());
      return Value::string(utf8::encode(c));
    }
    ValueList items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::generator(std::move(items));
  }
  if (name == "batch") {
    std::int64_t n = a.get(0, "linecount").as_int();
    Value fill = a.get(1, "fill_with");
    if (n <= 0) throw PyError{"batch size must be positive"};
    ValueList out, cur;
    for (const auto& item : iterate(v)) {
      cur.push_back(item);
      if (static_cast<std::int64_t>(cur.size()) == n) {
        out.push_back(Value::list(std::move(cur)));
        cur.clear();
      }
    }
    if (!cur.empty()) {
      if (!is_none_or_undef(fill))
        while (static_cast<std::int64_t>(cur.size()) < n) cur.push_back(fill);
      out.push_back(Value::list(std::move(cur)));
    }
    return Value::generator(std::move(out));
  }
  if (name == "wordcount") {
    std::int64_t n = 0;
    bool in_word = false;
    for (char32_t c : utf8::decode(v.to_str())) {
      bool w = utf8::is_alpha(c) || utf8::is_digit(c) || c == '_' || (c >= 0x80 && !utf8::is_space(c) && utf8::is_printable(c));
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  if (name == "center") {
    std::int64_t w = a.has(0, "width") ? a.get(0, "width").as_int() : 80;
    std::string s = v.to_str();
    auto len = static_cast<std::int64_t>(utf8::length(s));
    if (w <= len) return Value::string(s);
    std::int64_t pad = w - len, left = pad / 2 + (pad & w & 1);
    return Value::string(std::string(static_cast<std::size_t>(left), ' ') + s + std::string(static_cast<std::size_t>(pad - left), ' '));
  }
  if (name == "escape" || name == "e") return Value::markup(html_escape(v));
  if (name == "forceescape") return Value::markup(html_escape(Value::string(v.to_str())));
  if (name == "attr") {
    // Python getattr only (no item fallback), as jinja2's do_attr.
    std::string attr = a.get(0, "name").to_str();
    Value m;
    if (v.kind() == Kind::Object) {
      if (const Value* x = v.obj().attrs.find(attr)) return *x;
    } else if (attr.empty() || attr[0] != '_') {
      if (find_method(v, attr, m)) return m;
    }
    return Value::undefined("'" + v.type_name() + " object' has no attribute '" + attr + "'");
  }
  if (name == "format") return Value::string(py_percent_format(v.to_str(), a.kwargs.empty() ? Value::tuple(a.args) : Value::tuple(a.args)));
  if (name == "sum") {
    Value attribute = a.get(0, "attribute");
    Value total = a.has(1, "start") ? a.get(1, "start") : Value::integer(0);
    for (const auto& item : iterate(v)) total = binary_op("+", total, get_path(item, attribute), options_.limits);
    return total;
  }
  if (name == "min" || name == "max") {
    bool cs = a.get(0, "case_sensitive").truthy();
    Value attribute = a.get(1, "attribute");
    ValueList items = iterate(v);
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    Value best = items[0];
    Value bk = cs ? get_path(best, attribute) : ignore_case(get_path(best, attribute));
    for (std::size_t i = 1; i < items.size(); ++i) {
      Value k = cs ? get_path(items[i], attribute) : ignore_case(get_path(items[i], attribute));
      if (name == "min" ? py_less(k, bk) : py_less(bk, k)) {
        best = items[i];
        bk = k;
      }
    }
    return best;
  }
  if (name == "pprint") return Value::string(v.repr());
  if (!is_known_filter(name)) throw PyError{"No filter named '" + name + "' found."};
  throw PyError{"filter '" + name + "' is not supported by loom's chat template engine"};
}

bool Interpreter::apply_test(const std::string& name, const Value& v, CallArgs& a) {
  Value arg = a.args.empty() ? Value() : a.args[0];
  auto need_arg = [&]() {
    if (a.args.empty() && a.kwargs.empty()) throw PyError{"test '" + name + "' missing required argument"};
    return a.args.empty() ? a.kwargs.front().second : arg;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind() == Kind::Int;
  if (name == "float") return v.kind() == Kind::Float;
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "callable") return v.is_callable();
  if (name == "iterable") {
    return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict() || v.kind() == Kind::Generator;
  }
  if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict();
  if (name == "escaped") return v.is_markup();
  if (name == "odd" || name == "even") {
    if (v.is_undefined()) fail_undefined(v);
    if (!v.is_number()) throw PyError{"unsupported operand type(s) for %: '" + v.type_name() + "' and 'int'"};
    Value r = binary_op("%", v, Value::integer(2), options_.limits);
    return name == "odd" ? py_equal(r, Value::integer(1)) : py_equal(r, Value::integer(0));
  }
  if (name == "divisibleby") {
    Value r = binary_op("%", v, need_arg(), options_.limits);
    return py_equal(r, Value::integer(0));
  }
  if (name == "lower" || name == "upper") {
    Value m;
    find_method(Value::string(v.to_str()), name == "lower" ? "islower" : "isupper", m);
    CallArgs none;
    return m.fn().call(none).truthy();
  }
  if (name == "eq" || name == "equalto" || name == "==") return py_equal(v, need_arg());
  if (name == "ne" || name == "!=") return !py_equal(v, need_arg());
  if (name == "lt" || name == "lessthan" || name == "<") return py_less(v, need_arg());
  if (name == "gt" || name == "greaterthan" || name == ">") return py_less(need_arg(), v);
  if (name == "le" || name == "<=") return py_less(v, need_arg()) || py_equal(v, need_arg());
  if (name == "ge" || name == ">=") return py_less(need_arg(), v) || py_equal(v, need_arg());
  if (name == "in") return contains(need_arg(), v);
  if (name == "sameas") return v.same_identity(need_arg());
  if (name == "filter") return is_known_filter(v.to_str());
  if (name == "test") return is_known_test(v.to_str());
  throw PyError{"No test named '" + name + "' found."};
}

}  // namespace loom::chat
