// Statement execution: output, if, for (loop variable, inline filter, else, break/continue), set,
// set blocks, macros and call blocks, filter blocks, with and generation blocks.
#include "loom/chat/interpreter.h"

#include "loom/chat/parser.h"

namespace loom::chat {

const Value* Frame::lookup(const std::string& name) const {
  for (const Frame* f = this; f; f = f->parent.get()) {
    auto it = f->vars.find(name);
    if (it != f->vars.end()) return &it->second;
  }
  return nullptr;
}

// Counts nested macro/filter calls against max_recursion_depth.
struct DepthScope {
  Interpreter& in;
  explicit DepthScope(Interpreter& i) : in(i) {
    if (++in.depth_ > in.options_.limits.max_recursion_depth)
      throw PyError{"maximum recursion depth exceeded (limit " +
                       std::to_string(in.options_.limits.max_recursion_depth) + ")"};
  }
  ~DepthScope() { --in.depth_; }
};

Interpreter::Interpreter(const TokenStream& tokens, const RenderOptions& options)
    : tokens_(tokens), options_(options) {}

void Interpreter::fail_at(std::size_t offset, const std::string& message) const {
  auto [l, c] = tokens_.position(offset);
  throw TemplateError(l, c, message);
}

void Interpreter::check_string(std::size_t bytes) const {
  if (bytes > options_.limits.max_output_bytes)
    throw PyError{"output exceeds the limit of " + std::to_string(options_.limits.max_output_bytes) +
                     " bytes"};
}

void Interpreter::check_list(std::size_t items) const {
  if (items > options_.limits.max_list_items)
    throw PyError{"list exceeds the limit of " + std::to_string(options_.limits.max_list_items) +
                     " items"};
}

void Interpreter::write(std::string_view text) {
  check_string(out_->size() + text.size());
  out_->append(text);
}

std::string Interpreter::render(const Program& program, const Value& context) {
  auto root = std::make_shared<Frame>();
  globals_ = make_globals(*this);
  for (const auto& [k, v] : globals_.dict_data().entries) root->vars[k.str()] = v;
  if (context.is_dict()) {
    for (const auto& [k, v] : context.dict_data().entries)
      if (k.is_string()) root->vars[k.str()] = v;
  }
  auto top = std::make_shared<Frame>();
  top->parent = root;
  std::string out;
  out_ = &out;
  exec_body(program.body, top);
  return out;
}

Interpreter::Flow Interpreter::exec_body(const Body& body, const FramePtr& frame) {
  for (const auto& s : body) {
    Flow f = exec(*s, frame);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

std::string Interpreter::capture(const Body& body, const FramePtr& frame) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  try {
    exec_body(body, frame);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buf;
}

Interpreter::Flow Interpreter::exec(const Stmt& s, const FramePtr& frame) {
  try {
    switch (s.kind) {
      case StmtKind::Data: write(s.text); return Flow::Normal;
      case StmtKind::Output: {
        Value v = eval(*s.expr, frame);
        write(v.to_str());
        return Flow::Normal;
      }
      case StmtKind::If: {
        Flow f = Flow::Normal;
        exec_if(s, frame, f);
        return f;
      }
      case StmtKind::For: return exec_for(s, frame);
      case StmtKind::Set: assign(s.target, eval(*s.expr, frame), frame, s.offset); return Flow::Normal;
      case StmtKind::SetBlock: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame;
        Value v = Value::string(capture(s.body, inner));
        if (!s.filters.empty()) v = apply_filter_chain(*s.filters[0], v, frame);
        assign(s.target, v, frame, s.offset);
        return Flow::Normal;
      }
      case StmtKind::Macro:
        frame->vars[s.name] = make_macro(s, s.body, s.params, s.name, frame);
        return Flow::Normal;
      case StmtKind::CallBlock: {
        Value caller = make_macro(s, s.body, s.params, "caller", frame);
        const Expr& call = *s.expr;
        Value fn = eval(*call.a, frame);
        CallArgs args = eval_args(call.call, frame);
        args.kwargs.emplace_back("caller", caller);
        write(this->call(fn, args).to_str());
        return Flow::Normal;
      }
      case StmtKind::FilterBlock: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame;
        Value v = Value::string(capture(s.body, inner));
        write(apply_filter_chain(*s.filters[0], v, frame).to_str());
        return Flow::Normal;
      }
      case StmtKind::Break: return Flow::Break;
      case StmtKind::Continue: return Flow::Continue;
      case StmtKind::Block: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame;
        return exec_body(s.body, inner);
      }
      case StmtKind::With: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame;
        for (const auto& [t, e] : s.assigns) assign(t, eval(*e, frame), inner, s.offset);
        return exec_body(s.body, inner);
      }
    }
  } catch (const PyError& e) {
    fail_at(s.offset, e.message);
  }
  return Flow::Normal;
}

