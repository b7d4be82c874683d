// Stop conditions: eos ids and stop strings. StopStringFilter holds back any tail of the streamed
// text that could still become a stop string, so a partial stop string is never emitted — also
// when it spans several tokens or a multi-byte UTF-8 character (pieces from the streaming
// detokenizer are always whole characters, and the held tail is cut on a character boundary).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace loom::generate {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stop_strings);
  // Adds streamed text; returns the part now safe to emit. After a stop string is seen, returns
  // the text before it and stopped() becomes true (later calls return "").
  std::string push(const std::string& text);
  // End of stream without a stop: returns the held-back tail.
  std::string flush();
  bool stopped() const { return stopped_; }
  // The stop string that matched (empty if none).
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
  std::string matched_;
};

// The eos ids of a model folder, merged and de-duplicated: config.json's eos_token_id,
// generation_config.json's, the tokenizer's, then extra tokens given by text (each must be one id).
struct EosSources {
  std::vector<int64_t> config_ids;
  std::vector<int64_t> generation_config_ids;
  std::vector<int32_t> tokenizer_ids;
  std::vector<int32_t> extra_ids;
};
std::set<int32_t> merge_eos_ids(const EosSources& sources);

}  // namespace loom::generate
