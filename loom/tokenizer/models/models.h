// Constructors of the models, one per JSON "type" (each defined in its own file), and the vocabulary
// map they share.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <string>
#include <string_view>
#include <unordered_map>

#include "loom/tokenizer/components.h"
#include "loom/tokenizer/flat_map.h"

namespace loom::tokenizer::detail {

std::unique_ptr<Model> make_bpe(const Json& j);
std::unique_ptr<Model> make_unigram(const Json& j);
std::unique_ptr<Model> make_word_piece(const Json& j);
std::unique_ptr<Model> make_word_level(const Json& j);

using VocabMap = StringIdMap;

// Reads a {"token": id} object into map and the inverse table; throws on non-integer ids.
void read_vocab_object(const Json& vocab, VocabMap& map, std::vector<std::string>& inverse,
                       std::vector<bool>& present, const char* where);
// Looks a token up; -1 when absent.
inline int32_t lookup(const VocabMap& map, std::string_view token) { return map.find(token); }
// Shared id_to_token over an inverse table with holes.
inline std::optional<std::string_view> inverse_lookup(const std::vector<std::string>& inv, const std::vector<bool>& present,
                                                      int32_t id) {
  if (id < 0 || size_t(id) >= inv.size() || !present[size_t(id)]) return std::nullopt;
  return std::string_view(inv[size_t(id)]);
}

// BPE tables parsed outside nlohmann (see json_scan.h): the vocabulary and the merges as ids
// (left, right, merged), in rank order.
struct BpeTables {
  VocabMap vocab;
  std::vector<std::array<int32_t, 3>> merges;
};
// Resolves one merge "a b" to ids; strip is the length of continuing_subword_prefix, removed from
// b in the merged token. Throws ValueError naming the missing token.
std::array<int32_t, 3> resolve_merge(const VocabMap& vocab, std::string_view a, std::string_view b, size_t strip,
                                     std::string& scratch);
// Builds a BPE model from its JSON options (vocab and merges not needed there) and tables.
std::unique_ptr<Model> make_bpe_from_tables(const Json& options, BpeTables&& tables);

}  // namespace loom::tokenizer::detail
