// Config: a pimpl over nlohmann::json so no header outside loom/io sees the JSON library. Typed
// getters are strict (a present key of the wrong type is an error, never a silent default) but
// accept integral floats as ints and ints as floats, as Python's json round-trips them.
#include "loom/io/config.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "loom/common/error.h"
#include "loom/common/strings.h"

namespace loom::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Config::Impl {
  json j = json::object();
  std::string source;
};

namespace {

constexpr const char* kWhere = "config";

[[noreturn]] void fail(const std::string& what) { throw ConfigError(format_error(kWhere, what)); }

[[noreturn]] void wrong_type(const std::string& key, const std::string& source, const char* expected,
                             const json& got) {
  fail("'" + key + "' in " + source + " must be " + expected + ", got " + got.dump());
}

std::optional<int64_t> as_int(const json& v) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// transformers v5 -> v4 names, in place (see config.h).
void normalize(json& j) {
  if (!j.is_object()) return;
  auto present = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  if (present("rope_parameters") && j["rope_parameters"].is_object()) {
    const json& rp = j["rope_parameters"];
    // Per-layer-type dicts (e.g. {"full_attention": {...}}) have no rope_type/rope_theta: left as they are.
    if (!present("rope_theta") && rp.contains("rope_theta") && rp["rope_theta"].is_number())
      j["rope_theta"] = rp["rope_theta"];
    if (!present("partial_rotary_factor") && rp.contains("partial_rotary_factor"))
      j["partial_rotary_factor"] = rp["partial_rotary_factor"];
    std::string type = "default";
    if (rp.contains("rope_type") && rp["rope_type"].is_string()) type = rp["rope_type"].get<std::string>();
    else if (rp.contains("type") && rp["type"].is_string()) type = rp["type"].get<std::string>();
    if (type != "default" && !present("rope_scaling")) {
      json rs = rp;
      rs.erase("rope_theta");  // v4 keeps it at the top level, not in rope_scaling
      rs.erase("partial_rotary_factor");
      rs["rope_type"] = type;
      j["rope_scaling"] = std::move(rs);
    }
  }
  // v4 files spell the scaling kind "type" or "rope_type"; both are set so either read works.
  if (present("rope_scaling") && j["rope_scaling"].is_object()) {
    json& rs = j["rope_scaling"];
    if (rs.contains("rope_type") && !rs.contains("type")) rs["type"] = rs["rope_type"];
    if (rs.contains("type") && !rs.contains("rope_type")) rs["rope_type"] = rs["type"];
  }
  if (present("dtype") && !present("torch_dtype")) j["torch_dtype"] = j["dtype"];
  if (j.contains("text_config")) normalize(j["text_config"]);
}

}  // namespace

Config::Config() : impl_(std::make_unique<Impl>()) {}
Config::~Config() = default;
Config::Config(const Config& o) : impl_(std::make_unique<Impl>(*o.impl_)) {}
Config& Config::operator=(const Config& o) {
  if (this != &o) *impl_ = *o.impl_;
  return *this;
}

Config Config::load(const std::string& path_or_dir) {
  fs::path p(path_or_dir);
  std::error_code ec;
  if (fs::is_directory(p, ec)) p /= "config.json";
  if (!fs::is_regular_file(p, ec)) fail("no config file at " + p.string());
  return parse(read_file(p.string()), p.string());
}

// Python's json module writes the non-standard literals Infinity, -Infinity and NaN (transformers'
// default Mamba-2 `time_step_limit` is [0.0, Infinity]). Outside strings they become the largest
// double (which clips like infinity) and null, so such configs parse; everything else is untouched.
namespace {
std::string python_json_literals(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) out += text[++i];
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    if (text.compare(i, 8, "Infinity") == 0) {
      out += "1.7976931348623157e308";
      i += 7;
    } else if (text.compare(i, 3, "NaN") == 0) {
      out += "null";
      i += 2;
    } else {
      out += ch;
    }
  }
  return out;
}
}  // namespace

