// A compiled Jinja2 template rendered with transformers' environment: ImmutableSandboxedEnvironment,
// trim_blocks, lstrip_blocks, loopcontrols, the {% generation %} tag, transformers' tojson,
// raise_exception and strftime_now. Render limits guard against hostile templates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "loom/chat/error.h"
#include "loom/chat/value.h"

namespace loom::chat {

// Caps for hostile templates; exceeding one throws TemplateError.
struct RenderLimits {
  std::int64_t max_loop_iterations = 1'000'000;  // all for-loop iterations of one render
  int max_recursion_depth = 100;                  // nested macro / caller / filter calls
  std::size_t max_output_bytes = 16u << 20;       // any output buffer or string value
  std::size_t max_list_items = 1'000'000;         // any list built by the template
};

struct RenderOptions {
  RenderLimits limits;
  // Local time for strftime_now(); empty means the system clock (tests inject a fixed time).
  std::function<std::tm()> clock;
};

struct Program;
struct TokenStream;

class Template {
 public:
  // Parses source; throws TemplateError (with line and column) on syntax errors.
  explicit Template(std::string_view source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the variables of `context` (a Dict value). Throws TemplateError on runtime errors
  // (raise_exception, undefined operations, type errors, exceeded limits).
  std::string render(const Value& context, const RenderOptions& options = {}) const;

 private:
  std::unique_ptr<TokenStream> tokens_;
  std::unique_ptr<Program> program_;
};

}  // namespace loom::chat
