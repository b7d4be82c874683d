// safetensors reader and writer. The reader maps the whole file read-only (POSIX mmap) and hands out
// Arrays that view the mapped bytes; each view's Buffer holds the mapping, so the file stays mapped
// until the last view and the SafetensorsFile are gone. The header is validated completely on open
// (the checks of the reference implementation plus duplicate-name detection, which nlohmann::json
// alone would hide by keeping the last duplicate), so a later load() cannot read outside the file.
#include "loom/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/core/device.h"
#include "loom/ops/ops.h"

namespace loom::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kWhere = "safetensors";

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw IoError(format_error(kWhere, path + ": " + what));
}

[[noreturn]] void fail_tensor(const std::string& path, const std::string& tensor, const std::string& what) {
  fail(path, "tensor '" + tensor + "': " + what);
}

// The JSON type of a value, for "expected X, got Y" messages.
std::string json_kind(const json& v) {
  if (v.is_number_integer()) return "integer " + v.dump();
  if (v.is_number_float()) return "number " + v.dump();
  return std::string(v.type_name()) + " " + v.dump();
}

// Reads a non-negative integer that fits int64 (shape dims, offsets); nullopt otherwise.
std::optional<int64_t> as_index(const json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    auto i = v.get<int64_t>();
    if (i < 0) return std::nullopt;
    return i;
  }
  return std::nullopt;
}

// Parses the header, reporting the first key that repeats inside any object (nlohmann keeps the
// last value of a duplicate key silently, which would let two tensors share one name).
json parse_header(const std::string& path, std::string_view text) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  size_t duplicate_depth = 0;
  auto cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
          duplicate_depth = open_objects.size();
        }
        break;
      default: break;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid header JSON: ") + e.what());
  }
  if (!duplicate.empty()) {
    if (duplicate_depth == 1) fail(path, "duplicate tensor name '" + duplicate + "' in the header");
    fail(path, "duplicate key '" + duplicate + "' inside a header entry");
  }
  if (!header.is_object()) fail(path, "header is not a JSON object (got " + std::string(header.type_name()) + ")");
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& m) {
  if (!m.is_object()) fail(path, "__metadata__ must be an object of string to string, got " + json_kind(m));
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string())
      fail(path, "__metadata__ must map strings to strings, but '" + k + "' is " + json_kind(v));
    out[k] = v.get<std::string>();
  }
  return out;
}

