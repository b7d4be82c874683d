// Errors of the Jinja engine. Every template error names the line and column it came from.
#pragma once

#include <string>

#include "loom/common/error.h"

namespace loom::chat {

// A template failed to parse or render: "[chat] line L, column C: message".
class TemplateError : public loom::ValueError {
 public:
  TemplateError(int line, int column, const std::string& message);
  // An error with no source position (caps, API misuse).
  explicit TemplateError(const std::string& message);
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }

 private:
  int line_ = 0;
  int column_ = 0;
  std::string message_;
};

}  // namespace loom::chat
