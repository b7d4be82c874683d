// Constructors of the normalizers, one per JSON "type" (each defined in its own file).
#pragma once

#include <nlohmann/json.hpp>

#include "loom/tokenizer/components.h"
#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer::detail {

std::unique_ptr<Normalizer> make_nfc(const Json& j);
std::unique_ptr<Normalizer> make_nfd(const Json& j);
std::unique_ptr<Normalizer> make_nfkc(const Json& j);
std::unique_ptr<Normalizer> make_nfkd(const Json& j);
std::unique_ptr<Normalizer> make_lowercase(const Json& j);
std::unique_ptr<Normalizer> make_strip(const Json& j);
std::unique_ptr<Normalizer> make_strip_accents(const Json& j);
std::unique_ptr<Normalizer> make_replace(const Json& j);
std::unique_ptr<Normalizer> make_prepend(const Json& j);
std::unique_ptr<Normalizer> make_bert_normalizer(const Json& j);
std::unique_ptr<Normalizer> make_precompiled(const Json& j);
std::unique_ptr<Normalizer> make_sequence_normalizer(const Json& j);

// Applies f to every code point of text, letting it append its replacement to out.
template <class F>
std::string map_chars(const std::string& text, F f) {
  std::string out;
  out.reserve(text.size());
  size_t len = 0;
  for (size_t i = 0; i < text.size(); i += len) {
    char32_t c = unicode::decode(text, i, &len);  // sets len before the slice below
    f(out, c, std::string_view(text).substr(i, len));
  }
  return out;
}

}  // namespace loom::tokenizer::detail
