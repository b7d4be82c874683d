// UTF-8 and Unicode-property helpers for the tokenizer pipeline. Properties come from utf8proc;
// where HF tokenizers follows Rust's std (White_Space, Alphabetic, to_lowercase) these helpers
// reproduce Rust's definitions rather than utf8proc's nearest equivalent.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace loom::tokenizer::unicode {

// Decodes the code point starting at s[i] (s must be valid UTF-8) and sets len to its byte length.
char32_t decode(std::string_view s, size_t i, size_t* len);
// Appends the UTF-8 encoding of cp to out.
void append(std::string& out, char32_t cp);
// Byte length of the UTF-8 sequence whose lead byte is b (1 for stray continuation bytes).
inline size_t lead_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? (b < 0xC0 ? 1 : 2) : b < 0xF0 ? 3 : 4;
}
// Converts arbitrary bytes to valid UTF-8 the way Rust's String::from_utf8_lossy does: each
// maximal invalid subpart becomes one U+FFFD.
std::string from_utf8_lossy(std::string_view bytes);
// True when bytes are valid UTF-8 (no surrogates, no overlongs, <= U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

// Rust char::is_whitespace (the White_Space property).
bool is_whitespace(char32_t c);
// Rust char::is_numeric (general categories Nd, Nl, No).
bool is_numeric(char32_t c);
// Rust char::is_alphabetic (the Alphabetic property), approximated from utf8proc categories.
bool is_alphabetic(char32_t c);
// Rust regex \w: Alphabetic, marks, Nd, Pc, Join_Control.
bool is_word(char32_t c);
// Unicode general category P* (any punctuation).
bool is_punctuation(char32_t c);
// General category M* (Mn, Mc, Me).
bool is_mark(char32_t c);
// General category Mn.
bool is_mark_nonspacing(char32_t c);
// Rust unicode_categories' is_other: Cc, Cf, Cs, Co (unassigned Cn is not included).
bool is_other(char32_t c);
// Appends Rust's char::to_lowercase(c) (full mapping: U+0130 becomes two code points).
void append_lowercase(std::string& out, char32_t c);

enum class NormalForm { nfc, nfd, nfkc, nfkd };
// Unicode normalization of valid UTF-8 text through utf8proc.
std::string normalize(std::string_view s, NormalForm form);

}  // namespace loom::tokenizer::unicode
