// Recursive-descent Jinja2 parser. Functions are named after jinja2's Parser methods so the two can be
// read side by side; precedence (low to high): condexpr, or, and, not, compare, + -, ~, * / // %, **,
// unary, postfix/filters.
#include "loom/chat/parser.h"

#include <cstdlib>
#include <initializer_list>

#include "loom/chat/error.h"

namespace loom::chat {
namespace {

class Parser {
 public:
  explicit Parser(const TokenStream& ts) : ts_(ts) {}

  Program run() {
    Program p;
    p.body = subparse({});
    if (cur().type != TokenType::Eof) fail("unexpected token");
    return p;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return ts_.tokens[pos_]; }
  const Token& look() const { return ts_.tokens[std::min(pos_ + 1, ts_.tokens.size() - 1)]; }
  void next() {
    if (pos_ + 1 < ts_.tokens.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::Operator && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == TokenType::Name && cur().value == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  [[noreturn]] void fail(const std::string& msg, std::size_t offset = std::string::npos) const {
    auto [l, c] = ts_.position(offset == std::string::npos ? cur().offset : offset);
    throw TemplateError(l, c, msg);
  }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case TokenType::Eof: return "end of template";
      case TokenType::BlockEnd: return "end of statement block";
      case TokenType::VarEnd: return "end of print statement";
      case TokenType::Data: return "template data / text";
      default: return t.value;
    }
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected token '") + op + "', got '" + describe(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().type != TokenType::Name) fail("expected token 'name', got '" + describe(cur()) + "'");
    std::string v = cur().value;
    next();
    return v;
  }
  void expect_block_end() {
    if (cur().type != TokenType::BlockEnd)
      fail("expected token 'end of statement block', got '" + describe(cur()) + "'");
    next();
  }
  struct DepthGuard {
    Parser* p;
    explicit DepthGuard(Parser* pp) : p(pp) {
      if (++p->depth_ > kMaxParseDepth) p->fail("template nesting exceeds the parser depth limit");
    }
    ~DepthGuard() { --p->depth_; }
  };
  ExprPtr node(ExprKind k, std::size_t off) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->offset = off;
    return e;
  }

  // ---- statements ----
  bool at_end_token(const std::vector<std::string>& ends) const {
    if (cur().type != TokenType::Name) return false;
    for (const auto& e : ends)
      if (cur().value == e) return true;
    return false;
  }

  Body subparse(const std::vector<std::string>& ends) {
    DepthGuard g(this);
    Body body;
    while (cur().type != TokenType::Eof) {
      const Token& t = cur();
      if (t.type == TokenType::Data) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Data;
        s->offset = t.offset;
        s->text = t.value;
        body.push_back(std::move(s));
        next();
      } else if (t.type == TokenType::VarBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Output;
        s->offset = cur().offset;
        s->expr = parse_tuple(/*with_condexpr=*/true, {}, /*explicit_parens=*/false);
        if (cur().type != TokenType::VarEnd)
          fail("expected token 'end of print statement', got '" + describe(cur()) + "'");
        next();
        body.push_back(std::move(s));
      } else if (t.type == TokenType::BlockBegin) {
        next();
        if (!ends.empty() && at_end_token(ends)) return body;
        auto s = parse_statement();
        if (s) body.push_back(std::move(s));
        expect_block_end();
      } else {
        fail("internal parser error");
      }
    }
    if (!ends.empty()) {
      std::string want;
      for (const auto& e : ends) want += (want.empty() ? "'" : " or '") + e + "'";
      fail("Unexpected end of template. Jinja was looking for the following tags: " + want + ".");
    }
    return body;
  }

  // parse_statements: skips an optional colon, expects block end, parses until an end token.
  Body parse_statements(const std::vector<std::string>& ends, bool drop_needle) {
    skip_op(":");
    expect_block_end();
    Body b = subparse(ends);
    if (drop_needle) next();
    return b;
  }

