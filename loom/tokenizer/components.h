// Internal interfaces of the tokenizer.json pipeline (not installed as public API). Each concrete
// component lives in <kind>/<json type>.cpp and is built by the factory of its kind from the
// component's JSON object. The pipeline works on plain UTF-8 strings: loom only needs ids, so the
// offset alignments HF keeps are not tracked.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom::tokenizer::detail {

using Json = nlohmann::json;

// A run of text between added tokens, split further by pre-tokenizers. at_start is true when the
// piece begins at byte 0 of the original input (Metaspace's prepend_scheme "first" needs it).
struct Piece {
  std::string text;
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces pieces with their split (and possibly transformed) sub-pieces; drops empty ones.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word.
  virtual void tokenize(std::string_view word, std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string_view> id_to_token(int32_t id) const = 0;
  virtual size_t vocab_size() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence (only when add_special_tokens is set).
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Factories: one per kind, dispatching on the JSON "type". A null JSON value gives nullptr.
std::unique_ptr<Normalizer> make_normalizer(const Json& j);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j);
std::unique_ptr<Model> make_model(const Json& j);
std::unique_ptr<PostProcessor> make_post_processor(const Json& j);
std::unique_ptr<Decoder> make_decoder(const Json& j);

// Where a split pattern's matches go, as HF's SplitDelimiterBehavior.
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
SplitBehavior parse_split_behavior(const std::string& name);
// Splits piece text given the [start, end) matches of a delimiter; appends non-empty parts to out.
void split_piece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                 SplitBehavior behavior, bool invert, std::vector<Piece>& out);
// Splits every piece at each character for which is_delim returns true.
template <class F>
void split_pieces_by_char(std::vector<Piece>& pieces, SplitBehavior behavior, F is_delim);

// JSON access helpers that throw "[tokenizer] <what>" errors instead of nlohmann's.
const Json& field(const Json& j, const char* key, const char* where);
std::string string_field(const Json& j, const char* key, const char* where);
bool bool_field(const Json& j, const char* key, bool fallback);
// A {"String": s} or {"Regex": r} pattern object; returns (text, is_regex).
std::pair<std::string, bool> pattern_field(const Json& j, const char* where);
// Byte-level alphabet: each byte's stand-in character as UTF-8 (GPT-2's bytes_to_unicode).
const std::string& byte_to_char(unsigned char b);
// Inverse of byte_to_char on a code point; -1 when the code point is not in the alphabet.
int char_to_byte(char32_t c);
// Matches of a literal needle in text (non-overlapping, left to right).
std::vector<std::pair<size_t, size_t>> find_literal(std::string_view text, std::string_view needle);

}  // namespace loom::tokenizer::detail

#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer::detail {
template <class F>
void split_pieces_by_char(std::vector<Piece>& pieces, SplitBehavior behavior, F is_delim) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Piece& p : pieces) {
    matches.clear();
    size_t len = 0;
    for (size_t i = 0; i < p.text.size(); i += len) {
      char32_t c = unicode::decode(p.text, i, &len);
      if (is_delim(c)) matches.emplace_back(i, i + len);
    }
    split_piece(p, matches, behavior, /*invert=*/false, out);
  }
  pieces = std::move(out);
}
}  // namespace loom::tokenizer::detail
