// Tokenizer: loads a model folder's tokenizer files and forwards to the backend.
#include "loom/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/tokenizer/backend.h"

namespace loom::tokenizer {

namespace {
namespace fs = std::filesystem;
using Json = nlohmann::json;

// Parses an optional JSON file; a missing file is an empty object.
Json read_optional_json(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Json::object();
  std::string text = read_file(path.string());
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(format_error("tokenizer", path.string() + " is not valid JSON: " + e.what()));
  }
}

// A token given as "text" or {"content": "text"}.
std::optional<std::string> token_text(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return std::nullopt;
  const Json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

std::vector<int32_t> id_list(const Json& j, const char* key) {
  std::vector<int32_t> out;
  if (!j.is_object() || !j.contains(key)) return out;
  const Json& v = j[key];
  if (v.is_number_integer()) out.push_back(v.get<int32_t>());
  if (v.is_array()) {
    for (const Json& x : v) {
      if (x.is_number_integer()) out.push_back(x.get<int32_t>());
    }
  }
  return out;
}
}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const detail::Backend> backend, Config config)
    : backend_(std::move(backend)), config_(std::move(config)) {}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json) {
  return Tokenizer(detail::make_pipeline_backend(tokenizer_json), Config{});
}

Tokenizer Tokenizer::from_sentencepiece(const std::string& model_path) {
  return Tokenizer(detail::make_sentencepiece_backend(model_path), Config{});
}

Tokenizer Tokenizer::from_folder(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  std::shared_ptr<const detail::Backend> backend;
  if (fs::exists(root / "tokenizer.json", ec)) {
    backend = detail::make_pipeline_backend(read_file((root / "tokenizer.json").string()));
  } else if (fs::exists(root / "tokenizer.model", ec)) {
    backend = detail::make_sentencepiece_backend((root / "tokenizer.model").string());
  } else {
    throw IoError(format_error("tokenizer", "no tokenizer.json or tokenizer.model in " + dir));
  }
  const Json cfg = read_optional_json(root / "tokenizer_config.json");
  const Json map = read_optional_json(root / "special_tokens_map.json");
  const Json gen = read_optional_json(root / "generation_config.json");
  Config c;
  auto resolve = [&](const char* key) -> std::optional<int32_t> {
    auto text = token_text(cfg, key);
    if (!text) text = token_text(map, key);
    if (!text) return std::nullopt;
    return backend->token_to_id(*text);
  };
  c.bos = resolve("bos_token");
  if (!c.bos) {
    auto ids = id_list(gen, "bos_token_id");
    if (!ids.empty()) c.bos = ids[0];
  }
  if (auto eos = resolve("eos_token")) c.eos.push_back(*eos);
  for (int32_t id : id_list(gen, "eos_token_id")) {
    if (std::find(c.eos.begin(), c.eos.end(), id) == c.eos.end()) c.eos.push_back(id);
  }
  c.add_bos = cfg.value("add_bos_token", Json(false)).is_boolean() && cfg.value("add_bos_token", false);
  c.add_eos = cfg.value("add_eos_token", Json(false)).is_boolean() && cfg.value("add_eos_token", false);
  return Tokenizer(std::move(backend), std::move(c));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return backend_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return backend_->decode(ids, skip_special_tokens);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const { return backend_->token_to_id(token); }
std::optional<std::string> Tokenizer::id_to_token(int32_t id) const { return backend_->id_to_token(id); }
size_t Tokenizer::vocab_size() const { return backend_->vocab_size(); }
bool Tokenizer::is_special(int32_t id) const { return backend_->is_special(id); }
std::optional<int32_t> Tokenizer::bos_token_id() const { return config_.bos; }
const std::vector<int32_t>& Tokenizer::eos_token_ids() const { return config_.eos; }
bool Tokenizer::add_bos_token() const { return config_.add_bos; }
bool Tokenizer::add_eos_token() const { return config_.add_eos; }

}  // namespace loom::tokenizer