  StmtPtr make(StmtKind k, std::size_t off) {
    auto s = std::make_unique<Stmt>();
    s->kind = k;
    s->offset = off;
    return s;
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    if (t.type != TokenType::Name) fail("tag name expected");
    const std::string& n = t.value;
    std::size_t off = t.offset;
    if (n == "if") return parse_if();
    if (n == "for") return parse_for();
    if (n == "set") return parse_set();
    if (n == "macro") return parse_macro();
    if (n == "call") return parse_call_block();
    if (n == "filter") return parse_filter_block();
    if (n == "break" || n == "continue") {
      next();
      if (loop_depth_ == 0) fail("'" + n + "' outside of a loop", off);  // loopcontrols rule
      return make(n == "break" ? StmtKind::Break : StmtKind::Continue, off);
    }
    if (n == "generation") {  // transformers' AssistantTracker tag: renders its body
      next();
      auto s = make(StmtKind::Block, off);
      s->body = parse_statements({"endgeneration"}, true);
      return s;
    }
    if (n == "block") {
      next();
      auto s = make(StmtKind::Block, off);
      s->name = expect_name();
      skip_name("scoped");
      skip_name("required");
      s->body = parse_statements({"endblock"}, true);
      if (cur().type == TokenType::Name) next();  // optional block name after endblock
      return s;
    }
    if (n == "with") return parse_with();
    if (n == "extends" || n == "include" || n == "import" || n == "from" || n == "print" ||
        n == "autoescape")
      fail("tag '" + n + "' is not supported by loom's chat template engine");
    fail("Encountered unknown tag '" + n + "'.");
  }

