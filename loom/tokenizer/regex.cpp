// PCRE2 wrapper: compile once (JIT when available), match with per-thread match data.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "loom/tokenizer/regex.h"

#include <pcre2.h>

#include "loom/common/error.h"
#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer {

namespace {
// Oniguruma's Unicode \s (the White_Space property), as class members.
constexpr std::string_view kSpace =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";
// Oniguruma's Unicode \w: letters, marks, decimal digits, connector punctuation, and (from its
// Latin-1 ctype table) the superscripts and vulgar fractions of U+00B2..U+00BE.
constexpr std::string_view kWord = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
}  // namespace

std::string rewrite_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      ++i;
      if (e == 's' || e == 'w') {
        std::string_view set = e == 's' ? kSpace : kWord;
        if (in_class) {
          out += set;
        } else {
          out += '[';
          out += set;
          out += ']';
        }
        continue;
      }
      if ((e == 'S' || e == 'W') && !in_class) {
        out += "[^";
        out += e == 'S' ? kSpace : kWord;
        out += ']';
        continue;
      }
      out += '\\';
      out += e;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
};

Regex::Regex(std::string_view pattern) : impl_(std::make_unique<Impl>()) {
  std::string rewritten = rewrite_pattern(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    throw ValueError(format_error("tokenizer", "invalid regex '" + std::string(pattern) +
                                                   "': " + reinterpret_cast<char*>(buf)));
  }
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (impl_ && impl_->code) pcre2_code_free(impl_->code);
}

namespace {
// Per-thread match data and JIT stack (32 KiB growing to 8 MiB: long runs of one character class
// under patterns like \s+(?!\S) need more than PCRE2's default JIT stack).
struct ThreadState {
  pcre2_match_data* md = pcre2_match_data_create(32, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* ctx = pcre2_match_context_create(nullptr);
  ThreadState() {
    if (ctx && stack) pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~ThreadState() {
    pcre2_match_context_free(ctx);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(md);
  }
};
ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

int run_match(pcre2_code* code, bool jit, std::string_view text, size_t start) {
  ThreadState& ts = thread_state();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  if (jit) {
    int rc = pcre2_jit_match(code, subject, text.size(), start, 0, ts.md, ts.ctx);
    if (rc != PCRE2_ERROR_JIT_STACKLIMIT) return rc;
  }
  // The interpreter keeps its backtracking state on the heap.
  return pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, ts.md, ts.ctx);
}
}  // namespace

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = thread_state().md;
  size_t pos = 0;
  size_t last_end = size_t(-1);
  while (pos <= text.size()) {
    int rc = run_match(impl_->code, impl_->jit, text, pos);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw ValueError(format_error("tokenizer", "regex match failed (resource limit)"));
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t s = ov[0], e = ov[1];
    if (s == e) {
      if (e != last_end) out.emplace_back(s, e);
      if (e >= text.size()) break;
      pos = e + unicode::lead_len(static_cast<unsigned char>(text[e]));
      last_end = e;
      continue;
    }
    out.emplace_back(s, e);
    pos = e;
    last_end = e;
  }
  return out;
}

bool Regex::search(std::string_view text) const {
  int rc = run_match(impl_->code, impl_->jit, text, 0);
  return rc >= 0;
}

}  // namespace loom::tokenizer
