// libFuzzer target: parses and renders arbitrary bytes as a chat template with a small fixed
// conversation in scope. Every failure must be a loom::Error; crashes, hangs, sanitizer reports and
// unbounded memory are bugs. Build with -DLOOM_FUZZ=ON (clang), run e.g.
//   build-fuzz/tests/chat/chat_fuzz -max_total_time=300 -max_len=4096 tests/fuzz/chat_corpus
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "loom/chat/template.h"

namespace {

const loom::chat::Value& context() {
  static const loom::chat::Value ctx = loom::chat::Value::from_json(nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi é"},
                 {"role": "assistant", "content": "ok", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "n": 3, "x": 2.5
  })"));
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string source(reinterpret_cast<const char*>(data), size);
  loom::chat::RenderOptions opt;
  opt.limits.max_loop_iterations = 20000;
  opt.limits.max_recursion_depth = 40;
  opt.limits.max_output_bytes = 1 << 20;
  opt.limits.max_list_items = 20000;
  try {
    loom::chat::Template t(source);
    (void)t.render(context(), opt);
  } catch (const loom::Error&) {
    // Expected: syntax errors, runtime errors, exceeded limits.
  }
  return 0;
}
