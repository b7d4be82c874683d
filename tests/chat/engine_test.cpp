// Unit tests of the engine and apply_chat_template whose expectations are derived by hand (each with
// its reasoning): resource caps, error positions, template selection and file precedence, and
// transformers' continue_final_message cut.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "loom/chat/chat_template.h"
#include "loom/chat/template.h"
#include "tests/chat/oracle.h"

namespace loom::chat {
namespace {

using json = nlohmann::ordered_json;

std::string render(const std::string& src, const RenderOptions& opt = {}) {
  return Template(src).render(Value::dict(), opt);
}

// Returns the TemplateError a render raises (fails the test when none comes).
TemplateError render_error(const std::string& src, const RenderOptions& opt = {}) {
  try {
    render(src, opt);
  } catch (const TemplateError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << src;
  return TemplateError("none");
}

TEST(ChatCaps, LoopIterationsCapped) {
  RenderOptions opt;
  opt.limits.max_loop_iterations = 1000;
  // 10 x 10 = 100 iterations of the inner body plus 10 outer: 110 <= 1000 renders.
  EXPECT_EQ(render("{% for i in range(10) %}{% for j in range(10) %}.{% endfor %}{% endfor %}", opt).size(), 100u);
  // 100 x 100 = 10,000 inner iterations exceeds 1000.
  auto e = render_error("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", opt);
  EXPECT_NE(std::string(e.what()).find("loop iterations"), std::string::npos) << e.what();
}

TEST(ChatCaps, RecursionDepthCapped) {
  RenderOptions opt;
  opt.limits.max_recursion_depth = 50;
  // An unbounded recursive macro must stop with an error, not overflow the stack.
  auto e = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", opt);
  EXPECT_NE(std::string(e.what()).find("recursion"), std::string::npos) << e.what();
  // Depth 10 (< 50) is fine: f(10) recurses down to 0 and prints "done".
  EXPECT_EQ(render("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% else %}done{% endif %}{% endmacro %}{{ f(10) }}", opt), "done");
}

TEST(ChatCaps, OutputSizeCapped) {
  RenderOptions opt;
  opt.limits.max_output_bytes = 1000;
  // 'x' * 999 is 999 bytes: allowed. Doubling a string 20 times would be 1 MiB: refused.
  EXPECT_EQ(render("{{ 'x' * 999 }}", opt).size(), 999u);
  EXPECT_THROW(render("{{ 'x' * 1001 }}", opt), TemplateError);
  EXPECT_THROW(render("{% set ns = namespace(s='ab') %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", opt),
               TemplateError);
  // 100 iterations of 20 bytes of text = 2000 bytes of output > 1000.
  EXPECT_THROW(render("{% for i in range(100) %}01234567890123456789{% endfor %}", opt), TemplateError);
}

TEST(ChatCaps, ListSizeCapped) {
  RenderOptions opt;
  opt.limits.max_list_items = 100;
  EXPECT_THROW(render("{{ ([1] * 101)|length }}", opt), TemplateError);
  EXPECT_EQ(render("{{ ([1] * 100)|length }}", opt), "100");
}

TEST(ChatCaps, ParserNestingCapped) {
  // 10,000 nested parentheses would overflow a naive recursive-descent parser's stack.
  std::string deep = "{{ " + std::string(10000, '(') + "1" + std::string(10000, ')') + " }}";
  EXPECT_THROW(Template{deep}, TemplateError);
  std::string ok = "{{ " + std::string(50, '(') + "1" + std::string(50, ')') + " }}";
  EXPECT_EQ(render(ok), "1");
}

TEST(ChatErrors, SyntaxErrorReportsLineAndColumn) {
  // Line 3, the '}}' closes an expression that lacks its right operand: jinja2 reports
  // "unexpected 'end of print statement'" at the token after '+', column 10 (1-based, code points).
  try {
    Template t("line one\nline two\n{{ 1 + }}");
    FAIL() << "parsed";
  } catch (const TemplateError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.column(), 8);
    EXPECT_NE(std::string(e.what()).find("line 3, column 8"), std::string::npos) << e.what();
  }
}

TEST(ChatErrors, RuntimeErrorReportsLineAndColumn) {
  // raise_exception on line 2 at column 4 (after "ab{").
  auto e = render_error("first\nab{{ raise_exception('boom') }}");
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.column(), 6);
  EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos);
}

TEST(ChatErrors, UndefinedOperationsRaise) {
  EXPECT_THROW(render("{{ missing.attr }}"), TemplateError);
  EXPECT_THROW(render("{{ missing + 1 }}"), TemplateError);
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
}

