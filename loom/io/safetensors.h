// safetensors: read (mmap, zero-copy views, every dtype of the format, sharded folders) and write.
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
// [begin, end]}, "__metadata__": {str: str}}, then the data section. Offsets are relative to the
// data section. Every malformation is an IoError naming the file (and tensor where there is one).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/array.h"

namespace loom::io {

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::f32;
  Shape shape;
  size_t begin = 0;  // byte offsets within the data section
  size_t end = 0;
};

// One mmap'd .safetensors file, fully validated on open: header length within the file, header is
// a JSON object, known dtypes, offsets inside the data section, non-overlapping, byte size equal to
// shape x dtype size, no duplicate names.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensors in file order (by data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  // A CPU array viewing the mapped bytes (no copy); the file stays mapped while any view lives.
  // The mapping is read-only (PROT_READ): never write through the view. Data may be unaligned.
  // Throws IoError naming the tensor and file when absent.
  Array load(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::shared_ptr<void> mapping_;  // munmap on release
  const uint8_t* data_ = nullptr;  // start of the data section
  size_t file_size_ = 0;
};

// All weights of a model folder: `model.safetensors.index.json` when present (its weight_map), else
// every `model*.safetensors` file in the folder (never `consolidated.safetensors`). A tensor name that
// appears in two files is an error naming both.
class WeightStore {
 public:
  static WeightStore open_folder(const std::string& dir);
  // A store over explicit files (tests, adapters).
  static WeightStore open_files(const std::vector<std::string>& files);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  Array load(const std::string& name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // name -> index in files_
};

// Writes tensors (any device, any strides: copied contiguous) in the given order, with optional
// string metadata. Writes to `path + ".tmp"` and renames, so a failure never leaves a partial file.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Array>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// safetensors dtype strings ("F32", "BF16", "F8_E4M3", ...) <-> Dtype.
Dtype dtype_from_safetensors(const std::string& s);  // throws IoError for unknown strings
std::string dtype_to_safetensors(Dtype dt);

}  // namespace loom::io
