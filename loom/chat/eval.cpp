// Expression evaluation with Python operator semantics and jinja2's sandboxed attribute/item access:
// `a.b` tries the Python attribute (methods) then the item; `a[b]` tries the item then the attribute;
// a miss gives Undefined, and mutating methods are "unsafe" (calling them fails, as in
// ImmutableSandboxedEnvironment).
#include <cmath>
#include <algorithm>
#include <limits>
#include <optional>

#include "loom/chat/interpreter.h"
#include "loom/chat/unicode.h"

namespace loom::chat {

void fail_undefined(const Value& u) {
  const std::string& hint = u.undefined_hint();
  throw PyError{hint.empty() ? "undefined value" : hint};
}

namespace {

std::string undefined_name_hint(const std::string& name) { return "'" + name + "' is undefined"; }

std::string obj_desc(const Value& v) {
  return v.kind() == Kind::Object ? v.type_name() + " object" : "'" + v.type_name() + " object'";
}

std::int64_t checked(__int128 v) {
  if (v > std::numeric_limits<std::int64_t>::max() || v < std::numeric_limits<std::int64_t>::min())
    throw PyError{"integer overflow (loom limits integers to 64 bits)"};
  return static_cast<std::int64_t>(v);
}

std::int64_t floordiv(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  throw PyError{"unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                b.type_name() + "'"};
}

Value repeat(const Value& seq, std::int64_t n, const RenderLimits& limits) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    if (seq.is_markup()) {
      Value plain = repeat(Value::string(seq.str()), n, limits);
      return Value::markup(plain.str());
    }
    if (static_cast<double>(seq.str().size()) * static_cast<double>(n) > static_cast<double>(limits.max_output_bytes))
      throw PyError{"string exceeds the output limit"};
    std::string out;
    for (std::int64_t i = 0; i < n; ++i) out += seq.str();
    return Value::string(std::move(out));
  }
  if (static_cast<double>(seq.items().size()) * static_cast<double>(n) > static_cast<double>(limits.max_list_items))
    throw PyError{"list exceeds the item limit"};
  ValueList out;
  for (std::int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.kind() == Kind::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b, const RenderLimits& limits) {
  if (op == "~") {
    std::string s = a.to_str() + b.to_str();
    if (s.size() > limits.max_output_bytes) throw PyError{"string exceeds the output limit"};
    return Value::string(std::move(s));
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if ((a.is_markup() || b.is_markup()) && (op == "+" || op == "%") && (a.is_string() || b.is_string())) {
    // Markup.__add__/__radd__/__mod__ escape the other operand (which must be a str for +).
    if (op == "+" && !(a.is_string() && b.is_string()))
      throw PyError{"can only concatenate str (not \"" + (a.is_string() ? b : a).type_name() + "\") to str"};
    if (op == "+") return Value::markup(html_escape(a) + html_escape(b));
    if (a.is_markup()) {
      ValueList args = b.kind() == Kind::Tuple ? b.items() : ValueList{b};
      for (auto& x : args) x = Value::markup(html_escape(x));
      return Value::markup(py_percent_format(a.str(), b.kind() == Kind::Tuple ? Value::tuple(args) : args[0]));
    }
  }
  bool ints = a.is_int() && b.is_int();
  bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) return Value::integer(checked(static_cast<__int128>(a.as_int()) + b.as_int()));
    if (nums) return Value::floating(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) {
      if (a.str().size() + b.str().size() > limits.max_output_bytes) throw PyError{"string exceeds the output limit"};
      return Value::string(a.str() + b.str());
    }
    if (a.kind() == b.kind() && a.is_sequence()) {
      if (a.items().size() + b.items().size() > limits.max_list_items) throw PyError{"list exceeds the item limit"};
      ValueList out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return a.kind() == Kind::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
    }
    if (a.is_string()) throw PyError{"can only concatenate str (not \"" + b.type_name() + "\") to str"};
    if (a.kind() == Kind::List)
      throw PyError{"can only concatenate list (not \"" + b.type_name() + "\") to list"};
    unsupported("+", a, b);
  }
  if (op == "-") {
    if (ints) return Value::integer(checked(static_cast<__int128>(a.as_int()) - b.as_int()));
    if (nums) return Value::floating(a.as_double() - b.as_double());
    unsupported("-", a, b);
  }
  if (op == "*") {
    if (ints) return Value::integer(checked(static_cast<__int128>(a.as_int()) * b.as_int()));
    if (nums) return Value::floating(a.as_double() * b.as_double());
    if ((a.is_string() || a.is_sequence()) && b.is_int()) return repeat(a, b.as_int(), limits);
    if ((b.is_string() || b.is_sequence()) && a.is_int()) return repeat(b, a.as_int(), limits);
    throw PyError{"can't multiply sequence by non-int of type '" + b.type_name() + "'"};
  }
  if (op == "/") {
    if (!nums) unsupported("/", a, b);
    if (b.as_double() == 0) throw PyError{"division by zero"};
    return Value::floating(a.as_double() / b.as_double());
  }
  if (op == "//") {
    if (!nums) unsupported("//", a, b);
    if (b.as_double() == 0) throw PyError{"integer division or modulo by zero"};
    if (ints) return Value::integer(floordiv(a.as_int(), b.as_int()));
    return Value::floating(std::floor(a.as_double() / b.as_double()));
  }
  if (op == "%") {
    if (a.is_string()) return Value::string(py_percent_format(a.str(), b));
    if (!nums) unsupported("%", a, b);
    if (b.as_double() == 0) throw PyError{"integer division or modulo by zero"};
    if (ints) {
      std::int64_t r = a.as_int() % b.as_int();
      if (r != 0 && ((r < 0) != (b.as_int() < 0))) r += b.as_int();
      return Value::integer(r);
    }
    double r = std::fmod(a.as_double(), b.as_double());
    if (r != 0 && ((r < 0) != (b.as_double() < 0))) r += b.as_double();
    return Value::floating(r);
  }
  if (op == "**") {
    if (!nums) unsupported("** or pow()", a, b);
    if (ints && b.as_int() >= 0) {
      __int128 r = 1;
      __int128 base = a.as_int();
      for (std::int64_t i = 0; i < b.as_int(); ++i) {
        r *= base;
        checked(r);
        if (r == 0 || r == 1) break;
      }
      return Value::integer(checked(r));
    }
    if (a.as_double() == 0 && b.as_double() < 0) throw PyError{"0.0 cannot be raised to a negative power"};
    return Value::floating(std::pow(a.as_double(), b.as_double()));
  }
  throw PyError{"unknown operator " + op};
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Kind::String:
      if (!item.is_string())
        throw PyError{"'in <string>' requires string as left operand, not " + item.type_name()};
      return container.str().find(item.str()) != std::string::npos;
    case Kind::Dict: return container.dict_data().find(item) != nullptr;
    case Kind::Undefined: return false;
    case Kind::List:
    case Kind::Tuple:
    case Kind::Generator:
      for (const auto& v : container.items())
        if (py_equal(v, item)) return true;
      return false;
    default: throw PyError{"argument of type '" + container.type_name() + "' is not iterable"};
  }
}

