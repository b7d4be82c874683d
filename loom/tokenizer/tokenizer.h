// loom's tokenizer: text <-> token ids, identical to Hugging Face `tokenizers` for a model folder's
// tokenizer.json (or SentencePiece's tokenizer.model when that is all the folder has).
//
//   auto tok = loom::tokenizer::Tokenizer::from_folder("/models/qwen3");
//   std::vector<int32_t> ids = tok.encode("Hello", /*add_special_tokens=*/true);
//   std::string text = tok.decode(ids, /*skip_special_tokens=*/true);
//
// A Tokenizer is immutable after loading, cheap to copy (shared state) and safe to use from
// several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loom::tokenizer {

namespace detail {
class Backend;
}

class Tokenizer {
 public:
  // Loads tokenizer.json (else tokenizer.model) plus tokenizer_config.json,
  // special_tokens_map.json and generation_config.json when present. Throws loom::IoError when
  // the folder has no tokenizer, loom::ValueError when a file is malformed.
  static Tokenizer from_folder(const std::string& dir);
  // Builds a tokenizer from the text of a tokenizer.json (no special-token configuration).
  static Tokenizer from_json(std::string_view tokenizer_json);
  // Loads a SentencePiece model file (tokenizer.model).
  static Tokenizer from_sentencepiece(const std::string& model_path);

  // Text to ids. add_special_tokens applies the post-processor (e.g. Llama's leading <s>), as
  // HF's encode(text, add_special_tokens=...) does. Invalid UTF-8 is first replaced by U+FFFD.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Ids to text; unknown ids are skipped and invalid UTF-8 becomes U+FFFD, as in HF.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // Number of ids (model vocabulary plus added tokens outside it).
  size_t vocab_size() const;
  // True for ids of added tokens marked special (what skip_special_tokens removes).
  bool is_special(int32_t id) const;

  // From tokenizer_config.json / special_tokens_map.json, else generation_config.json.
  std::optional<int32_t> bos_token_id() const;
  // The tokenizer's eos token first, then any further ids generation_config.json lists.
  const std::vector<int32_t>& eos_token_ids() const;
  // tokenizer_config.json's add_bos_token / add_eos_token (false when absent).
  bool add_bos_token() const;
  bool add_eos_token() const;

 private:
  struct Config {
    std::optional<int32_t> bos;
    std::vector<int32_t> eos;
    bool add_bos = false, add_eos = false;
  };
  Tokenizer(std::shared_ptr<const detail::Backend> backend, Config config);

  std::shared_ptr<const detail::Backend> backend_;
  Config config_;
};

// Incremental detokenizer for generation: feed ids one at a time, get back only text that is
// final (complete UTF-8, settled leading-space rules). The concatenation of all returned pieces
// plus finalize() equals tokenizer.decode(all ids). Works for every decoder (byte-level BPE,
// SentencePiece/Metaspace, byte fallback) by decoding a short window of recent ids with one id of
// left context.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(Tokenizer tokenizer, bool skip_special_tokens = false);
  // Adds one id; returns newly completed text (possibly empty).
  std::string add_token(int32_t id);
  // Returns whatever text is still held back (e.g. an incomplete UTF-8 sequence, as U+FFFD).
  std::string finalize();
  // Forgets all ids, for reuse with a new sequence.
  void reset();
  // All text returned so far.
  const std::string& text() const { return text_; }

 private:
  std::string decode_range(size_t begin, size_t end) const;
  bool is_byte_token(int32_t id) const;

  Tokenizer tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // start of the left context
  size_t read_ = 0;    // ids before this have been emitted
  std::string text_;
};

}  // namespace loom::tokenizer