Config Config::parse(const std::string& json_text, const std::string& source) {
  Config c;
  c.impl_->source = source;
  try {
    c.impl_->j = json::parse(python_json_literals(json_text));
  } catch (const json::exception& e) {
    fail("invalid JSON in " + source + ": " + e.what());
  }
  if (!c.impl_->j.is_object())
    fail(source + " must hold a JSON object, got " + std::string(c.impl_->j.type_name()));
  normalize(c.impl_->j);
  return c;
}

namespace {

// The value of a required key; throws "missing" when absent or null.
const json& required(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail("missing '" + key + "' in " + source);
  return *it;
}

const json* optional_value(const json& j, const std::string& key) {
  auto it = j.find(key);
  return (it == j.end() || it->is_null()) ? nullptr : &*it;
}

}  // namespace

bool Config::has(const std::string& key) const { return optional_value(impl_->j, key) != nullptr; }

bool Config::is_object(const std::string& key) const {
  const json* v = optional_value(impl_->j, key);
  return v && v->is_object();
}

int64_t Config::get_int(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  auto i = as_int(v);
  if (!i) wrong_type(key, impl_->source, "an integer", v);
  return *i;
}

int64_t Config::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double Config::get_float(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  if (!v.is_number()) wrong_type(key, impl_->source, "a number", v);
  return v.get<double>();
}

double Config::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool Config::get_bool(const std::string& key, bool fallback) const {
  const json* v = optional_value(impl_->j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) wrong_type(key, impl_->source, "a boolean", *v);
  return v->get<bool>();
}

std::string Config::get_string(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  if (!v.is_string()) wrong_type(key, impl_->source, "a string", v);
  return v.get<std::string>();
}

std::string Config::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  if (!v.is_array()) {
    auto i = as_int(v);
    if (!i) wrong_type(key, impl_->source, "an integer or a list of integers", v);
    return {*i};
  }
  std::vector<int64_t> out;
  for (const auto& e : v) {
    auto i = as_int(e);
    if (!i) wrong_type(key, impl_->source, "a list of integers", v);
    out.push_back(*i);
  }
  return out;
}

std::vector<double> Config::get_float_list(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  if (v.is_number()) return {v.get<double>()};
  if (!v.is_array()) wrong_type(key, impl_->source, "a number or a list of numbers", v);
  std::vector<double> out;
  for (const auto& e : v) {
    if (!e.is_number()) wrong_type(key, impl_->source, "a list of numbers", v);
    out.push_back(e.get<double>());
  }
  return out;
}

std::vector<std::string> Config::get_string_list(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) wrong_type(key, impl_->source, "a string or a list of strings", v);
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) wrong_type(key, impl_->source, "a list of strings", v);
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<std::string> Config::keys() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : impl_->j.items()) out.push_back(k);
  return out;
}

Config Config::sub(const std::string& key) const {
  const json& v = required(impl_->j, key, impl_->source);
  if (!v.is_object()) wrong_type(key, impl_->source, "an object", v);
  Config c;
  c.impl_->j = v;
  c.impl_->source = "'" + key + "' of " + impl_->source;
  return c;
}

Config Config::merged(const Config& overlay) const {
  Config c(*this);
  for (const auto& [k, v] : overlay.impl_->j.items()) c.impl_->j[k] = v;
  return c;
}

std::string Config::source() const { return impl_->source; }

std::string Config::dump(int indent) const { return impl_->j.dump(indent); }

void Config::set_json(const std::string& key, const std::string& json_value) {
  try {
    impl_->j[key] = json::parse(json_value);
  } catch (const json::exception& e) {
    fail("invalid JSON for '" + key + "': " + e.what());
  }
}

GenerationConfig load_generation_config(const std::string& dir) {
  GenerationConfig g;
  fs::path p = fs::path(dir) / "generation_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return g;
  Config c = Config::parse(read_file(p.string()), p.string());
  if (c.has("eos_token_id")) g.eos_token_ids = c.get_int_list("eos_token_id");
  if (c.has("bos_token_id")) g.bos_token_id = c.get_int("bos_token_id");
  if (c.has("temperature")) g.temperature = c.get_float("temperature");
  if (c.has("top_p")) g.top_p = c.get_float("top_p");
  if (c.has("top_k")) g.top_k = c.get_int("top_k");
  return g;
}

}  // namespace loom::io
