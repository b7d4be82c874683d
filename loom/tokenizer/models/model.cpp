// Model factory: dispatches a tokenizer.json "model" object on its "type" (BPE when absent, as
// older files omit it).
#include <string>

#include "loom/common/error.h"
#include "loom/tokenizer/models/models.h"

namespace loom::tokenizer::detail {

std::unique_ptr<Model> make_model(const Json& j) {
  if (!j.is_object()) throw ValueError(format_error("tokenizer", "'model' must be an object"));
  std::string type;
  if (j.contains("type")) {
    type = string_field(j, "type", "model");
  } else if (j.contains("merges")) {
    type = "BPE";
  } else if (j.contains("unk_id")) {
    type = "Unigram";
  } else if (j.contains("max_input_chars_per_word")) {
    type = "WordPiece";
  } else {
    type = "WordLevel";
  }
  if (type == "BPE") return make_bpe(j);
  if (type == "Unigram") return make_unigram(j);
  if (type == "WordPiece") return make_word_piece(j);
  if (type == "WordLevel") return make_word_level(j);
  throw NotSupportedError(format_error("tokenizer", "unknown model type '" + type + "'"));
}

void read_vocab_object(const Json& vocab, VocabMap& map, std::vector<std::string>& inverse,
                       std::vector<bool>& present, const char* where) {
  if (!vocab.is_object()) throw ValueError(format_error("tokenizer", std::string(where) + ": 'vocab' must be an object"));
  map.reserve(vocab.size());
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      throw ValueError(format_error("tokenizer", std::string(where) + ": id of '" + it.key() + "' is not an integer"));
    }
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > INT32_MAX - 1) throw ValueError(format_error("tokenizer", std::string(where) + ": id out of range"));
    map.insert_or_assign(it.key(), int32_t(id));
    max_id = std::max(max_id, id);
  }
  if (max_id >= int64_t(map.size()) * 4 + 1024) {
    throw ValueError(format_error("tokenizer", std::string(where) + ": vocabulary ids are too sparse"));
  }
  inverse.assign(size_t(max_id + 1), std::string());
  present.assign(size_t(max_id + 1), false);
  map.for_each([&](std::string_view tok, int32_t id) {
    inverse[size_t(id)] = std::string(tok);
    present[size_t(id)] = true;
  });
}

}  // namespace loom::tokenizer::detail
