// StreamingDetokenizer: decodes ids[prefix, end) and ids[prefix, read) and emits the difference
// once it is final, i.e. does not end in U+FFFD (an unfinished UTF-8 sequence decodes to U+FFFD).
// The one id of left context (prefix) lets decoders apply their leading-space rules exactly as in
// a full decode (Metaspace, ByteLevel prefix spaces, Strip).
#include "loom/tokenizer/tokenizer.h"

namespace loom::tokenizer {

StreamingDetokenizer::StreamingDetokenizer(Tokenizer tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_(skip_special_tokens) {}

std::string StreamingDetokenizer::decode_range(size_t begin, size_t end) const {
  return tokenizer_.decode(std::span<const int32_t>(ids_.data() + begin, end - begin), skip_special_);
}

bool StreamingDetokenizer::is_byte_token(int32_t id) const {
  auto t = tokenizer_.id_to_token(id);
  return t && t->size() == 6 && t->compare(0, 3, "<0x") == 0 && t->back() == '>';
}

std::string StreamingDetokenizer::add_token(int32_t id) {
  ids_.push_back(id);
  std::string before = decode_range(prefix_, read_);
  std::string now = decode_range(prefix_, ids_.size());
  if (now.size() <= before.size() || now.compare(0, before.size(), before) != 0) return {};
  if (now.size() >= 3 && now.compare(now.size() - 3, 3, "\xEF\xBF\xBD") == 0) return {};
  std::string out = now.substr(before.size());
  // Keep one id of left context. ByteFallback decodes a run of <0xXX> tokens as a whole, so the
  // context must not end inside such a run: step back to the nearest other token (or keep the old
  // context when the run reaches it).
  const size_t old_prefix = prefix_;
  read_ = ids_.size();
  prefix_ = read_ - 1;
  while (prefix_ > old_prefix && is_byte_token(ids_[prefix_])) --prefix_;
  text_ += out;
  return out;
}

std::string StreamingDetokenizer::finalize() {
  std::string full = decode_range(0, ids_.size());
  std::string out;
  if (full.compare(0, text_.size(), text_) == 0) out = full.substr(text_.size());
  text_ += out;
  prefix_ = read_ = ids_.size();
  return out;
}

void StreamingDetokenizer::reset() {
  ids_.clear();
  prefix_ = read_ = 0;
  text_.clear();
}

}  // namespace loom::tokenizer