TEST(ChatTemplateSelection, NamedTemplatesFollowTransformers) {
  // tokenizer_config.json with a list of named templates: "tool_use" wins when tools are given,
  // "default" otherwise; an explicit name picks that one.
  json cfg = {{"chat_template", json::array({{{"name", "default"}, {"template", "D"}}, {{"name", "tool_use"}, {"template", "T"}}})},
              {"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
              {"eos_token", "</s>"},
              {"unk_token", nullptr}};
  auto c = ChatTemplateConfig::from_tokenizer_config(cfg);
  ChatRequest r;
  EXPECT_EQ(apply_chat_template(c, r), "D");
  r.tools = json::array({{{"type", "function"}}});
  EXPECT_EQ(apply_chat_template(c, r), "T");
  r.template_name = "default";
  EXPECT_EQ(apply_chat_template(c, r), "D");
  r.template_name = "nope";
  EXPECT_THROW(apply_chat_template(c, r), loom::ValueError);
  // bos_token given as an AddedToken dict, unk_token null: only bos/eos are special tokens.
  EXPECT_EQ(c.special_tokens, (json{{"bos_token", "<s>"}, {"eos_token", "</s>"}}));
}

TEST(ChatTemplateSelection, ChatTemplateJinjaOverridesConfig) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "tests/chat/tmp_model_dir";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "from config", "eos_token": "E"})";
  auto c1 = ChatTemplateConfig::from_model_dir(dir.string());
  EXPECT_EQ(apply_chat_template(c1, ChatRequest{}), "from config");
  std::ofstream(dir / "chat_template.jinja") << "from file {{ eos_token }}\n";
  auto c2 = ChatTemplateConfig::from_model_dir(dir.string());
  // The file's single trailing newline is dropped by jinja2 (keep_trailing_newline=False).
  EXPECT_EQ(apply_chat_template(c2, ChatRequest{}), "from file E");
  fs::remove_all(dir);
  EXPECT_THROW(ChatTemplateConfig::from_model_dir(dir.string()), loom::Error);
}

TEST(ChatApply, ContextHasTransformersVariables) {
  ChatTemplateConfig c;
  c.templates["default"] = "{{ tools }}|{{ documents }}|{{ add_generation_prompt }}|{{ bos_token }}|{{ enable_thinking }}";
  c.special_tokens = {{"bos_token", "<s>"}};
  ChatRequest r;
  r.messages = json::array();
  // tools/documents are passed as None when absent; kwargs override special tokens.
  EXPECT_EQ(apply_chat_template(c, r), "None|None|False|<s>|");
  r.kwargs = {{"bos_token", "B"}, {"enable_thinking", false}};
  r.add_generation_prompt = true;
  EXPECT_EQ(apply_chat_template(c, r), "None|None|True|B|False");
}

TEST(ChatApply, ContinueFinalMessageCut) {
  json msgs = json::array({{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "The answer  "}}});
  // Template kept the trailing spaces: the cut keeps them ("The answer  " ends the prompt).
  EXPECT_EQ(continue_final_message_cut("<u>hi</u><a>The answer  </a>", msgs), "<u>hi</u><a>The answer  ");
  // Template trimmed them: the cut ends after the stripped text.
  EXPECT_EQ(continue_final_message_cut("<u>hi</u><a>The answer</a>", msgs), "<u>hi</u><a>The answer");
  // The message is not in the output: transformers raises ValueError.
  EXPECT_THROW(continue_final_message_cut("<u>hi</u>", msgs), loom::ValueError);
  // Content parts: the last part with text is continued.
  json parts = json::array({{{"role", "assistant"}, {"content", json::array({{{"type", "text"}, {"text", "Part"}}})}}});
  EXPECT_EQ(continue_final_message_cut("[Part]", parts), "[Part");
  ChatTemplateConfig c;
  c.templates["default"] = "x";
  ChatRequest both;
  both.add_generation_prompt = true;
  both.continue_final_message = true;
  EXPECT_THROW(apply_chat_template(c, both), loom::ValueError);
}

TEST(ChatValues, PythonFloatRepr) {
  // Shortest round-trip digits with Python's exponent switch at 1e16 and 1e-4.
  EXPECT_EQ(py_float_repr(0.1), "0.1");
  EXPECT_EQ(py_float_repr(1e16), "1e+16");
  EXPECT_EQ(py_float_repr(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(py_float_repr(0.0001), "0.0001");
  EXPECT_EQ(py_float_repr(0.00001), "1e-05");
  EXPECT_EQ(py_float_repr(-2.5e-10), "-2.5e-10");
  EXPECT_EQ(py_float_repr(1.0 / 3.0), "0.3333333333333333");
}

}  // namespace
}  // namespace loom::chat
