// A read-only view of a model's config.json with the JSON library hidden behind it. Loading
// normalises transformers v5 keys to the v4 names the models read: `rope_parameters` ->
// `rope_theta` + `rope_scaling` (when its rope_type is not "default"), `dtype` -> `torch_dtype`.
// Required keys throw ConfigError "[config] missing 'hidden_size' in <file>".
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loom::io {

class Config {
 public:
  Config();
  ~Config();
  Config(const Config&);
  Config& operator=(const Config&);

  // Reads `<dir>/config.json` (or the file itself when given a .json path) and normalises it.
  static Config load(const std::string& path_or_dir);
  // Parses JSON text; `source` names it in errors.
  static Config parse(const std::string& json_text, const std::string& source = "config.json");

  bool has(const std::string& key) const;      // present and not null
  bool is_object(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;  // a number is a list of one
  std::vector<double> get_float_list(const std::string& key) const;
  std::vector<std::string> get_string_list(const std::string& key) const;
  std::vector<std::string> keys() const;
  // A nested object (e.g. "text_config", "rope_scaling"); throws when absent or not an object.
  Config sub(const std::string& key) const;
  // This config with the keys of `overlay` set on top (used for text_config merging).
  Config merged(const Config& overlay) const;
  std::string source() const;
  std::string dump(int indent = -1) const;
  // Sets/overrides a key from JSON text (used by tools and tests).
  void set_json(const std::string& key, const std::string& json_value);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// generation_config.json (optional file): eos ids (int or list), bos id, and sampling defaults.
struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<double> temperature, top_p;
  std::optional<int64_t> top_k;
};
// Reads `<dir>/generation_config.json`; a missing file gives an empty config.
GenerationConfig load_generation_config(const std::string& dir);

}  // namespace loom::io
