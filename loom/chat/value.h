// Jinja value model with Python semantics: the values a chat template sees (None, bool, int, float,
// str, list, tuple, insertion-ordered dict, callables, namespace/loop objects) and jinja2's Undefined.
// Lists and dicts are shared handles, as in Python; strings are UTF-8 and index by code point.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace loom::chat {

enum class Kind : std::uint8_t {
  Undefined, None, Bool, Int, Float, String, List, Tuple, Dict, Function, Object,
  Generator  // a one-shot iterator from map/select/items/...: no len(), always truthy
};

class Value;
using ValueList = std::vector<Value>;
struct DictData;
struct FunctionData;
struct ObjectData;

// Thrown by value operations that fail the way Python raises (TypeError, UndefinedError, ...). The
// interpreter catches it at the innermost template node and rethrows a TemplateError with line/column.
struct PyError {
  std::string message;
};

// A Python value. Default-constructed it is jinja2's Undefined.
class Value {
 public:
  Value() = default;
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(std::int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  // markupsafe.Markup: a str that `+`, `*` and `%` combine with escaped (not autoescaped) text.
  static Value markup(std::string s);
  static Value list(ValueList items = {});
  static Value tuple(ValueList items);
  static Value generator(ValueList items);
  static Value dict();
  static Value function(std::string name, std::function<Value(struct CallArgs&)> fn);
  static Value object(std::string type_name);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int || kind_ == Kind::Bool; }  // bool is an int
  bool is_number() const { return is_int() || kind_ == Kind::Float; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_markup() const { return kind_ == Kind::String && b_; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_callable() const { return kind_ == Kind::Function; }

  bool as_bool() const { return b_; }
  std::int64_t as_int() const { return kind_ == Kind::Bool ? (b_ ? 1 : 0) : i_; }
  double as_double() const { return kind_ == Kind::Float ? f_ : static_cast<double>(as_int()); }
  const std::string& str() const { return *s_; }          // String (or the Undefined hint)
  ValueList& items() const { return *list_; }            // List / Tuple
  DictData& dict_data() const { return *dict_; }         // Dict
  FunctionData& fn() const { return *fn_; }              // Function
  ObjectData& obj() const { return *obj_; }              // Object
  const std::string& undefined_hint() const;

  // Python truthiness, str(), repr() and type name as jinja2 error messages spell it.
  bool truthy() const;
  std::string to_str() const;
  std::string repr() const;
  std::string type_name() const;
  bool same_identity(const Value& o) const;

 private:
  Kind kind_ = Kind::Undefined;
  bool b_ = false;
  std::int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<DictData> dict_;
  std::shared_ptr<FunctionData> fn_;
  std::shared_ptr<ObjectData> obj_;
};

// Insertion-ordered mapping with Python key equality (1 == 1.0 == True).
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  void set(const Value& key, Value value);
  const Value* find(std::string_view key) const;
};

// Positional and keyword arguments of a call.
struct CallArgs {
  ValueList args;
  std::vector<std::pair<std::string, Value>> kwargs;
  // Takes argument `pos` or keyword `name` (removing the keyword); Undefined when absent.
  Value get(std::size_t pos, std::string_view name);
  bool has(std::size_t pos, std::string_view name) const;
  // Fails when keywords remain that nobody took, or more than max_pos positionals came.
  void finish(std::string_view fname, std::size_t max_pos) const;
};

struct FunctionData {
  std::string name;
  std::function<Value(CallArgs&)> call;
};

// namespace() objects, the loop variable and other attribute bags. Only namespaces accept attribute
// assignment (jinja2's `{% set ns.x = ... %}`).
struct ObjectData {
  std::string type_name;
  DictData attrs;
  std::function<Value(std::string_view)> dynamic_attr;  // computed attributes (loop.*)
  std::string repr_override;
};

// Python semantics shared by the interpreter, the filters and the methods.
bool py_equal(const Value& a, const Value& b);
// Python ordering (<); throws ValueError for unorderable types.
bool py_less(const Value& a, const Value& b);
// Python float repr (shortest round-trip, 1e+16 / 1e-05 style exponents).
std::string py_float_repr(double d);
// markupsafe.escape of a value's str(): & < > " ' as HTML entities (Markup passes through).
std::string html_escape(const Value& v);
// Python repr of a str.
std::string py_str_repr(std::string_view s);
// json.dumps(v, ensure_ascii, indent, separators, sort_keys) as Python writes it.
struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
std::string py_json_dumps(const Value& v, const JsonDumpOptions& opt);
// Converts a value to JSON (for callers that need it back); Undefined/functions fail.
nlohmann::ordered_json to_json(const Value& v);

// Iterates a value the way Python's iter() does (dict -> keys, str -> code points); throws for
// non-iterables. Undefined yields nothing.
ValueList iterate(const Value& v);
// len(); throws for values without a length.
std::int64_t py_len(const Value& v);

}  // namespace loom::chat