// The Python attribute of obj (a method, or an object attribute); Undefined when there is none.
static Value python_attribute(const Value& obj, const std::string& name, bool& found) {
  found = false;
  if (obj.kind() == Kind::Object) {
    const Value* v = obj.obj().attrs.find(name);
    if (v) {
      found = true;
      return *v;
    }
    return Value();
  }
  Value m;
  if (find_method(obj, name, m)) {
    found = true;
    return m;
  }
  return Value();
}

Value getattr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (!name.empty() && name[0] == '_')
    return Value::undefined("access to attribute '" + name + "' of " + obj_desc(obj) + " is unsafe.");
  bool found = false;
  Value attr = python_attribute(obj, name, found);
  if (found) return attr;
  if (obj.is_dict()) {
    if (const Value* v = obj.dict_data().find(name)) return *v;
  }
  return Value::undefined(obj_desc(obj) + " has no attribute '" + name + "'");
}

static bool index_of(const Value& key, std::int64_t size, std::int64_t& idx) {
  if (!key.is_int()) throw PyError{"indices must be integers"};
  idx = key.as_int();
  if (idx < 0) idx += size;
  return idx >= 0 && idx < size;
}

Value getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  try {
    switch (obj.kind()) {
      case Kind::Dict:
        if (const Value* v = obj.dict_data().find(key)) return *v;
        break;
      case Kind::List:
      case Kind::Tuple: {
        std::int64_t idx;
        if (index_of(key, static_cast<std::int64_t>(obj.items().size()), idx))
          return obj.items()[static_cast<std::size_t>(idx)];
        break;
      }
      case Kind::String: {
        auto cps = utf8::decode(obj.str());
        std::int64_t idx;
        if (index_of(key, static_cast<std::int64_t>(cps.size()), idx)) {
          std::string s;
          utf8::append(s, cps[static_cast<std::size_t>(idx)]);
          return Value::string(std::move(s));
        }
        break;
      }
      default: break;
    }
  } catch (const PyError&) {
    // TypeError on the item lookup: fall through to the attribute, as jinja2 does.
  }
  if (key.is_string()) {
    if (!key.str().empty() && key.str()[0] == '_')
      return Value::undefined("access to attribute '" + key.str() + "' of " + obj_desc(obj) + " is unsafe.");
    bool found = false;
    Value attr = python_attribute(obj, key.str(), found);
    if (found) return attr;
  }
  return Value::undefined(obj_desc(obj) + " has no element " + key.repr());
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) fail_undefined(obj);
  auto as_opt = [](const Value& v, const char* what) -> std::optional<std::int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (!v.is_int())
      throw PyError{std::string("slice indices must be integers or None or have an __index__ method")};
    (void)what;
    return v.as_int();
  };
  auto st = as_opt(step, "step");
  std::int64_t s = st.value_or(1);
  if (s == 0) throw PyError{"slice step cannot be zero"};
  bool is_str = obj.is_string();
  std::vector<char32_t> cps;
  std::int64_t n;
  if (is_str) {
    cps = utf8::decode(obj.str());
    n = static_cast<std::int64_t>(cps.size());
  } else if (obj.is_sequence()) {
    n = static_cast<std::int64_t>(obj.items().size());
  } else {
    // jinja2 turns the TypeError into Undefined.
    return Value::undefined(obj_desc(obj) + " is not subscriptable");
  }
  auto norm = [&](std::optional<std::int64_t> v, std::int64_t dflt) {
    if (!v) return dflt;
    std::int64_t x = *v;
    if (x < 0) x += n;
    if (s > 0) return std::clamp<std::int64_t>(x, 0, n);
    return std::clamp<std::int64_t>(x, -1, n - 1);
  };
  std::int64_t b = norm(as_opt(start, "start"), s > 0 ? 0 : n - 1);
  std::int64_t e = norm(as_opt(stop, "stop"), s > 0 ? n : -1);
  std::vector<std::int64_t> idx;
  for (std::int64_t i = b; s > 0 ? i < e : i > e; i += s) idx.push_back(i);
  if (is_str) {
    std::string out;
    for (auto i : idx) utf8::append(out, cps[static_cast<std::size_t>(i)]);
    return Value::string(std::move(out));
  }
  ValueList out;
  for (auto i : idx) out.push_back(obj.items()[static_cast<std::size_t>(i)]);
  return obj.kind() == Kind::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

