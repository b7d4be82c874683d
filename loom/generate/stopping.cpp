#include "loom/generate/stopping.h"

#include <algorithm>

namespace loom::generate {
namespace {

// Length of the longest suffix of s that is a proper prefix of some stop string.
size_t held_tail(const std::string& s, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const auto& stop : stops) {
    size_t max_len = std::min(s.size(), stop.size() - 1);
    for (size_t len = max_len; len > best; --len)
      if (s.compare(s.size() - len, len, stop, 0, len) == 0) {
        best = len;
        break;
      }
  }
  // Never split a UTF-8 character: extend the held tail back to a lead byte.
  while (best < s.size() && best > 0 && (static_cast<unsigned char>(s[s.size() - best]) & 0xC0) == 0x80) ++best;
  return best;
}

}  // namespace

StopStringFilter::StopStringFilter(std::vector<std::string> stop_strings) {
  for (auto& s : stop_strings)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopStringFilter::push(const std::string& text) {
  if (stopped_) return {};
  pending_ += text;
  // The earliest stop string in the pending text wins.
  size_t first = std::string::npos;
  for (const auto& stop : stops_) {
    size_t at = pending_.find(stop);
    if (at != std::string::npos && (first == std::string::npos || at < first)) first = at, matched_ = stop;
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  size_t hold = held_tail(pending_, stops_);
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringFilter::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

std::set<int32_t> merge_eos_ids(const EosSources& s) {
  std::set<int32_t> ids;
  for (int64_t id : s.config_ids) ids.insert(static_cast<int32_t>(id));
  for (int64_t id : s.generation_config_ids) ids.insert(static_cast<int32_t>(id));
  ids.insert(s.tokenizer_ids.begin(), s.tokenizer_ids.end());
  ids.insert(s.extra_ids.begin(), s.extra_ids.end());
  return ids;
}

}  // namespace loom::generate
