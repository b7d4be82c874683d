// Shared helpers of the tokenizer tests: where the fixtures live, JSONL reading, and the real
// tokenizers, fetched on first use by scripts/fetch-test-tokenizers.sh (a missing download fails
// the test; it never skips).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace loom::tokenizer::test {

// tests/tokenizer in the source tree.
std::string source_dir();
// The folder holding <name>/tokenizer.json for the six real tokenizers; fetches them if needed
// (under an flock, so parallel ctest processes do not race). Throws when they cannot be had.
std::string real_tokenizers_dir();
// Reads a JSONL file into one JSON value per non-empty line; throws when the file is missing.
std::vector<nlohmann::json> read_jsonl(const std::string& path);
// Reads a whole JSON file.
nlohmann::json read_json(const std::string& path);
// The corpus lines (tests/tokenizer/corpus.jsonl).
const std::vector<std::string>& corpus();

inline const std::vector<std::string> kRealTokenizers = {"llama2", "llama3", "qwen3", "gemma3", "deepseek_v3", "gptoss"};
inline const std::vector<std::string> kHandmadeTokenizers = {
    "bpe_prefix_bytefallback", "bpe_suffix", "bytelevel_roberta", "split_merged_next",
    "unigram_metaspace", "unigram_precompiled", "wordlevel_splits", "wordpiece_bert"};

}  // namespace loom::tokenizer::test
