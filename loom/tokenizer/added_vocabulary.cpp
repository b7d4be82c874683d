// Added-token matching: a byte trie per matching set, scanned leftmost-longest like HF's
// Aho-Corasick (MatchKind::LeftmostLongest); rejected single_word matches are skipped whole.
#include "loom/tokenizer/added_vocabulary.h"

#include <nlohmann/json.hpp>

#include "loom/common/error.h"
#include "loom/tokenizer/components.h"
#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer::detail {

void AddedVocabulary::Trie::add(std::string_view key, int32_t token_index) {
  int32_t node = 0;
  for (unsigned char b : key) {
    uint64_t k = (uint64_t(node) << 8) | b;
    auto it = edges.find(k);
    if (it == edges.end()) {
      int32_t child = int32_t(terminal.size());
      terminal.push_back(-1);
      edges.emplace(k, child);
      node = child;
    } else {
      node = it->second;
    }
  }
  first_byte[static_cast<unsigned char>(key[0])] = true;
  terminal[size_t(node)] = token_index;
}

int32_t AddedVocabulary::Trie::longest(std::string_view text, size_t pos, size_t* end) const {
  int32_t node = 0, found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = edges.find((uint64_t(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == edges.end()) break;
    node = it->second;
    if (terminal[size_t(node)] >= 0) {
      found = terminal[size_t(node)];
      *end = i + 1;
    }
  }
  return found;
}

AddedVocabulary::AddedVocabulary(const nlohmann::json& list, const Normalizer* normalizer) {
  if (list.is_null()) return;
  if (!list.is_array()) throw ValueError(format_error("tokenizer", "'added_tokens' must be a list"));
  for (const auto& j : list) {
    Token t;
    t.content = string_field(j, "content", "added token");
    const Json& id = field(j, "id", "added token");
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      throw ValueError(format_error("tokenizer", "added token '" + t.content + "' has a bad id"));
    }
    t.id = id.get<int32_t>();
    t.special = bool_field(j, "special", false);
    t.lstrip = bool_field(j, "lstrip", false);
    t.rstrip = bool_field(j, "rstrip", false);
    t.single_word = bool_field(j, "single_word", false);
    t.normalized = bool_field(j, "normalized", !t.special);
    if (t.content.empty()) continue;  // HF ignores empty added tokens
    if (!unicode::is_valid_utf8(t.content)) throw ValueError(format_error("tokenizer", "added token is not valid UTF-8"));
    t.pattern = t.content;
    if (t.normalized && normalizer) normalizer->normalize(t.pattern);
    tokens_.push_back(std::move(t));
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const Token& t = tokens_[i];
    by_id_[t.id] = i;
    by_content_[t.content] = t.id;
    if (t.special) specials_.insert(t.content);
  }
  // Later duplicates of an id win (HF keeps one token per id); only those are matched.
  for (const auto& [id, i] : by_id_) {
    const Token& t = tokens_[i];
    if (t.pattern.empty()) continue;
    (t.normalized ? normalized_ : raw_).add(t.pattern, int32_t(i));
  }
}

namespace {
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = s.size() - 1, len = 0;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return unicode::is_word(unicode::decode(s, i, &len));
}
bool starts_with_word(std::string_view s) {
  size_t len = 0;
  return !s.empty() && unicode::is_word(unicode::decode(s, 0, &len));
}
// Start of the run of whitespace that ends s.
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size(), len = 0;
  while (end > 0) {
    size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    if (!unicode::is_whitespace(unicode::decode(s, i, &len))) break;
    end = i;
  }
  return end;
}
size_t leading_space_len(std::string_view s) {
  size_t i = 0, len = 0;
  while (i < s.size() && unicode::is_whitespace(unicode::decode(s, i, &len))) i += len;
  return i;
}
}  // namespace

void AddedVocabulary::split(std::string_view text, bool at_start, bool normalized, std::vector<Segment>& out) const {
  const Trie& trie = normalized ? normalized_ : raw_;
  if (trie.terminal.size() <= 1) {
    if (!text.empty()) out.push_back(Segment{std::string(text), -1, at_start});
    return;
  }
  size_t start_offset = 0, pos = 0;
  while (pos < text.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    size_t stop = 0;
    int32_t idx = trie.longest(text, pos, &stop);
    if (idx < 0) {
      ++pos;
      continue;
    }
    const Token& t = tokens_[size_t(idx)];
    size_t start = pos;
    pos = stop;
    if (t.single_word) {
      bool start_ok = start == 0 || !ends_with_word(text.substr(0, start));
      bool stop_ok = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (t.rstrip) stop += leading_space_len(text.substr(stop));
    if (start < start_offset) start = start_offset;  // loom: never emit overlapping segments
    if (start_offset < start) {
      out.push_back(Segment{std::string(text.substr(start_offset, start - start_offset)), -1, at_start && start_offset == 0});
    }
    out.push_back(Segment{std::string(text.substr(start, stop - start)), t.id, false});
    start_offset = stop;
    pos = std::max(pos, stop);
  }
  if (start_offset < text.size()) {
    out.push_back(Segment{std::string(text.substr(start_offset)), -1, at_start && start_offset == 0});
  }
}

const AddedVocabulary::Token* AddedVocabulary::find_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::find_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

}  // namespace loom::tokenizer::detail
