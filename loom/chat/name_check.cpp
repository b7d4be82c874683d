// Compile-time check of filter and test names, as jinja2's code generator does it.
#include "loom/chat/error.h"
#include "loom/chat/parser.h"

namespace loom::chat {
namespace {

// jinja2's compiler rejects an unknown filter or test at compile time unless the frame it sits in is
// "soft": directly inside an `if` (test and bodies) or a conditional expression.
class NameChecker {
 public:
  explicit NameChecker(const TokenStream& ts) : ts_(ts) {}

  void body(const Body& b, bool soft) {
    for (const auto& s : b) stmt(*s, soft);
  }

 private:
  void stmt(const Stmt& s, bool soft) {
    switch (s.kind) {
      case StmtKind::Output:
      case StmtKind::Set: expr(s.expr.get(), soft); break;
      case StmtKind::If:
        for (const auto& [test, b] : s.branches) {
          expr(test.get(), true);
          body(b, true);
        }
        body(s.else_body, true);
        break;
      case StmtKind::For:
        expr(s.expr.get(), soft);
        expr(s.loop_filter.get(), false);
        body(s.body, false);
        body(s.else_body, false);
        break;
      case StmtKind::Macro:
      case StmtKind::CallBlock:
        for (const auto& p : s.params) expr(p.default_value.get(), false);
        expr(s.expr.get(), soft);
        body(s.body, false);
        break;
      case StmtKind::SetBlock:
      case StmtKind::FilterBlock:
        for (const auto& f : s.filters) expr(f.get(), soft);
        body(s.body, false);
        break;
      case StmtKind::Block: body(s.body, false); break;
      case StmtKind::With:
        for (const auto& a : s.assigns) expr(a.second.get(), soft);
        body(s.body, false);
        break;
      default: break;
    }
  }

  void expr(Expr* e, bool soft) {
    if (!e) return;
    if (e->kind == ExprKind::CondExpr) soft = true;
    e->soft = soft;
    if (!soft && e->kind == ExprKind::Filter && !is_known_filter(e->name)) fail(e, "No filter named '" + e->name + "'.");
    if (!soft && e->kind == ExprKind::Test && !is_known_test(e->name)) fail(e, "No test named '" + e->name + "'.");
    expr(e->a.get(), soft);
    expr(e->b.get(), soft);
    expr(e->c.get(), soft);
    for (auto& i : e->items) expr(i.get(), soft);
    for (auto& i : e->call.args) expr(i.get(), soft);
    for (auto& i : e->call.kwargs) expr(i.second.get(), soft);
    expr(e->call.star_args.get(), soft);
    expr(e->call.star_kwargs.get(), soft);
    for (auto& i : e->ops) expr(i.second.get(), soft);
  }

  [[noreturn]] void fail(const Expr* e, const std::string& msg) {
    auto [l, c] = ts_.position(e->offset);
    throw TemplateError(l, c, msg);
  }

  const TokenStream& ts_;
};

}  // namespace

void check_filter_and_test_names(Program& program, const TokenStream& tokens) {
  NameChecker(tokens).body(program.body, false);
}

}  // namespace loom::chat
