// UTF-8 helpers with Python str semantics: code-point indexing, str.isspace, simple case mapping
// (ASCII, Latin-1, Greek, Cyrillic) and str.isprintable for repr().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loom::chat::utf8 {

// Decodes UTF-8; invalid bytes decode as U+FFFD one byte at a time.
std::vector<char32_t> decode(std::string_view s);
void append(std::string& out, char32_t cp);
std::string encode(const std::vector<char32_t>& cps);
// Number of code points (Python len()).
std::size_t length(std::string_view s);
// Python str.isspace for one code point.
bool is_space(char32_t c);
// Python str.isprintable for one code point (approximated without a full Unicode database).
bool is_printable(char32_t c);
bool is_alpha(char32_t c);
bool is_upper(char32_t c);
bool is_lower(char32_t c);
bool is_digit(char32_t c);
char32_t to_upper(char32_t c);
char32_t to_lower(char32_t c);
std::string upper(std::string_view s);
std::string lower(std::string_view s);

}  // namespace loom::chat::utf8
