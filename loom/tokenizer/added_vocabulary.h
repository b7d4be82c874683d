// Added tokens (tokenizer.json "added_tokens"): matched before the model sees the text, leftmost
// then longest, with HF's lstrip / rstrip / single_word rules. Tokens with normalized=false are
// matched in the raw text, the others in the normalized text (against their normalized content).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace loom::tokenizer::detail {

class Normalizer;

// A stretch of text that either is one added token (id >= 0) or still needs tokenizing.
struct Segment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;
};

class AddedVocabulary {
 public:
  struct Token {
    std::string content;  // as written in tokenizer.json
    std::string pattern;  // what is matched and decoded: content, normalized when `normalized`
    int32_t id = 0;
    bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
  };

  AddedVocabulary() = default;
  // Reads the "added_tokens" list; normalizer (may be null) gives the normalized patterns.
  AddedVocabulary(const nlohmann::json& list, const Normalizer* normalizer);

  // Splits text on the raw (normalized=false) or normalized (normalized=true) tokens.
  void split(std::string_view text, bool at_start, bool normalized, std::vector<Segment>& out) const;

  const Token* find_id(int32_t id) const;
  std::optional<int32_t> find_content(std::string_view content) const;
  bool is_special_content(std::string_view content) const { return specials_.count(std::string(content)) != 0; }
  const std::vector<Token>& tokens() const { return tokens_; }

 private:
  struct Trie {
    std::unordered_map<uint64_t, int32_t> edges;  // (node << 8 | byte) -> child
    std::vector<int32_t> terminal{-1};             // node -> index into tokens_, or -1
    bool first_byte[256] = {};
    void add(std::string_view key, int32_t token_index);
    // Longest key starting at text[pos]: returns its token index and sets *end, or -1.
    int32_t longest(std::string_view text, size_t pos, size_t* end) const;
  };

  std::vector<Token> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, int32_t> by_content_;
  std::unordered_set<std::string> specials_;
  Trie raw_, normalized_;
};

}  // namespace loom::tokenizer::detail