void Interpreter::exec_if(const Stmt& s, const FramePtr& frame, Flow& flow) {
  for (const auto& [test, body] : s.branches) {
    if (eval(*test, frame).truthy()) {
      flow = exec_body(body, frame);
      return;
    }
  }
  flow = exec_body(s.else_body, frame);
}

namespace {

// jinja2's LoopContext: index/index0/revindex/revindex0/first/last/length/previtem/nextitem/
// depth/depth0 plus cycle() and changed().
Value make_loop(const std::shared_ptr<ValueList>& items, std::size_t i) {
  Value loop = Value::object("LoopContext");
  auto n = static_cast<std::int64_t>(items->size());
  auto idx = static_cast<std::int64_t>(i);
  auto& a = loop.obj().attrs;
  a.set(Value::string("index0"), Value::integer(idx));
  a.set(Value::string("index"), Value::integer(idx + 1));
  a.set(Value::string("revindex0"), Value::integer(n - idx - 1));
  a.set(Value::string("revindex"), Value::integer(n - idx));
  a.set(Value::string("first"), Value::boolean(idx == 0));
  a.set(Value::string("last"), Value::boolean(idx == n - 1));
  a.set(Value::string("length"), Value::integer(n));
  a.set(Value::string("depth0"), Value::integer(0));
  a.set(Value::string("depth"), Value::integer(1));
  a.set(Value::string("previtem"),
        idx > 0 ? (*items)[i - 1] : Value::undefined("there is no previous item"));
  a.set(Value::string("nextitem"),
        idx + 1 < n ? (*items)[i + 1] : Value::undefined("there is no next item"));
  a.set(Value::string("cycle"), Value::function("cycle", [idx](CallArgs& args) {
          if (args.args.empty()) throw PyError{"no items for cycling given"};
          return args.args[static_cast<std::size_t>(idx) % args.args.size()];
        }));
  loop.obj().repr_override = "<LoopContext " + std::to_string(idx + 1) + "/" + std::to_string(n) + ">";
  return loop;
}

}  // namespace

Interpreter::Flow Interpreter::exec_for(const Stmt& s, const FramePtr& frame) {
  if (s.recursive) fail_at(s.offset, "recursive for loops are not supported by loom");
  Value iterable = eval(*s.expr, frame);
  ValueList all;
  try {
    all = iterate(iterable);
  } catch (const PyError& e) {
    fail_at(s.expr->offset, e.message);
  }
  auto items = std::make_shared<ValueList>();
  if (s.loop_filter) {
    for (const auto& v : all) {
      if (++iterations_ > options_.limits.max_loop_iterations)
        fail_at(s.offset, "loop iterations exceed the limit");
      auto f = std::make_shared<Frame>();
      f->parent = frame;
      assign(s.target, v, f, s.offset);
      if (eval(*s.loop_filter, f).truthy()) items->push_back(v);
    }
  } else {
    *items = std::move(all);
  }
  // changed() compares against the previous call's arguments across iterations.
  auto last_changed = std::make_shared<std::pair<bool, ValueList>>(false, ValueList{});
  Value changed = Value::function("changed", [last_changed](CallArgs& args) {
    bool differs = !last_changed->first || last_changed->second.size() != args.args.size();
    for (std::size_t i = 0; !differs && i < args.args.size(); ++i)
      differs = !py_equal(last_changed->second[i], args.args[i]);
    *last_changed = {true, args.args};
    return Value::boolean(differs);
  });
  for (std::size_t i = 0; i < items->size(); ++i) {
    if (++iterations_ > options_.limits.max_loop_iterations)
      fail_at(s.offset, "loop iterations exceed the limit of " +
                            std::to_string(options_.limits.max_loop_iterations));
    auto f = std::make_shared<Frame>();
    f->parent = frame;
    Value loop = make_loop(items, i);
    loop.obj().attrs.set(Value::string("changed"), changed);
    f->vars["loop"] = loop;
    assign(s.target, (*items)[i], f, s.offset);
    Flow fl = exec_body(s.body, f);
    if (fl == Flow::Break) break;
  }
  if (items->empty()) {
    auto f = std::make_shared<Frame>();
    f->parent = frame;
    return exec_body(s.else_body, f) == Flow::Normal ? Flow::Normal : Flow::Normal;
  }
  return Flow::Normal;
}

