// Jinja2 parser: tokens to a Program, with jinja2's grammar and precedence. Unknown filters and tests
// fail at parse time except inside `if` bodies and conditional expressions, as jinja2 3.x decides.
#pragma once

#include <string_view>

#include "loom/chat/ast.h"
#include "loom/chat/lexer.h"

namespace loom::chat {

// Maximum nesting of expressions and blocks the parser accepts (hostile templates).
inline constexpr int kMaxParseDepth = 256;

// Parses tokens into a Program; throws TemplateError with line and column.
Program parse(const TokenStream& tokens);

// Fails (TemplateError) on an unknown filter or test outside `if` bodies and conditional expressions;
// marks the others `soft` (they fail only when evaluated). Called by parse().
void check_filter_and_test_names(Program& program, const TokenStream& tokens);

// Names of the built-in filters and tests (the parser checks them as jinja2's compiler does).
bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);

}  // namespace loom::chat
