// Global functions of transformers' Jinja environment: jinja2's range (sandbox-capped at 100000
// items like ImmutableSandboxedEnvironment), dict, namespace, joiner, cycler, plus transformers'
// raise_exception and strftime_now.
#include <chrono>
#include <ctime>

#include "loom/chat/interpreter.h"

namespace loom::chat {
namespace {

constexpr std::int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

Value do_range(CallArgs& a) {
  if (!a.kwargs.empty()) throw PyError{"range() takes no keyword arguments"};
  if (a.args.empty() || a.args.size() > 3)
    throw PyError{"range expected at most 3 arguments, got " + std::to_string(a.args.size())};
  for (const auto& x : a.args) {
    if (x.is_undefined()) fail_undefined(x);
    if (!x.is_int()) throw PyError{"'" + x.type_name() + "' object cannot be interpreted as an integer"};
  }
  std::int64_t start = 0, stop, step = 1;
  if (a.args.size() == 1) {
    stop = a.args[0].as_int();
  } else {
    start = a.args[0].as_int();
    stop = a.args[1].as_int();
    if (a.args.size() == 3) step = a.args[2].as_int();
  }
  if (step == 0) throw PyError{"range() arg 3 must not be zero"};
  std::int64_t n = 0;
  if (step > 0 && stop > start) n = (stop - start + step - 1) / step;
  if (step < 0 && stop < start) n = (start - stop - step - 1) / (-step);
  if (n > kMaxRange) throw PyError{"Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)."};
  ValueList out;
  for (std::int64_t i = 0; i < n; ++i) out.push_back(Value::integer(start + i * step));
  return Value::list(std::move(out));
}

Value do_dict(CallArgs& a) {
  Value d = Value::dict();
  if (a.args.size() > 1) throw PyError{"dict expected at most 1 argument, got " + std::to_string(a.args.size())};
  if (!a.args.empty()) {
    const Value& src = a.args[0];
    if (src.is_dict()) {
      d.dict_data() = src.dict_data();
    } else {
      for (const auto& pair : iterate(src)) {
        ValueList kv = iterate(pair);
        if (kv.size() != 2) throw PyError{"dictionary update sequence element has wrong length"};
        d.dict_data().set(kv[0], kv[1]);
      }
    }
  }
  for (auto& [k, v] : a.kwargs) d.dict_data().set(Value::string(k), v);
  return d;
}

Value do_namespace(CallArgs& a) {
  Value init = do_dict(a);
  Value ns = Value::object("Namespace");
  ns.obj().attrs = init.dict_data();
  return ns;
}

Value do_joiner(CallArgs& a) {
  Value sep = a.has(0, "sep") ? a.get(0, "sep") : Value::string(", ");
  auto used = std::make_shared<bool>(false);
  return Value::function("joiner", [sep, used](CallArgs&) {
    if (!*used) {
      *used = true;
      return Value::string("");
    }
    return sep;
  });
}

Value do_cycler(CallArgs& a) {
  if (a.args.empty()) throw PyError{"at least one item has to be provided"};
  auto items = std::make_shared<ValueList>(a.args);
  auto pos = std::make_shared<std::size_t>(0);
  Value c = Value::object("Cycler");
  c.obj().attrs.set(Value::string("next"), Value::function("next", [items, pos](CallArgs&) {
                      Value v = (*items)[*pos];
                      *pos = (*pos + 1) % items->size();
                      return v;
                    }));
  c.obj().attrs.set(Value::string("reset"), Value::function("reset", [pos](CallArgs&) {
                      *pos = 0;
                      return Value::none();
                    }));
  return c;
}

}  // namespace

Value make_globals(Interpreter& interp) {
  Value g = Value::dict();
  auto add = [&](const char* name, std::function<Value(CallArgs&)> fn) {
    g.dict_data().set(Value::string(name), Value::function(name, std::move(fn)));
  };
  add("range", do_range);
  add("dict", do_dict);
  add("namespace", do_namespace);
  add("joiner", do_joiner);
  add("cycler", do_cycler);
  add("raise_exception", [](CallArgs& a) -> Value {
    Value msg = a.get(0, "message");
    throw PyError{msg.to_str()};
  });
  const RenderOptions* opts = &interp.options();
  add("strftime_now", [opts](CallArgs& a) {
    Value fmt = a.get(0, "format");
    a.finish("strftime_now", 1);
    if (!fmt.is_string()) throw PyError{"strftime() argument 1 must be str, not " + fmt.type_name()};
    std::tm tm{};
    if (opts->clock) {
      tm = opts->clock();
    } else {
      std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      localtime_r(&t, &tm);
    }
    if (fmt.str().empty()) return Value::string("");
    std::string buf(256 + fmt.str().size() * 8, '\0');
    std::size_t n = std::strftime(buf.data(), buf.size(), fmt.str().c_str(), &tm);
    buf.resize(n);
    return Value::string(buf);
  });
  return g;
}

}  // namespace loom::chat