// Validates one header entry against the data section size.
TensorInfo parse_entry(const std::string& path, const std::string& name, const json& e, size_t data_size) {
  if (!e.is_object()) fail_tensor(path, name, "entry must be an object, got " + json_kind(e));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) fail_tensor(path, name, std::string("missing '") + key + "'");
  const json& dt = e["dtype"];
  if (!dt.is_string()) fail_tensor(path, name, "'dtype' must be a string, got " + json_kind(dt));
  TensorInfo t;
  t.name = name;
  try {
    t.dtype = dtype_from_safetensors(dt.get<std::string>());
  } catch (const IoError&) {
    fail_tensor(path, name, "unknown dtype '" + dt.get<std::string>() +
                                "' (expected BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, "
                                "F8_E4M3 or F8_E5M2)");
  }
  const json& sh = e["shape"];
  if (!sh.is_array()) fail_tensor(path, name, "'shape' must be an array of integers, got " + json_kind(sh));
  size_t count = 1;
  bool overflow = false;
  for (const auto& d : sh) {
    auto v = as_index(d);
    if (!v) fail_tensor(path, name, "'shape' entries must be non-negative integers, got " + json_kind(d));
    t.shape.push_back(*v);
    overflow |= __builtin_mul_overflow(count, static_cast<size_t>(*v), &count);
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    fail_tensor(path, name, "'data_offsets' must be an array [begin, end], got " + json_kind(off));
  auto b = as_index(off[0]), en = as_index(off[1]);
  if (!b || !en) fail_tensor(path, name, "'data_offsets' must be non-negative integers, got " + off.dump());
  t.begin = static_cast<size_t>(*b);
  t.end = static_cast<size_t>(*en);
  if (t.begin > t.end)
    fail_tensor(path, name, "data_offsets begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));
  if (t.end > data_size)
    fail_tensor(path, name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                "] out of range: the data section has " + std::to_string(data_size) + " bytes");
  size_t bytes = 0;
  overflow |= __builtin_mul_overflow(count, size_of(t.dtype), &bytes);
  if (overflow || bytes != t.end - t.begin)
    fail_tensor(path, name, "shape " + shape_str(t.shape) + " of " + dt.get<std::string>() + " needs " +
                                (overflow ? std::string("more than 2^64") : std::to_string(bytes)) +
                                " bytes but data_offsets span " + std::to_string(t.end - t.begin));
  return t;
}

// Rejects tensors whose byte ranges intersect (empty tensors occupy nothing).
void check_overlaps(const std::string& path, const std::vector<TensorInfo>& sorted) {
  const TensorInfo* prev = nullptr;
  for (const auto& t : sorted) {
    if (t.begin == t.end) continue;
    if (prev && t.begin < prev->end)
      fail(path, "tensors '" + prev->name + "' [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) +
                     ") and '" + t.name + "' [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     ") overlap");
    if (!prev || t.end > prev->end) prev = &t;
  }
}

// Maps a whole file read-only; the returned handle unmaps on release.
std::shared_ptr<void> map_file(const std::string& path, size_t& size_out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  size_out = size;
  if (size < 8) {
    ::close(fd);
    fail(path, "truncated: the file has " + std::to_string(size) + " bytes, fewer than the 8-byte header length");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (p == MAP_FAILED) fail(path, std::string("mmap failed: ") + std::strerror(err));
  return std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
}

}  // namespace

Dtype dtype_from_safetensors(const std::string& s) {
  static const std::map<std::string, Dtype> table = {
      {"BOOL", Dtype::bool_}, {"U8", Dtype::u8},           {"I8", Dtype::i8},          {"I16", Dtype::i16},
      {"U16", Dtype::u16},    {"F16", Dtype::f16},         {"BF16", Dtype::bf16},      {"I32", Dtype::i32},
      {"U32", Dtype::u32},    {"F32", Dtype::f32},         {"F64", Dtype::f64},        {"I64", Dtype::i64},
      {"U64", Dtype::u64},    {"F8_E4M3", Dtype::f8_e4m3}, {"F8_E5M2", Dtype::f8_e5m2}};
  auto it = table.find(s);
  if (it == table.end()) throw IoError(format_error(kWhere, "unknown dtype '" + s + "'"));
  return it->second;
}

std::string dtype_to_safetensors(Dtype dt) {
  switch (dt) {
    case Dtype::bool_: return "BOOL";
    case Dtype::u8: return "U8";
    case Dtype::i8: return "I8";
    case Dtype::i16: return "I16";
    case Dtype::u16: return "U16";
    case Dtype::i32: return "I32";
    case Dtype::u32: return "U32";
    case Dtype::i64: return "I64";
    case Dtype::u64: return "U64";
    case Dtype::f16: return "F16";
    case Dtype::bf16: return "BF16";
    case Dtype::f32: return "F32";
    case Dtype::f64: return "F64";
    case Dtype::f8_e4m3: return "F8_E4M3";
    case Dtype::f8_e5m2: return "F8_E5M2";
  }
  throw IoError(format_error(kWhere, "dtype has no safetensors name"));
}

// ---- SafetensorsFile ----

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->mapping_ = map_file(path, f->file_size_);
  const auto* bytes = static_cast<const uint8_t*>(f->mapping_.get());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian u64
  if (n > f->file_size_ - 8)
    fail(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                   std::to_string(f->file_size_) + " bytes)");
  json header = parse_header(path, std::string_view(reinterpret_cast<const char*>(bytes + 8), n));
  f->data_ = bytes + 8 + n;
  size_t data_size = f->file_size_ - 8 - n;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      f->metadata_ = parse_metadata(path, entry);
      continue;
    }
    f->tensors_.push_back(parse_entry(path, name, entry, data_size));
  }
  std::sort(f->tensors_.begin(), f->tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  check_overlaps(path, f->tensors_);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Array SafetensorsFile::load(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail_tensor(path_, name, "not in this file");
  // The mapping is read-only: the view's bytes must not be written (ops allocate new outputs).
  auto* ptr = const_cast<uint8_t*>(data_ + t->begin);
  auto buf = allocator::wrap(ptr, t->end - t->begin, Device::cpu(), mapping_);
  return Array(std::move(buf), t->shape, contiguous_strides(t->shape), 0, t->dtype);
}

// ---- WeightStore ----

namespace {

// Reads the weight_map of an index file: the sorted list of distinct shard paths, and name -> shard.
std::vector<std::string> index_shards(const fs::path& index_path, std::map<std::string, std::string>& name_to_file) {
  const std::string ip = index_path.string();
  json idx;
  try {
    idx = json::parse(read_file(ip));
  } catch (const json::exception& e) {
    fail(ip, std::string("invalid JSON: ") + e.what());
  }
  if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
    fail(ip, "expected an object with a 'weight_map' object of tensor name -> file");
  std::set<std::string> shards;
  for (const auto& [name, file] : idx["weight_map"].items()) {
    if (!file.is_string()) fail(ip, "weight_map['" + name + "'] must be a file name, got " + json_kind(file));
    name_to_file[name] = file.get<std::string>();
    shards.insert(file.get<std::string>());
  }
  if (shards.empty()) fail(ip, "weight_map is empty");
  std::vector<std::string> out;
  for (const auto& s : shards) {
    fs::path p = index_path.parent_path() / s;
    if (!fs::is_regular_file(p)) fail(ip, "lists shard '" + s + "', which is missing (" + p.string() + ")");
    out.push_back(p.string());
  }
  return out;
}

}  // namespace

WeightStore WeightStore::open_folder(const std::string& dir) {
  fs::path d(dir);
  std::error_code ec;
  if (!fs::is_directory(d, ec)) throw IoError(format_error(kWhere, "'" + dir + "' is not a directory"));
  fs::path index = d / "model.safetensors.index.json";
  if (fs::is_regular_file(index, ec)) {
    std::map<std::string, std::string> name_to_file;
    WeightStore ws = open_files(index_shards(index, name_to_file));
    // Every name the index lists must be in the shard it names.
    for (const auto& [name, file] : name_to_file) {
      auto it = ws.where_.find(name);
      std::string expect = (d / file).string();
      if (it == ws.where_.end() || ws.files_[it->second]->path() != expect)
        fail(index.string(), "maps tensor '" + name + "' to '" + file + "', which does not contain it");
    }
    return ws;
  }
  std::vector<std::string> files;
  bool has_consolidated = false;
  for (const auto& entry : fs::directory_iterator(d, ec)) {
    std::string fname = entry.path().filename().string();
    if (fname == "consolidated.safetensors") has_consolidated = true;
    if (starts_with(fname, "model") && ends_with(fname, ".safetensors") && entry.is_regular_file())
      files.push_back(entry.path().string());
  }
  if (ec) throw IoError(format_error(kWhere, "cannot list '" + dir + "': " + ec.message()));
  if (files.empty())
    throw IoError(format_error(
        kWhere, "no weights in '" + dir + "': looked for model.safetensors.index.json and model*.safetensors" +
                    (has_consolidated ? " (consolidated.safetensors is present but never read)" : "")));
  std::sort(files.begin(), files.end());
  return open_files(files);
}

WeightStore WeightStore::open_files(const std::vector<std::string>& files) {
  WeightStore ws;
  for (const auto& path : files) {
    auto f = SafetensorsFile::open(path);
    size_t idx = ws.files_.size();
    for (const auto& t : f->tensors()) {
      auto [it, inserted] = ws.where_.emplace(t.name, idx);
      if (!inserted)
        throw IoError(format_error(kWhere, "tensor '" + t.name + "' appears in both " +
                                               ws.files_[it->second]->path() + " and " + path));
    }
    ws.files_.push_back(std::move(f));
  }
  return ws;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, idx] : where_) out.push_back(name);
  return out;
}

