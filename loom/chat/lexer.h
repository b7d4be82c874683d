// Jinja2 lexer with transformers' settings (trim_blocks, lstrip_blocks, one trailing newline dropped,
// CRLF/CR normalized to LF). It reproduces jinja2's whitespace rules token for token: `{%-`/`-%}`
// strip, `{%+`/`+%}` keep, lstrip only before `{%`/`{#` that start a line, trim one newline after
// `%}`/`#}`, and `{% raw %}` bodies passed through as data.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace loom::chat {

enum class TokenType {
  Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, Eof
};

struct Token {
  TokenType type;
  std::string value;    // text, name, operator, decoded string literal, or number spelling
  std::size_t offset;   // byte offset in the normalized source (for line/column)
};

// The normalized source and its tokens. Line/column come from byte offsets.
struct TokenStream {
  std::string source;
  std::vector<Token> tokens;
  // 1-based line and column of an offset.
  std::pair<int, int> position(std::size_t offset) const;
};

// Tokenizes a template. Throws TemplateError (with line and column) on lexical errors.
TokenStream tokenize(std::string_view source);

}  // namespace loom::chat
