// NumPy .npy reader and writer (format spec: numpy/lib/format.py). A file is the magic "\x93NUMPY",
// a version (1.0: u16 header length; 2.0/3.0: u32), an ASCII Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and a newline so the
// data starts 64-byte aligned, then the raw little-endian data.
#include "loom/io/npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/core/device.h"
#include "loom/ops/ops.h"

namespace loom::io {

namespace {

constexpr const char* kWhere = "npy";

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw IoError(format_error(kWhere, path + ": " + what));
}

// numpy's descr for a dtype ('|' for single bytes, where byte order does not apply).
std::optional<std::string> descr_of(Dtype dt) {
  switch (dt) {
    case Dtype::bool_: return "|b1";
    case Dtype::u8: return "|u1";
    case Dtype::i8: return "|i1";
    case Dtype::i16: return "<i2";
    case Dtype::u16: return "<u2";
    case Dtype::i32: return "<i4";
    case Dtype::u32: return "<u4";
    case Dtype::i64: return "<i8";
    case Dtype::u64: return "<u8";
    case Dtype::f16: return "<f2";
    case Dtype::f32: return "<f4";
    case Dtype::f64: return "<f8";
    default: return std::nullopt;
  }
}

std::optional<Dtype> dtype_of_descr(std::string d) {
  if (d.size() >= 2 && (d[0] == '<' || d[0] == '|' || d[0] == '=')) d = d.substr(1);
  else return std::nullopt;  // '>' (big-endian) and anything odd
  static const std::pair<const char*, Dtype> table[] = {
      {"b1", Dtype::bool_}, {"u1", Dtype::u8},  {"i1", Dtype::i8},  {"i2", Dtype::i16},
      {"u2", Dtype::u16},   {"i4", Dtype::i32}, {"u4", Dtype::u32}, {"i8", Dtype::i64},
      {"u8", Dtype::u64},   {"f2", Dtype::f16}, {"f4", Dtype::f32}, {"f8", Dtype::f64}};
  for (const auto& [s, dt] : table)
    if (d == s) return dt;
  return std::nullopt;
}

// The text after `'key':` in the header dict, with leading spaces skipped.
std::string_view value_after(const std::string& path, std::string_view header, std::string_view key) {
  std::string quoted = "'" + std::string(key) + "'";
  size_t k = header.find(quoted);
  if (k == std::string_view::npos) fail(path, "header has no '" + std::string(key) + "' entry");
  size_t colon = header.find(':', k + quoted.size());
  if (colon == std::string_view::npos) fail(path, "malformed header near '" + std::string(key) + "'");
  size_t v = header.find_first_not_of(' ', colon + 1);
  if (v == std::string_view::npos) fail(path, "malformed header near '" + std::string(key) + "'");
  return header.substr(v);
}

Shape parse_shape(const std::string& path, std::string_view v) {
  if (v.empty() || v[0] != '(') fail(path, "shape must be a tuple");
  size_t close = v.find(')');
  if (close == std::string_view::npos) fail(path, "unterminated shape tuple");
  Shape shape;
  std::string_view body = v.substr(1, close - 1);
  size_t i = 0;
  while (i < body.size()) {
    while (i < body.size() && (body[i] == ' ' || body[i] == ',')) ++i;
    if (i >= body.size()) break;
    int64_t d = 0;
    size_t start = i;
    while (i < body.size() && body[i] >= '0' && body[i] <= '9') {
      if (d > (INT64_MAX - 9) / 10) fail(path, "shape dimension too large");
      d = d * 10 + (body[i] - '0');
      ++i;
    }
    if (i == start) fail(path, "bad shape tuple '(" + std::string(body) + ")'");
    shape.push_back(d);
  }
  return shape;
}

}  // namespace

void save_npy(const std::string& path, const Array& a_in) {
  if (!a_in.valid()) fail(path, "cannot save an empty array handle");
  Array a = a_in;
  if (a.dtype() == Dtype::bf16) a = astype(a, Dtype::f32);  // numpy has no bfloat16
  auto descr = descr_of(a.dtype());
  if (!descr) fail(path, "dtype " + std::string(name(a.dtype())) + " cannot be written as .npy");
  a = contiguous(a);
  if (!a.device().is_cpu()) a = to_device(a, Device::cpu());
  synchronize(a_in.device());

  std::string shape = "(";
  for (size_t i = 0; i < a.shape().size(); ++i) shape += std::to_string(a.shape()[i]) + ", ";
  if (a.shape().size() > 1) shape.resize(shape.size() - 2);
  else if (a.shape().size() == 1) shape.pop_back();  // "(3,)"
  shape += ")";
  std::string header = "{'descr': '" + *descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Total of magic(6) + version(2) + length(2) + header + '\n' is a multiple of 64, as numpy writes.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) fail(path, "header too long for format 1.0");

  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, std::string("cannot create: ") + std::strerror(errno));
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  uint8_t len[2] = {static_cast<uint8_t>(header.size() & 0xff), static_cast<uint8_t>(header.size() >> 8)};
  bool ok = std::fwrite(magic, 1, 8, f) == 8 && std::fwrite(len, 1, 2, f) == 2 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (a.nbytes() == 0 || std::fwrite(a.raw_data(), 1, a.nbytes(), f) == a.nbytes());
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    fail(path, std::string("write failed: ") + std::strerror(err));
  }
}

Array load_npy(const std::string& path) {
  std::string bytes = read_file(path);  // throws IoError naming the path
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail(path, "not a .npy file (bad magic)");
  int major = static_cast<uint8_t>(bytes[6]);
  size_t hlen = 0, hstart = 0;
  auto u8 = [&](size_t i) { return static_cast<size_t>(static_cast<uint8_t>(bytes[i])); };
  if (major == 1) {
    hlen = u8(8) | (u8(9) << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(path, "truncated header");
    hlen = u8(8) | (u8(9) << 8) | (u8(10) << 16) | (u8(11) << 24);
    hstart = 12;
  } else {
    fail(path, "unsupported .npy version " + std::to_string(major));
  }
  if (hstart + hlen > bytes.size()) fail(path, "header runs past the end of the file");
  std::string_view header(bytes.data() + hstart, hlen);

  std::string_view dv = value_after(path, header, "descr");
  if (dv.empty() || dv[0] != '\'') fail(path, "descr must be a string");
  std::string descr(dv.substr(1, dv.find('\'', 1) - 1));
  auto dt = dtype_of_descr(descr);
  if (!dt) fail(path, "unsupported dtype '" + descr + "' (little-endian bool/int/uint/float only)");
  bool fortran = value_after(path, header, "fortran_order").substr(0, 4) == "True";
  Shape shape = parse_shape(path, value_after(path, header, "shape"));

  Array out = Array::empty(fortran ? Shape(shape.rbegin(), shape.rend()) : shape, *dt, Device::cpu());
  size_t data_start = hstart + hlen;
  if (bytes.size() - data_start < out.nbytes())
    fail(path, "truncated data: expected " + std::to_string(out.nbytes()) + " bytes, found " +
                   std::to_string(bytes.size() - data_start));
  if (out.nbytes()) std::memcpy(out.raw_data(), bytes.data() + data_start, out.nbytes());
  // Fortran order is the C-order array of the reversed shape, transposed.
  if (fortran && shape.size() > 1) out = contiguous(transpose(out));
  return out;
}

}  // namespace loom::io
