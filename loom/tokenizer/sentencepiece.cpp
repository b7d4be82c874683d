// SentencePiece fallback for folders that ship only tokenizer.model: encode/decode through
// libsentencepiece. add_special_tokens prepends <s> when the model has one (Llama's convention).
#include <sentencepiece_processor.h>

#include "loom/common/error.h"
#include "loom/tokenizer/backend.h"
#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer::detail {

namespace {
class SentencePiece final : public Backend {
 public:
  explicit SentencePiece(const std::string& path) {
    auto status = sp_.Load(path);
    if (!status.ok()) throw IoError(format_error("tokenizer", "cannot load " + path + ": " + status.ToString()));
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    std::string valid = unicode::from_utf8_lossy(text);
    std::vector<int> ids;
    auto status = sp_.Encode(valid, &ids);
    if (!status.ok()) throw ValueError(format_error("tokenizer", "sentencepiece encode failed: " + status.ToString()));
    std::vector<int32_t> out;
    if (add_special_tokens && sp_.bos_id() >= 0) out.push_back(sp_.bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::vector<int> keep;
    const int n = sp_.GetPieceSize();
    for (int32_t id : ids) {
      if (id < 0 || id >= n) continue;
      if (skip_special_tokens && sp_.IsControl(id)) continue;
      keep.push_back(id);
    }
    std::string out;
    auto status = sp_.Decode(keep, &out);
    if (!status.ok()) throw ValueError(format_error("tokenizer", "sentencepiece decode failed: " + status.ToString()));
    return unicode::from_utf8_lossy(out);
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int id = sp_.PieceToId(token);
    if (id < 0 || sp_.IdToPiece(id) != token) return std::nullopt;
    return id;
  }
  std::optional<std::string> id_to_token(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize()) return std::nullopt;
    return sp_.IdToPiece(id);
  }
  size_t vocab_size() const override { return size_t(sp_.GetPieceSize()); }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < sp_.GetPieceSize() && sp_.IsControl(id);
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};
}  // namespace

std::shared_ptr<const Backend> make_sentencepiece_backend(const std::string& model_path) {
  return std::make_shared<SentencePiece>(model_path);
}

}  // namespace loom::tokenizer::detail
