// Internal: what a Tokenizer delegates to (the tokenizer.json pipeline or SentencePiece).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loom::tokenizer::detail {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  virtual size_t vocab_size() const = 0;
  virtual bool is_special(int32_t id) const = 0;
};

std::shared_ptr<const Backend> make_pipeline_backend(std::string_view tokenizer_json);
std::shared_ptr<const Backend> make_sentencepiece_backend(const std::string& model_path);

}  // namespace loom::tokenizer::detail
