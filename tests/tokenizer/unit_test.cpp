// Unit tests of tokenizer building blocks, with expectations derived by hand from the written
// specs (Unicode's "U+FFFD substitution of maximal subparts", HF's SplitDelimiterBehavior docs),
// and of the `loom tokenize` command through its CLI11 registration.
#include <CLI/CLI.hpp>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "loom/common/error.h"
#include "loom/tokenizer/components.h"
#include "loom/tokenizer/regex.h"
#include "loom/tokenizer/tokenizer.h"
#include "loom/tokenizer/unicode.h"
#include "tests/tokenizer/test_data.h"
#include "tools/cli/commands.h"

namespace loom::tokenizer::test {
namespace {

TEST(Unicode, LossyDecodingReplacesMaximalSubparts) {
  // Unicode 15 §3.9 table 3-8: "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64" becomes
  // a, FFFD (F1 80 80), FFFD (E1 80), FFFD (C2), b, FFFD (80), c, FFFD, FFFD (80 BF), d.
  std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(unicode::from_utf8_lossy(in), "a" + r + r + r + "b" + r + "c" + r + r + "d");
  // Surrogates (ED A0 80) and overlongs (C0 AF) are invalid byte by byte after the lead.
  EXPECT_EQ(unicode::from_utf8_lossy("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(unicode::from_utf8_lossy("\xC0\xAF"), r + r);
  EXPECT_EQ(unicode::from_utf8_lossy("\xF0\x9F\x99"), r);  // truncated 4-byte sequence
  EXPECT_TRUE(unicode::is_valid_utf8("a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x99\x82"));
}

TEST(Unicode, WhitespaceIsRustsWhiteSpace) {
  for (char32_t c : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u,
                     0x2029u, 0x202Fu, 0x205Fu, 0x3000u}) {
    EXPECT_TRUE(unicode::is_whitespace(c)) << std::hex << uint32_t(c);
  }
  for (char32_t c : {0x200Bu, 0x180Eu, 0xFEFFu, 0x1Cu}) EXPECT_FALSE(unicode::is_whitespace(c)) << std::hex << uint32_t(c);
}

TEST(Unicode, LowercaseUsesFullMapping) {
  std::string out;
  unicode::append_lowercase(out, 0x130);  // İ -> i + U+0307
  EXPECT_EQ(out, "i\xCC\x87");
}

TEST(Regex, RewritesOnigurumaClasses) {
  EXPECT_EQ(rewrite_pattern("a\\s+"), "a[\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]+");
  Regex re(R"(\s+(?!\S)|\s+)");
  // NEL (U+0085) is White_Space for Oniguruma; PCRE2's own \s would not match it.
  auto m = re.find_all("a\xC2\x85" "b");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], std::make_pair(size_t(1), size_t(3)));
}

TEST(Regex, EmptyMatchesAdvanceOneCharacter) {
  Regex re("x*");
  // Oniguruma-style iteration over "axb": "" at 0, "x" at 1, "" at 3 (the empty match at 2,
  // right after the previous match, is skipped).
  auto m = re.find_all("axb");
  std::vector<std::pair<size_t, size_t>> want = {{0, 0}, {1, 2}, {3, 3}};
  EXPECT_EQ(m, want);
}

std::vector<std::string> split_dash(detail::SplitBehavior b, bool invert = false) {
  detail::Piece p{"the-final--countdown", true};
  std::vector<detail::Piece> out;
  detail::split_piece(p, detail::find_literal(p.text, "-"), b, invert, out);
  std::vector<std::string> v;
  for (auto& x : out) v.push_back(x.text);
  return v;
}

TEST(Split, BehavioursFollowHfDocumentation) {
  using B = detail::SplitBehavior;
  // HF docs, SplitDelimiterBehavior, on "the-final--countdown" split by "-".
  EXPECT_EQ(split_dash(B::removed), (std::vector<std::string>{"the", "final", "countdown"}));
  EXPECT_EQ(split_dash(B::isolated), (std::vector<std::string>{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_dash(B::merged_with_previous), (std::vector<std::string>{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_dash(B::merged_with_next), (std::vector<std::string>{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_dash(B::contiguous), (std::vector<std::string>{"the", "-", "final", "--", "countdown"}));
  // invert: the words are the delimiters and are removed; each "-" match was its own segment.
  EXPECT_EQ(split_dash(B::removed, /*invert=*/true), (std::vector<std::string>{"-", "-", "-"}));
}

TEST(ByteLevel, AlphabetIsGpt2s) {
  // GPT-2 bytes_to_unicode: printable bytes map to themselves, space (0x20) is the 33rd
  // non-printable byte -> U+0120 'Ġ', newline (0x0A) the 11th -> U+010A 'Ċ'.
  EXPECT_EQ(detail::byte_to_char(' '), "\xC4\xA0");
  EXPECT_EQ(detail::byte_to_char('\n'), "\xC4\x8A");
  EXPECT_EQ(detail::byte_to_char('A'), "A");
  EXPECT_EQ(detail::char_to_byte(0x120), 0x20);
}

std::string run_cli(const std::vector<std::string>& args) {
  CLI::App app;
  loom::cli::add_tokenize_command(app);
  std::vector<const char*> argv = {"loom"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream captured;
  auto* old = std::cout.rdbuf(captured.rdbuf());
  try {
    app.parse(int(argv.size()), argv.data());
  } catch (...) {
    std::cout.rdbuf(old);
    throw;
  }
  std::cout.rdbuf(old);
  return captured.str();
}

std::string temp_file(const std::string& name, const std::string& content) {
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(TokenizeCommand, EncodesAndDecodesJsonl) {
  std::string model = real_tokenizers_dir() + "/llama2";
  auto expected = read_jsonl(source_dir() + "/expected/llama2.jsonl");
  // Corpus lines 15 and 16 ("Hello world", "Hello, world! ...") through the CLI.
  std::string in = nlohmann::json({{"text", corpus()[15]}}).dump() + "\n" +
                   nlohmann::json({{"text", corpus()[16]}}).dump() + "\n";
  std::string path = temp_file("loom_tok_in.jsonl", in);
  std::string out = run_cli({"tokenize", "--model", model, "--input", path});
  std::string want = nlohmann::json({{"ids", expected[15]["ids"]}}).dump() + "\n" +
                     nlohmann::json({{"ids", expected[16]["ids"]}}).dump() + "\n";
  EXPECT_EQ(out, want);
  out = run_cli({"tokenize", "--model", model, "--input", path, "--add-special-tokens"});
  EXPECT_EQ(out.substr(0, out.find('\n')), nlohmann::json({{"ids", expected[15]["ids_special"]}}).dump());

  // Decode: byte-fallback ids of a lone 0xE4 byte give U+FFFD.
  std::string dpath = temp_file("loom_tok_ids.jsonl", nlohmann::json({{"ids", expected[16]["ids_special"]}}).dump() + "\n");
  out = run_cli({"tokenize", "--model", model, "--input", dpath, "--decode", "--skip-special-tokens"});
  EXPECT_EQ(out, nlohmann::json({{"text", expected[16]["decode_skip"]}}).dump() + "\n");
  std::string bad = temp_file("loom_tok_bad.jsonl", "{\"ids\": [232]}\n");  // <0xE5> alone
  out = run_cli({"tokenize", "--model", model, "--input", bad, "--decode"});
  EXPECT_EQ(out, "{\"text\":\"\xEF\xBF\xBD\"}\n");
}

TEST(TokenizeCommand, ErrorsAreLoomErrors) {
  std::string model = real_tokenizers_dir() + "/llama2";
  std::string path = temp_file("loom_tok_garbage.jsonl", "{\"text\": 5}\n");
  EXPECT_THROW(run_cli({"tokenize", "--model", model, "--input", path}), loom::Error);
  EXPECT_THROW(run_cli({"tokenize", "--model", model, "--input", "/nonexistent.jsonl"}), loom::Error);
}

}  // namespace
}  // namespace loom::tokenizer::test