void Interpreter::assign(const Target& t, const Value& v, const FramePtr& frame, std::size_t offset) {
  if (!t.attr.empty()) {
    const Value* ns = frame->lookup(t.name);
    if (!ns || ns->kind() != Kind::Object || ns->obj().type_name != "Namespace")
      fail_at(offset, "cannot assign attribute on non-namespace object");
    ns->obj().attrs.set(Value::string(t.attr), v);
    return;
  }
  if (!t.is_tuple) {
    frame->vars[t.name] = v;
    return;
  }
  ValueList parts;
  try {
    parts = iterate(v);
  } catch (const PyError& e) {
    fail_at(offset, "cannot unpack non-iterable " + v.type_name() + " object");
  }
  if (parts.size() != t.elements.size()) {
    fail_at(offset, parts.size() > t.elements.size()
                        ? "too many values to unpack (expected " + std::to_string(t.elements.size()) + ")"
                        : "not enough values to unpack (expected " +
                              std::to_string(t.elements.size()) + ", got " +
                              std::to_string(parts.size()) + ")");
  }
  for (std::size_t i = 0; i < parts.size(); ++i) assign(t.elements[i], parts[i], frame, offset);
}

Value Interpreter::make_macro(const Stmt& s, const Body& body, const std::vector<MacroParam>& params,
                              const std::string& name, const FramePtr& frame) {
  // The closure resolves free names in the defining frame, as jinja2 does. The macro is stored in
  // that frame, so the closure holds it weakly (no reference cycle) and the interpreter pins it
  // until the render ends.
  pinned_frames_.push_back(frame);
  std::weak_ptr<Frame> weak = frame;
  return Value::function(name, [this, &body, &params, weak, name](CallArgs& args) {
    DepthScope depth(*this);
    auto f = std::make_shared<Frame>();
    f->parent = weak.lock();
    for (std::size_t i = 0; i < params.size(); ++i) {
      const MacroParam& p = params[i];
      if (args.has(i, p.name)) {
        f->vars[p.name] = args.get(i, p.name);
      } else if (p.default_value) {
        f->vars[p.name] = eval(*p.default_value, f);
      } else {
        f->vars[p.name] = Value::undefined("parameter '" + p.name + "' was not provided");
      }
    }
    ValueList varargs;
    for (std::size_t i = params.size(); i < args.args.size(); ++i) varargs.push_back(args.args[i]);
    Value kwargs = Value::dict();
    for (auto& [k, v] : args.kwargs) {
      if (k == "caller") {
        f->vars["caller"] = v;
      } else {
        kwargs.dict_data().set(Value::string(k), v);
      }
    }
    f->vars["varargs"] = Value::tuple(std::move(varargs));
    f->vars["kwargs"] = kwargs;
    return Value::string(capture(body, f));
  });
}

Value Interpreter::apply_filter_chain(const Expr& chain, Value operand, const FramePtr& frame) {
  // The chain nests: the innermost filter (a == null) applies first.
  if (chain.a) operand = apply_filter_chain(*chain.a, std::move(operand), frame);
  CallArgs args = eval_args(chain.call, frame);
  try {
    return apply_filter(chain.name, operand, args);
  } catch (const PyError& e) {
    fail_at(chain.offset, e.message);
  }
}

Value Interpreter::call(const Value& fn, CallArgs& args) {
  if (fn.is_undefined()) fail_undefined(fn);
  if (!fn.is_callable()) throw PyError{"'" + fn.type_name() + "' object is not callable"};
  DepthScope depth(*this);
  return fn.fn().call(args);
}

// ---- Template ----

Template::Template(std::string_view source)
    : tokens_(std::make_unique<TokenStream>(tokenize(source))),
      program_(std::make_unique<Program>(parse(*tokens_))) {}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Value& context, const RenderOptions& options) const {
  Interpreter in(*tokens_, options);
  try {
    return in.render(*program_, context);
  } catch (const PyError& e) {
    throw TemplateError(e.message);
  }
}

}  // namespace loom::chat
