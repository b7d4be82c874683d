// Tree-walking interpreter (internal). Scopes follow jinja2: a for-loop iteration, macro call,
// set/filter block and with block each get a fresh frame whose parent is the enclosing one, so a
// `set` inside a loop body is gone after the iteration (use namespace() to carry state).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "loom/chat/ast.h"
#include "loom/chat/lexer.h"
#include "loom/chat/template.h"

namespace loom::chat {

struct Frame {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Frame> parent;
  const Value* lookup(const std::string& name) const;
};
using FramePtr = std::shared_ptr<Frame>;

class Interpreter {
 public:
  Interpreter(const TokenStream& tokens, const RenderOptions& options);
  std::string render(const Program& program, const Value& context);

  // Shared with filters.cpp / methods.cpp / globals.cpp.
  Value call(const Value& fn, CallArgs& args);
  Value apply_filter(const std::string& name, const Value& operand, CallArgs& args);
  bool apply_test(const std::string& name, const Value& operand, CallArgs& args);
  const RenderOptions& options() const { return options_; }
  void check_string(std::size_t bytes) const;
  void check_list(std::size_t items) const;

 private:
  enum class Flow { Normal, Break, Continue };

  // Statements (interpreter.cpp).
  Flow exec_body(const Body& body, const FramePtr& frame);
  Flow exec(const Stmt& s, const FramePtr& frame);
  Flow exec_for(const Stmt& s, const FramePtr& frame);
  void exec_if(const Stmt& s, const FramePtr& frame, Flow& flow);
  void assign(const Target& t, const Value& v, const FramePtr& frame, std::size_t offset);
  Value make_macro(const Stmt& s, const Body& body, const std::vector<MacroParam>& params,
                   const std::string& name, const FramePtr& frame);
  std::string capture(const Body& body, const FramePtr& frame);
  Value apply_filter_chain(const Expr& chain, Value operand, const FramePtr& frame);
  void write(std::string_view text);

  // Expressions (eval.cpp).
public:
  Value eval(const Expr& e, const FramePtr& frame);
private:
  Value eval_inner(const Expr& e, const FramePtr& frame);
  Value eval_getitem(const Expr& e, const FramePtr& frame);
  Value eval_call(const Expr& e, const FramePtr& frame);
  Value eval_compare(const Expr& e, const FramePtr& frame);
  CallArgs eval_args(const Arguments& a, const FramePtr& frame);
  [[noreturn]] void fail_at(std::size_t offset, const std::string& message) const;

  const TokenStream& tokens_;
  const RenderOptions& options_;
  std::string* out_ = nullptr;
  std::int64_t iterations_ = 0;
  int depth_ = 0;
  Value globals_;
  std::vector<FramePtr> pinned_frames_;  // frames that macros defined in them refer to

  friend struct DepthScope;
};

// Python binary operators and attribute/item access (eval.cpp), used by filters too.
Value binary_op(const std::string& op, const Value& a, const Value& b, const RenderLimits& limits);
bool contains(const Value& container, const Value& item);
Value getattr(const Value& obj, const std::string& name);
Value getitem(const Value& obj, const Value& key);
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
[[noreturn]] void fail_undefined(const Value& u);

// Methods of str/dict/list (methods.cpp): a bound method, or nullopt-like Undefined when absent.
bool find_method(const Value& obj, const std::string& name, Value& out);
// str.format and printf-style `%` (methods.cpp).
std::string py_format(const std::string& fmt, CallArgs& args);
std::string py_percent_format(const std::string& fmt, const Value& args);
// Python int(x) / float(x) conversions used by filters.
// Global functions (globals.cpp): range, dict, namespace, joiner, cycler, raise_exception,
// strftime_now.
Value make_globals(Interpreter& interp);

}  // namespace loom::chat