// ---- Interpreter expression methods ----

Value Interpreter::eval(const Expr& e, const FramePtr& frame) {
  try {
    return eval_inner(e, frame);
  } catch (const PyError& err) {
    fail_at(e.offset, err.message);
  }
}

CallArgs Interpreter::eval_args(const Arguments& a, const FramePtr& frame) {
  CallArgs out;
  for (const auto& x : a.args) out.args.push_back(eval(*x, frame));
  if (a.star_args) {
    for (auto& v : iterate(eval(*a.star_args, frame))) out.args.push_back(v);
  }
  for (const auto& [k, x] : a.kwargs) out.kwargs.emplace_back(k, eval(*x, frame));
  if (a.star_kwargs) {
    Value d = eval(*a.star_kwargs, frame);
    if (!d.is_dict()) throw PyError{"argument after ** must be a mapping, not " + d.type_name()};
    for (const auto& [k, v] : d.dict_data().entries) {
      if (!k.is_string()) throw PyError{"keywords must be strings"};
      out.kwargs.emplace_back(k.str(), v);
    }
  }
  return out;
}

Value Interpreter::eval_inner(const Expr& e, const FramePtr& frame) {
  switch (e.kind) {
    case ExprKind::Const: return e.value;
    case ExprKind::Name: {
      const Value* v = frame->lookup(e.name);
      return v ? *v : Value::undefined(undefined_name_hint(e.name));
    }
    case ExprKind::List:
    case ExprKind::Tuple: {
      ValueList items;
      for (const auto& x : e.items) items.push_back(eval(*x, frame));
      return e.kind == ExprKind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case ExprKind::Dict: {
      Value d = Value::dict();
      for (std::size_t i = 0; i + 1 < e.items.size(); i += 2) {
        Value k = eval(*e.items[i], frame);
        d.dict_data().set(k, eval(*e.items[i + 1], frame));
      }
      return d;
    }
    case ExprKind::GetAttr: return getattr(eval(*e.a, frame), e.name);
    case ExprKind::GetItem: return eval_getitem(e, frame);
    case ExprKind::Slice: throw PyError{"slice outside of a subscript"};
    case ExprKind::Call: return eval_call(e, frame);
    case ExprKind::Filter: {
      Value operand = e.a ? eval(*e.a, frame) : Value();
      CallArgs args = eval_args(e.call, frame);
      return apply_filter(e.name, operand, args);
    }
    case ExprKind::Test: {
      Value operand = eval(*e.a, frame);
      CallArgs args = eval_args(e.call, frame);
      return Value::boolean(apply_test(e.name, operand, args));
    }
    case ExprKind::Not: return Value::boolean(!eval(*e.a, frame).truthy());
    case ExprKind::Neg:
    case ExprKind::Pos: {
      Value v = eval(*e.a, frame);
      if (v.is_undefined()) fail_undefined(v);
      if (!v.is_number())
        throw PyError{std::string("bad operand type for unary ") + (e.kind == ExprKind::Neg ? "-" : "+") +
                      ": '" + v.type_name() + "'"};
      if (e.kind == ExprKind::Pos) return v.is_bool() ? Value::integer(v.as_int()) : v;
      if (v.kind() == Kind::Float) return Value::floating(-v.as_double());
      return Value::integer(checked(-static_cast<__int128>(v.as_int())));
    }
    case ExprKind::Binary:
      return binary_op(e.name, eval(*e.a, frame), eval(*e.b, frame), options_.limits);
    case ExprKind::And: {
      Value l = eval(*e.a, frame);
      return l.truthy() ? eval(*e.b, frame) : l;
    }
    case ExprKind::Or: {
      Value l = eval(*e.a, frame);
      return l.truthy() ? l : eval(*e.b, frame);
    }
    case ExprKind::Compare: return eval_compare(e, frame);
    case ExprKind::CondExpr: {
      if (eval(*e.a, frame).truthy()) return eval(*e.b, frame);
      if (e.c) return eval(*e.c, frame);
      return Value::undefined("the inline if-expression evaluated to false and no else section was defined.");
    }
  }
  return Value();
}

Value Interpreter::eval_getitem(const Expr& e, const FramePtr& frame) {
  Value obj = eval(*e.a, frame);
  const Expr& k = *e.b;
  if (k.kind == ExprKind::Slice) {
    Value start = k.a ? eval(*k.a, frame) : Value::none();
    Value stop = k.b ? eval(*k.b, frame) : Value::none();
    Value step = k.c ? eval(*k.c, frame) : Value::none();
    return slice(obj, start, stop, step);
  }
  return getitem(obj, eval(k, frame));
}

Value Interpreter::eval_call(const Expr& e, const FramePtr& frame) {
  Value fn = eval(*e.a, frame);
  CallArgs args = eval_args(e.call, frame);
  return call(fn, args);
}

Value Interpreter::eval_compare(const Expr& e, const FramePtr& frame) {
  Value left = eval(*e.a, frame);
  for (const auto& [op, operand] : e.ops) {
    Value right = eval(*operand, frame);
    bool r;
    if (op == "==") {
      r = py_equal(left, right);
    } else if (op == "!=") {
      r = !py_equal(left, right);
    } else if (op == "<") {
      r = py_less(left, right);
    } else if (op == ">") {
      r = py_less(right, left);
    } else if (op == "<=") {
      r = py_less(left, right) || py_equal(left, right);
    } else if (op == ">=") {
      r = py_less(right, left) || py_equal(left, right);
    } else if (op == "in") {
      r = contains(right, left);
    } else {
      r = !contains(right, left);
    }
    if (!r) return Value::boolean(false);
    left = right;
  }
  return Value::boolean(true);
}

}  // namespace loom::chat
