// PCRE2 regular expressions with the semantics HF tokenizers gets from Oniguruma: UTF + UCP mode,
// JIT-compiled, and \s / \S / \w rewritten to Oniguruma's Unicode definitions (PCRE2's \s lacks
// U+0085; its \w takes all of \p{N} but no marks).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom::tokenizer {

class Regex {
 public:
  // Compiles pattern; throws ValueError("[tokenizer] ...") naming the pattern when it is invalid.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches in text as [start, end) byte offsets, left to right. An empty
  // match right after the previous match is skipped, as Oniguruma's find_iter does.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  // True when the pattern matches somewhere in text.
  bool search(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Rewrites Oniguruma escapes that PCRE2 reads differently (exposed for tests).
std::string rewrite_pattern(std::string_view pattern);

}  // namespace loom::tokenizer