  StmtPtr parse_if() {
    auto s = make(StmtKind::If, cur().offset);
    next();
    while (true) {
      ExprPtr test = parse_tuple(/*with_condexpr=*/false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      s->branches.emplace_back(std::move(test), std::move(body));
      std::string tok = cur().value;
      next();
      if (tok == "elif") continue;
      if (tok == "else") s->else_body = parse_statements({"endif"}, true);
      break;
    }
    return s;
  }

  StmtPtr parse_for() {
    auto s = make(StmtKind::For, cur().offset);
    next();
    s->target = parse_assign_target({"in"}, false);
    if (!skip_name("in")) fail("expected token 'in', got '" + describe(cur()) + "'");
    s->expr = parse_tuple(/*with_condexpr=*/false, {"recursive"}, false);
    if (skip_name("if")) s->loop_filter = parse_expression(true);
    s->recursive = skip_name("recursive");
    ++loop_depth_;
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    std::string tok = cur().value;
    next();
    if (tok == "else") s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  Target parse_target_primary() {
    Target t;
    if (skip_op("(")) {
      t = parse_assign_target({}, false);
      expect_op(")");
      if (!t.is_tuple) return t;
      return t;
    }
    t.name = expect_name();
    return t;
  }

  // parse_assign_target: a name, `ns.attr` (with_namespace), or a tuple of names.
  Target parse_assign_target(const std::vector<std::string>& extra_ends, bool with_namespace) {
    if (with_namespace && cur().type == TokenType::Name && look().type == TokenType::Operator &&
        look().value == ".") {
      Target t;
      t.name = expect_name();
      next();
      t.attr = expect_name();
      return t;
    }
    Target tuple;
    tuple.is_tuple = false;
    std::vector<Target> elems;
    bool is_tuple = false;
    while (true) {
      if (!elems.empty()) expect_op(",");
      if (cur().type == TokenType::BlockEnd || cur().type == TokenType::VarEnd || is_op(")") ||
          at_end_token(extra_ends))
        break;
      if (cur().type != TokenType::Name && !is_op("(")) fail("can't assign to '" + describe(cur()) + "'");
      if (is_name("true") || is_name("false") || is_name("none") || is_name("True") ||
          is_name("False") || is_name("None"))
        fail("can't assign to a constant");
      elems.push_back(parse_target_primary());
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (elems.empty()) fail("Expected an expression, got '" + describe(cur()) + "'");
      return elems[0];
    }
    tuple.is_tuple = true;
    tuple.elements = std::move(elems);
    return tuple;
  }

  StmtPtr parse_set() {
    std::size_t off = cur().offset;
    next();
    Target target = parse_assign_target({}, true);
    if (skip_op("=")) {
      auto s = make(StmtKind::Set, off);
      s->target = std::move(target);
      s->expr = parse_tuple(/*with_condexpr=*/true, {}, false);
      return s;
    }
    auto s = make(StmtKind::SetBlock, off);
    s->target = std::move(target);
    if (is_op("|")) s->filters = parse_filter_chain(/*start_inline=*/false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  void parse_signature(std::vector<MacroParam>& params) {
    expect_op("(");
    bool defaults = false;
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) {
        p.default_value = parse_expression(true);
        defaults = true;
      } else if (defaults) {
        fail("non-default argument follows default argument");
      }
      params.push_back(std::move(p));
    }
    expect_op(")");
  }

  StmtPtr parse_macro() {
    auto s = make(StmtKind::Macro, cur().offset);
    next();
    s->name = expect_name();
    parse_signature(s->params);
    int saved_loop = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_statements({"endmacro"}, true);
    loop_depth_ = saved_loop;
    return s;
  }

  StmtPtr parse_call_block() {
    auto s = make(StmtKind::CallBlock, cur().offset);
    next();
    if (is_op("(")) parse_signature(s->params);
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::Call) fail("expected call", s->offset);
    int saved_loop = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_statements({"endcall"}, true);
    loop_depth_ = saved_loop;
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = make(StmtKind::FilterBlock, cur().offset);
    next();
    s->filters = parse_filter_chain(/*start_inline=*/true);
    s->body = parse_statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_with() {
    auto s = make(StmtKind::With, cur().offset);
    next();
    while (cur().type != TokenType::BlockEnd) {
      if (!s->assigns.empty()) expect_op(",");
      Target t = parse_assign_target({}, false);
      expect_op("=");
      s->assigns.emplace_back(std::move(t), parse_expression(true));
    }
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  // ---- expressions ----
  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard g(this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    std::size_t off = cur().offset;
    ExprPtr e1 = parse_or();
    while (is_name("if")) {
      next();
      auto ce = node(ExprKind::CondExpr, off);
      ce->a = parse_or();                            // test
      if (skip_name("else")) ce->c = parse_condexpr();
      ce->b = std::move(e1);                         // value when true
      e1 = std::move(ce);
    }
    return e1;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      auto e = node(ExprKind::Or, cur().offset);
      next();
      e->a = std::move(l);
      e->b = parse_and();
      l = std::move(e);
    }
    return l;
  }

  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      auto e = node(ExprKind::And, cur().offset);
      next();
      e->a = std::move(l);
      e->b = parse_not();
      l = std::move(e);
    }
    return l;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard g(this);
      auto e = node(ExprKind::Not, cur().offset);
      next();
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    std::size_t off = cur().offset;
    ExprPtr first = parse_math1();
    std::vector<std::pair<std::string, ExprPtr>> ops;
    while (true) {
      if (cur().type == TokenType::Operator &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" || cur().value == ">" ||
           cur().value == "<=" || cur().value == ">=")) {
        std::string op = cur().value;
        next();
        ops.emplace_back(op, parse_math1());
      } else if (skip_name("in")) {
        ops.emplace_back("in", parse_math1());
      } else if (is_name("not") && look().type == TokenType::Name && look().value == "in") {
        next();
        next();
        ops.emplace_back("notin", parse_math1());
      } else {
        break;
      }
    }
    if (ops.empty()) return first;
    auto e = node(ExprKind::Compare, off);
    e->a = std::move(first);
    e->ops = std::move(ops);
    return e;
  }

  ExprPtr binary(const char* op, ExprPtr l, ExprPtr r, std::size_t off) {
    auto e = node(ExprKind::Binary, off);
    e->name = op;
    e->a = std::move(l);
    e->b = std::move(r);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().value;
      std::size_t off = cur().offset;
      next();
      l = binary(op == "+" ? "+" : "-", std::move(l), parse_concat(), off);
    }
    return l;
  }

  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      std::size_t off = cur().offset;
      next();
      l = binary("~", std::move(l), parse_math2(), off);
    }
    return l;
  }

  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().value;
      std::size_t off = cur().offset;
      next();
      ExprPtr r = parse_pow();
      auto e = node(ExprKind::Binary, off);
      e->name = op;
      e->a = std::move(l);
      e->b = std::move(r);
      l = std::move(e);
    }
    return l;
  }

  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      std::size_t off = cur().offset;
      next();
      l = binary("**", std::move(l), parse_unary(true), off);
    }
    return l;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard g(this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = node(is_op("-") ? ExprKind::Neg : ExprKind::Pos, cur().offset);
      next();
      e->a = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    std::size_t off = t.offset;
    if (t.type == TokenType::Name) {
      auto e = node(ExprKind::Const, off);
      if (t.value == "true" || t.value == "True") {
        e->value = Value::boolean(true);
      } else if (t.value == "false" || t.value == "False") {
        e->value = Value::boolean(false);
      } else if (t.value == "none" || t.value == "None") {
        e->value = Value::none();
      } else {
        e->kind = ExprKind::Name;
        e->name = t.value;
      }
      next();
      return e;
    }
    if (t.type == TokenType::String) {
      std::string s;
      while (cur().type == TokenType::String) {
        s += cur().value;
        next();
      }
      auto e = node(ExprKind::Const, off);
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.type == TokenType::Integer || t.type == TokenType::Float) {
      auto e = node(ExprKind::Const, off);
      e->value = parse_number(t);
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(true, {}, /*explicit_parens=*/true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) return parse_list();
    if (is_op("{")) return parse_dict();
    fail("unexpected '" + describe(t) + "'");
  }

  Value parse_number(const Token& t) {
    std::string digits;
    for (char c : t.value)
      if (c != '_') digits.push_back(c);
    if (t.type == TokenType::Float) return Value::floating(std::strtod(digits.c_str(), nullptr));
    int base = 10;
    std::size_t start = 0;
    if (digits.size() > 1 && digits[0] == '0') {
      char x = static_cast<char>(std::tolower(static_cast<unsigned char>(digits[1])));
      base = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 10;
      if (base != 10) start = 2;
    }
    errno = 0;
    long long v = std::strtoll(digits.c_str() + start, nullptr, base);
    if (errno == ERANGE) fail("integer literal too large", t.offset);
    return Value::integer(v);
  }

  bool is_tuple_end(const std::vector<std::string>& extra) const {
    return cur().type == TokenType::VarEnd || cur().type == TokenType::BlockEnd || is_op(")") ||
           at_end_token(extra);
  }

  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra, bool explicit_parens) {
    std::size_t off = cur().offset;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra)) break;
      args.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail("Expected an expression, got '" + describe(cur()) + "'");
    }
    auto e = node(ExprKind::Tuple, off);
    e->items = std::move(args);
    return e;
  }

  ExprPtr parse_list() {
    auto e = node(ExprKind::List, cur().offset);
    expect_op("[");
    while (!is_op("]")) {
      if (!e->items.empty()) expect_op(",");
      if (is_op("]")) break;
      e->items.push_back(parse_expression(true));
    }
    expect_op("]");
    return e;
  }

  ExprPtr parse_dict() {
    auto e = node(ExprKind::Dict, cur().offset);
    expect_op("{");
    while (!is_op("}")) {
      if (!e->items.empty()) expect_op(",");
      if (is_op("}")) break;
      e->items.push_back(parse_expression(true));
      expect_op(":");
      e->items.push_back(parse_expression(true));
    }
    expect_op("}");
    return e;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        auto chain = parse_filter_chain(false, std::move(e));
        e = std::move(chain.back());
      } else if (is_name("is")) {
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    std::size_t off = cur().offset;
    if (skip_op(".")) {
      const Token& t = cur();
      if (t.type == TokenType::Name) {
        auto e = node(ExprKind::GetAttr, off);
        e->a = std::move(obj);
        e->name = t.value;
        next();
        return e;
      }
      if (t.type != TokenType::Integer) fail("expected name or number");
      auto e = node(ExprKind::GetItem, off);
      e->a = std::move(obj);
      e->b = node(ExprKind::Const, t.offset);
      e->b->value = parse_number(t);
      next();
      return e;
    }
    expect_op("[");
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    auto e = node(ExprKind::GetItem, off);
    e->a = std::move(obj);
    if (args.size() == 1) {
      e->b = std::move(args[0]);
    } else {
      e->b = node(ExprKind::Tuple, off);
      e->b->items = std::move(args);
    }
    return e;
  }

  ExprPtr parse_subscribed() {
    std::size_t off = cur().offset;
    ExprPtr start;
    if (!skip_op(":")) {
      ExprPtr n = parse_expression(true);
      if (!is_op(":")) return n;
      next();
      start = std::move(n);
    }
    auto sl = node(ExprKind::Slice, off);
    sl->a = std::move(start);
    if (!is_op(":") && !is_op("]") && !is_op(",")) sl->b = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) sl->c = parse_expression(true);
    }
    return sl;
  }

  void parse_call_args(Arguments& a) {
    std::size_t off = cur().offset;
    expect_op("(");
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail("invalid syntax for function call expression", off);
    };
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        ensure(!a.star_args && !a.star_kwargs);
        next();
        a.star_args = parse_expression(true);
      } else if (is_op("**")) {
        ensure(!a.star_kwargs);
        next();
        a.star_kwargs = parse_expression(true);
      } else if (cur().type == TokenType::Name && look().type == TokenType::Operator && look().value == "=") {
        ensure(!a.star_kwargs);
        std::string key = cur().value;
        next();
        next();
        a.kwargs.emplace_back(key, parse_expression(true));
      } else {
        ensure(!a.star_args && !a.star_kwargs && a.kwargs.empty());
        a.args.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr fn) {
    auto e = node(ExprKind::Call, fn->offset);  // errors point at the callee
    e->a = std::move(fn);
    parse_call_args(e->call);
    return e;
  }

  // parse_filter: one or more `|name(args)`; the first filter's operand is `operand` (null in
  // filter blocks). Returns the chain, the last element wrapping all previous ones.
  std::vector<ExprPtr> parse_filter_chain(bool start_inline, ExprPtr operand = nullptr) {
    std::vector<ExprPtr> out;
    ExprPtr cur_node = std::move(operand);
    bool block_chain = cur_node == nullptr;
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      std::size_t off = cur().offset;
      std::string name = expect_name();
      while (skip_op(".")) name += "." + expect_name();
      auto f = node(ExprKind::Filter, off);
      f->name = name;
      if (is_op("(")) parse_call_args(f->call);
      f->a = std::move(cur_node);
      cur_node = std::move(f);
    }
    if (block_chain) {
      // Block filters are applied in order; keep them nested (the innermost has a == null).
      out.push_back(std::move(cur_node));
      return out;
    }
    out.push_back(std::move(cur_node));
    return out;
  }

  ExprPtr parse_test(ExprPtr operand) {
    std::size_t off = cur().offset;
    next();  // 'is'
    bool negated = skip_name("not");
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    auto t = node(ExprKind::Test, off);
    t->name = name;
    if (is_op("(")) {
      parse_call_args(t->call);
    } else if ((cur().type == TokenType::Name || cur().type == TokenType::String ||
                cur().type == TokenType::Integer || cur().type == TokenType::Float || is_op("[") ||
                is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      t->call.args.push_back(parse_postfix(parse_primary()));
    }
    t->a = std::move(operand);
    if (!negated) return t;
    auto n = node(ExprKind::Not, off);
    n->a = std::move(t);
    return n;
  }

  const TokenStream& ts_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Program parse(const TokenStream& tokens) {
  Program p = Parser(tokens).run();
  check_filter_and_test_names(p, tokens);
  return p;
}

}  // namespace loom::chat