const std::string& WeightStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::vector<std::string> paths;
    for (const auto& f : files_) paths.push_back(f->path());
    throw IoError(format_error(kWhere, "no tensor '" + name + "' in " +
                                           (paths.empty() ? std::string("an empty weight store") : join(paths, ", "))));
  }
  return files_[it->second]->path();
}

const TensorInfo& WeightStore::info(const std::string& name) const {
  file_of(name);  // throws the naming error when absent
  return *files_[where_.at(name)]->find(name);
}

Array WeightStore::load(const std::string& name) const {
  file_of(name);
  return files_[where_.at(name)]->load(name);
}

// ---- writer ----

namespace {

// Closes a FILE* and removes the temporary file unless committed.
struct TmpFile {
  std::string path;
  FILE* f = nullptr;
  bool committed = false;
  ~TmpFile() {
    if (f) std::fclose(f);
    if (!committed) std::remove(path.c_str());
  }
  void write(const void* p, size_t n, const std::string& final_path) {
    if (n && std::fwrite(p, 1, n, f) != n)
      fail(final_path, std::string("write failed: ") + std::strerror(errno));
  }
};

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Array>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Header: __metadata__ first, then tensors in the given order with consecutive offsets.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::vector<Array> host;
  host.reserve(tensors.size());
  std::set<std::string> seen;
  size_t offset = 0;
  for (const auto& [name, a] : tensors) {
    if (name == "__metadata__") fail(path, "'__metadata__' cannot be a tensor name");
    if (!seen.insert(name).second) fail_tensor(path, name, "duplicate tensor name");
    if (!a.valid()) fail_tensor(path, name, "array is empty (no buffer)");
    Array c = contiguous(a);
    if (!c.device().is_cpu()) c = to_device(c, Device::cpu());
    host.push_back(c);
    nlohmann::ordered_json e;
    e["dtype"] = dtype_to_safetensors(c.dtype());
    e["shape"] = c.shape();
    e["data_offsets"] = {offset, offset + c.nbytes()};
    offset += c.nbytes();
    header[name] = std::move(e);
  }
  for (const auto& a : tensors)
    if (!a.second.device().is_cpu()) synchronize(a.second.device());
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // as the reference writer: data starts 8-aligned

  TmpFile tmp{path + ".tmp"};
  tmp.f = std::fopen(tmp.path.c_str(), "wb");
  if (!tmp.f) fail(path, "cannot create '" + tmp.path + "': " + std::strerror(errno));
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  tmp.write(len, 8, path);
  tmp.write(text.data(), text.size(), path);
  for (const auto& a : host) tmp.write(a.raw_data(), a.nbytes(), path);
  int rc = std::fclose(tmp.f);
  tmp.f = nullptr;
  if (rc != 0) fail(path, std::string("write failed: ") + std::strerror(errno));
  if (std::rename(tmp.path.c_str(), path.c_str()) != 0)
    fail(path, "cannot rename '" + tmp.path + "' into place: " + std::strerror(errno));
  tmp.committed = true;
}

}  // namespace loom::io
