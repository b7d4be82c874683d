// Syntax tree of a Jinja template: expressions and statements as jinja2's parser builds them.
// Every node keeps the byte offset of its first token so errors can name line and column.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loom/chat/value.h"

namespace loom::chat {

enum class ExprKind {
  Const, Name, List, Tuple, Dict, GetAttr, GetItem, Slice, Call, Filter, Test, Neg, Pos, Not,
  Binary, And, Or, Compare, CondExpr
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Arguments {
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr star_args;    // *args
  ExprPtr star_kwargs;  // **kwargs
};

// One expression node; which fields are used depends on kind.
struct Expr {
  ExprKind kind;
  std::size_t offset = 0;
  Value value;                 // Const
  std::string name;            // Name, GetAttr attribute, Filter/Test name, Binary/Compare operator
  ExprPtr a, b, c;             // operands: object/left/test, key/right/then, else / slice parts
  std::vector<ExprPtr> items;  // List, Tuple, Dict (key, value pairs flattened)
  Arguments call;              // Call, Filter, Test arguments
  std::vector<std::pair<std::string, ExprPtr>> ops;  // Compare: (operator, operand)
  bool negated = false;        // Test: `is not`
  bool soft = false;           // Filter/Test: unknown names fail at render time, not parse time
};

enum class StmtKind {
  Data, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue, Block, With
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// An assignment target: a name, `ns.attr`, or a tuple of names.
struct Target {
  std::string name;
  std::string attr;               // non-empty for `ns.attr`
  std::vector<Target> elements;   // tuple unpacking
  bool is_tuple = false;
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;
};

struct Stmt {
  StmtKind kind;
  std::size_t offset = 0;
  std::string text;                                  // Data
  ExprPtr expr;                                      // Output / Set value / For iterable / call
  std::vector<std::pair<ExprPtr, Body>> branches;    // If: (test, body) for if and each elif
  Body body;                                         // For/SetBlock/Macro/CallBlock/FilterBlock/Block
  Body else_body;                                    // If / For
  Target target;                                     // For / Set / SetBlock
  ExprPtr loop_filter;                               // For: inline `if`
  bool recursive = false;                            // For
  std::string name;                                  // Macro name
  std::vector<MacroParam> params;                    // Macro / CallBlock
  std::vector<ExprPtr> filters;                      // SetBlock / FilterBlock: Filter nodes (a == null)
  std::vector<std::pair<Target, ExprPtr>> assigns;   // With
};

// A parsed template.
struct Program {
  Body body;
};

}  // namespace loom::chat
