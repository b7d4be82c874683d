#include "loom/models/hf_quant.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/core/array.h"

namespace loom::models {

namespace {

using FileOf = std::function<std::string(const std::string&)>;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out;
}

// Errors name the tensor and its file.
struct Ctx {
  std::string method;
  const WeightMap& w;
  const FileOf& file_of;

  std::string where(const std::string& key) const { return "'" + key + "' (" + file_of(key) + ")"; }
  IoError bad(const std::string& key, const std::string& why) const {
    return IoError(format_error("load", method + " checkpoint: tensor " + where(key) + " " + why));
  }
  const Array& need(const std::string& key, const std::string& for_key) const {
    auto it = w.find(key);
    if (it == w.end())
      throw IoError(format_error("load", method + " checkpoint: missing '" + key + "' needed by " + where(for_key)));
    return it->second;
  }
  const Array* find(const std::string& key) const {
    auto it = w.find(key);
    return it == w.end() ? nullptr : &it->second;
  }
};

// The raw 32-bit words of an int32/uint32 tensor in logical order (int32 storage reinterpreted, never converted).
std::vector<uint32_t> words(const Ctx& c, const std::string& key, const Array& a) {
  if (a.dtype() != Dtype::i32 && a.dtype() != Dtype::u32)
    throw c.bad(key, "must be int32 (packed codes), got " + std::string(name(a.dtype())));
  return Array(a.buffer(), a.shape(), a.strides(), a.offset(), Dtype::u32).to_vector<uint32_t>();
}

// The raw bytes of a 1-byte tensor (uint8, int8, float8) in logical order.
std::vector<uint8_t> bytes(const Array& a) {
  return Array(a.buffer(), a.shape(), a.strides(), a.offset(), Dtype::u8).to_vector<uint8_t>();
}

std::vector<float> floats(const Ctx& c, const std::string& key, const Array& a) {
  if (a.dtype() != Dtype::f32 && a.dtype() != Dtype::f16 && a.dtype() != Dtype::bf16)
    throw c.bad(key, "must be float32, float16 or bfloat16, got " + std::string(name(a.dtype())));
  return a.to_float_vector();
}

// float8_e4m3fn -> float: loom's E4M3 codec, except that 0x7F/0xFF are NaN here (torch's e4m3fn), not 480.
float fp8_value(uint8_t v) {
  if ((v & 0x7F) == 0x7F) return std::numeric_limits<float>::quiet_NaN();
  return quant_codec::e4m3_to_float(v);
}

void expect_shape(const Ctx& c, const std::string& key, const Array& a, const Shape& want, const std::string& why) {
  if (a.shape() != want)
    throw c.bad(key, "has shape " + shape_str(a.shape()) + ", expected " + shape_str(want) + " " + why);
}

// The largest MLX affine group size dividing `group` (0 when none does).
int mlx_group(int64_t group) {
  for (int g : {128, 64, 32})
    if (group % g == 0) return g;
  return 0;
}

// An integer-quantized matrix decoded from any of the formats: w[o, i] = (q[o, i] - zero[o, k]) * scale[o, k]
// with k = g_idx[i] (or i / group when g_idx is empty).
struct IntMatrix {
  int64_t out = 0, in = 0;
  int bits = 4;
  int64_t group = 0, groups = 0;   // inputs per group (contiguous layout), number of groups
  std::vector<uint8_t> q;          // [out, in] unsigned codes
  std::vector<float> scale, zero;  // [out, groups]
  std::vector<int32_t> g_idx;      // [in] or empty
};

// Reads the optional act-order map `kg` (int32 [in], each entry a group index) into m.g_idx and names
// it among the sources; an entry outside [0, groups) is an error naming the key and the position.
void read_g_idx(const Ctx& c, const std::string& kg, const std::string& why, IntMatrix& m,
                std::vector<std::string>& sources) {
  const Array* gi = c.find(kg);
  if (!gi) return;
  expect_shape(c, kg, *gi, {m.in}, why);
  std::vector<uint32_t> g = words(c, kg, *gi);
  m.g_idx.assign(g.begin(), g.end());
  for (int64_t i = 0; i < m.in; ++i)
    if (m.g_idx[i] < 0 || m.g_idx[i] >= m.groups)
      throw c.bad(kg, "entry " + std::to_string(i) + " = " + std::to_string(m.g_idx[i]) + " is outside [0, " +
                          std::to_string(m.groups) + ")");
  sources.push_back(kg);
}

struct Emitter {
  WeightMap& w;
  Dtype dequant_dtype;
  HfQuantSummary& summary;

  // Replaces the source tensors of `prefix` by `<prefix>.weight` (+ `.scales`, `.biases` when kept quantized).
  void emit(const std::string& prefix, IntMatrix& m, const std::vector<std::string>& sources) {
    for (const auto& k : sources) w.erase(k);
    bool contiguous = m.in % m.group == 0;
    if (contiguous && !m.g_idx.empty())
      for (int64_t i = 0; i < m.in && contiguous; ++i) contiguous = m.g_idx[i] == i / m.group;
    int t = contiguous ? mlx_group(m.group) : 0;
    if (t == 0) {  // dequantize: activation order, or a group no MLX group size divides
      std::vector<float> v(static_cast<size_t>(m.out * m.in));
      for (int64_t o = 0; o < m.out; ++o)
        for (int64_t i = 0; i < m.in; ++i) {
          int64_t k = m.g_idx.empty() ? i / m.group : m.g_idx[i];
          size_t s = static_cast<size_t>(o * m.groups + k);
          v[o * m.in + i] = (static_cast<float>(m.q[o * m.in + i]) - m.zero[s]) * m.scale[s];
        }
      w[prefix + ".weight"] = Array::from(v, {m.out, m.in}, Dtype::f32).astype(dequant_dtype);
      ++summary.dequantized;
      return;
    }
    int64_t per_row = m.in * m.bits / 32, ng = m.in / t;
    std::vector<uint32_t> packed(static_cast<size_t>(m.out * per_row), 0);
    for (int64_t o = 0; o < m.out; ++o)
      for (int64_t i = 0; i < m.in; ++i) {
        int64_t bit = i * m.bits;  // bits 2/4/8: a code never straddles two words
        packed[o * per_row + bit / 32] |= static_cast<uint32_t>(m.q[o * m.in + i]) << (bit % 32);
      }
    // bias = -zero * scale, exact in f32 for f16/bf16 scales and zeros below 2^9.
    std::vector<float> sc(static_cast<size_t>(m.out * ng)), bi(sc.size());
    for (int64_t o = 0; o < m.out; ++o)
      for (int64_t j = 0; j < ng; ++j) {
        size_t s = static_cast<size_t>(o * m.groups + (j * t) / m.group);
        sc[o * ng + j] = m.scale[s];
        bi[o * ng + j] = -m.zero[s] * m.scale[s];
      }
    w[prefix + ".weight"] = Array::from(packed, {m.out, per_row}, Dtype::u32);
    w[prefix + ".scales"] = Array::from(sc, {m.out, ng}, Dtype::f32);
    w[prefix + ".biases"] = Array::from(bi, {m.out, ng}, Dtype::f32);
    summary.layers[prefix] = QuantSpec{QuantMode::affine, m.bits, t};
    ++summary.repacked;
  }
};

int64_t config_group(const io::Config& qc, const char* key, const char* legacy, int64_t fallback) {
  return qc.has(key) ? qc.get_int(key) : qc.get_int(legacy, fallback);
}

void check_bits(const std::string& method, int bits, const std::vector<int>& ok) {
  for (int b : ok)
    if (b == bits) return;
  std::string list;
  for (size_t i = 0; i < ok.size(); ++i) list += (i ? ", " : "") + std::to_string(ok[i]);
  throw NotSupportedError(format_error("load", method + " checkpoint with bits=" + std::to_string(bits) +
                                                   " is not supported (supported: " + list + ")"));
}

std::vector<std::string> keys_ending(const WeightMap& w, const std::string& suffix) {
  std::vector<std::string> out;
  for (const auto& [k, v] : w)
    if (ends_with(k, suffix)) out.push_back(k.substr(0, k.size() - suffix.size()));
  return out;
}

// AutoAWQ GEMM: qweight int32 [in, out/8] holds out-columns 8c..8c+7 of input row i in word c, output 8c+j at
// nibble kAwqNibble[j] (AutoAWQ packs with order_map [0, 2, 4, 6, 1, 3, 5, 7]: nibble n holds column
// order_map[n]; this is its inverse); qzeros int32 [in/g, out/8] packed the same way, zeros stored as is;
// scales [in/g, out]; w = (q - z) * s.
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

void convert_awq(const io::Config& qc, const Ctx& c, Emitter& e) {
  int bits = static_cast<int>(qc.has("bits") ? qc.get_int("bits") : qc.get_int("w_bit", 4));
  check_bits("awq", bits, {4});
  std::string version = qc.get_string("version", "gemm");
  std::transform(version.begin(), version.end(), version.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (version != "gemm")
    throw NotSupportedError(
        format_error("load", "awq checkpoint with version '" + version + "' is not supported (supported: gemm)"));
  int64_t group = config_group(qc, "group_size", "q_group_size", 128);
  for (const std::string& p : keys_ending(c.w, ".qweight")) {
    std::string kw = p + ".qweight", ks = p + ".scales", kz = p + ".qzeros";
    const Array& qw = c.w.at(kw);
    if (qw.ndim() != 2) throw c.bad(kw, "must be 2-d [in, out/8], got " + shape_str(qw.shape()));
    const Array& sc = c.need(ks, kw);
    const Array& qz = c.need(kz, kw);
    IntMatrix m;
    m.bits = 4;
    m.in = qw.shape(0);
    m.out = qw.shape(1) * 8;
    m.group = group <= 0 ? m.in : group;
    if (m.in % m.group != 0)
      throw c.bad(
          kw, "has " + std::to_string(m.in) + " input rows, not a multiple of group_size " + std::to_string(m.group));
    m.groups = m.in / m.group;
    expect_shape(c, ks, sc, {m.groups, m.out}, "(in/group_size, out) for qweight " + shape_str(qw.shape()));
    expect_shape(c, kz, qz, {m.groups, m.out / 8}, "(in/group_size, out/8) for qweight " + shape_str(qw.shape()));
    std::vector<uint32_t> wq = words(c, kw, qw), zq = words(c, kz, qz);
    std::vector<float> s = floats(c, ks, sc);
    m.q.resize(static_cast<size_t>(m.out * m.in));
    for (int64_t i = 0; i < m.in; ++i)
      for (int64_t o = 0; o < m.out; ++o)
        m.q[o * m.in + i] = (wq[i * (m.out / 8) + o / 8] >> (4 * kAwqNibble[o % 8])) & 0xF;
    m.scale.resize(static_cast<size_t>(m.out * m.groups));
    m.zero.resize(m.scale.size());
    for (int64_t k = 0; k < m.groups; ++k)
      for (int64_t o = 0; o < m.out; ++o) {
        m.scale[o * m.groups + k] = s[k * m.out + o];
        m.zero[o * m.groups + k] = static_cast<float>((zq[k * (m.out / 8) + o / 8] >> (4 * kAwqNibble[o % 8])) & 0xF);
      }
    e.emit(p, m, {kw, ks, kz});
  }
}

// GPTQ (AutoGPTQ / optimum / GPTQModel): qweight int32 [in*bits/32, out], word r of column o holds inputs
// r*(32/bits) + j at bits j*bits (LSB first); qzeros int32 [groups, out*bits/32] packed the same way along
// out; scales [groups, out]; g_idx int32 [in] maps each input to its group (i / group_size unless
// desc_act). checkpoint_format "gptq" (v1) stores zero - 1, "gptq_v2" stores the zero. w = (q - z) * s[g].
void convert_gptq(const io::Config& qc, const Ctx& c, Emitter& e) {
  int bits = static_cast<int>(qc.get_int("bits", 4));
  check_bits("gptq", bits, {2, 4, 8});
  std::string fmt = qc.get_string("checkpoint_format", "gptq");
  if (fmt != "gptq" && fmt != "gptq_v2")
    throw NotSupportedError(
        format_error("load", "gptq checkpoint_format '" + fmt + "' is not supported (supported: gptq, gptq_v2)"));
  float zero_offset = fmt == "gptq" ? 1.0f : 0.0f;
  int64_t group = qc.get_int("group_size", 128);
  const int pf = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  for (const std::string& p : keys_ending(c.w, ".qweight")) {
    std::string kw = p + ".qweight", ks = p + ".scales", kz = p + ".qzeros", kg = p + ".g_idx";
    const Array& qw = c.w.at(kw);
    if (qw.ndim() != 2) throw c.bad(kw, "must be 2-d [in*bits/32, out], got " + shape_str(qw.shape()));
    const Array& sc = c.need(ks, kw);
    const Array& qz = c.need(kz, kw);
    IntMatrix m;
    m.bits = bits;
    m.in = qw.shape(0) * pf;
    m.out = qw.shape(1);
    m.group = group <= 0 ? m.in : group;
    m.groups = (m.in + m.group - 1) / m.group;
    if (m.out % pf != 0)
      throw c.bad(kw, "has " + std::to_string(m.out) + " outputs, not a multiple of " + std::to_string(pf));
    expect_shape(c, ks, sc, {m.groups, m.out}, "(ceil(in/group_size), out) for qweight " + shape_str(qw.shape()));
    expect_shape(c, kz, qz, {m.groups, m.out / pf},
                 "(ceil(in/group_size), out*bits/32) for qweight " + shape_str(qw.shape()));
    std::vector<uint32_t> wq = words(c, kw, qw), zq = words(c, kz, qz);
    std::vector<float> s = floats(c, ks, sc);
    std::vector<std::string> sources = {kw, ks, kz};
    read_g_idx(c, kg, "(in) for qweight " + shape_str(qw.shape()), m, sources);
    m.q.resize(static_cast<size_t>(m.out * m.in));
    for (int64_t i = 0; i < m.in; ++i)
      for (int64_t o = 0; o < m.out; ++o) m.q[o * m.in + i] = (wq[(i / pf) * m.out + o] >> (bits * (i % pf))) & mask;
    m.scale.resize(static_cast<size_t>(m.out * m.groups));
    m.zero.resize(m.scale.size());
    for (int64_t k = 0; k < m.groups; ++k)
      for (int64_t o = 0; o < m.out; ++o) {
        m.scale[o * m.groups + k] = s[k * m.out + o];
        m.zero[o * m.groups + k] =
            static_cast<float>((zq[k * (m.out / pf) + o / pf] >> (bits * (o % pf))) & mask) + zero_offset;
      }
    e.emit(p, m, sources);
  }
}

// A 2-d scale tensor [R, C] against a matrix [out, in]: per tensor (1 value), per channel [out, 1], per
// group [out, in/g] or per block [ceil(out/bh), ceil(in/bw)]. Returns the index map (o, i) -> scale index.
struct ScaleLayout {
  int64_t rows = 1, cols = 1, row_div = 1, col_div = 1;  // index = (o / row_div) * cols + i / col_div
  int64_t index(int64_t o, int64_t i) const { return (o / row_div) * cols + i / col_div; }
};

ScaleLayout scale_layout(const Ctx& c, const std::string& key, Shape scale_shape, int64_t out, int64_t in,
                         std::optional<std::pair<int64_t, int64_t>> block) {
  int64_t n = shape_size(scale_shape);
  ScaleLayout L;
  if (n == 1) {  // per tensor: [], [1] or [1, 1]
    L.row_div = out, L.col_div = in;
    return L;
  }
  if (scale_shape.size() == 1 && scale_shape[0] == out) scale_shape = {out, 1};
  if (scale_shape.size() != 2) throw c.bad(key, "has shape " + shape_str(scale_shape) + ", expected a 2-d scale");
  int64_t R = scale_shape[0], C = scale_shape[1];
  auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  if (block && R == cdiv(out, block->first) && C == cdiv(in, block->second)) {
    L.rows = R, L.cols = C, L.row_div = block->first, L.col_div = block->second;
    return L;
  }
  if (R == out && C >= 1 && in % C == 0) {
    L.rows = R, L.cols = C, L.row_div = 1, L.col_div = in / C;
    return L;
  }
  std::string blk =
      block ? " or blocks of [" + std::to_string(block->first) + ", " + std::to_string(block->second) + "]" : "";
  throw c.bad(key, "has shape " + shape_str(scale_shape) + ", which matches no per-tensor, per-channel, per-group" +
                       blk + " layout of a weight [" + std::to_string(out) + ", " + std::to_string(in) + "]");
}

// FP8 weight [..., out, in] times its scale (leading dims index the scale's leading dims), rounded once to `dt`.
Array dequant_fp8(const Ctx& c, const std::string& kw, const Array& w, const std::string& ks, const Array& sc,
                  std::optional<std::pair<int64_t, int64_t>> block, Dtype dt) {
  if (w.dtype() != Dtype::f8_e4m3) throw c.bad(kw, "must be float8_e4m3fn, got " + std::string(name(w.dtype())));
  if (w.ndim() < 2) throw c.bad(kw, "must be at least 2-d, got " + shape_str(w.shape()));
  int64_t out = w.shape(-2), in = w.shape(-1), batch = w.size() / (out * in);
  Shape lead(w.shape().begin(), w.shape().end() - 2), sshape = sc.shape();
  bool batched = batch > 1 && sshape.size() == w.shape().size() && Shape(sshape.begin(), sshape.end() - 2) == lead;
  if (batched) sshape = Shape(sshape.end() - 2, sshape.end());
  ScaleLayout L = scale_layout(c, ks, sshape, out, in, block);
  int64_t per = L.rows * L.cols;
  if (!batched && shape_size(sc.shape()) != per)
    throw c.bad(ks, "has shape " + shape_str(sc.shape()) + " for a weight " + shape_str(w.shape()));
  std::vector<float> s = floats(c, ks, sc);
  std::vector<uint8_t> q = bytes(w);
  std::vector<float> v(q.size());
  for (int64_t b = 0; b < batch; ++b) {
    const float* sb = s.data() + (batched ? b * per : 0);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        size_t at = static_cast<size_t>((b * out + o) * in + i);
        v[at] = fp8_value(q[at]) * sb[L.index(o, i)];  // one f32 product, then one rounding to dt
      }
  }
  return Array::from(v, w.shape(), Dtype::f32).astype(dt);
}

void erase_extras(WeightMap& w, const std::string& p, std::initializer_list<const char*> suffixes) {
  for (const char* s : suffixes) w.erase(p + s);
}

// DeepSeek-V3 / Qwen3-FP8 / Mistral FP8: `<p>.weight` float8_e4m3fn and `<p>.weight_scale_inv` (the
// dequantization multiplier despite its name), per tensor or per weight_block_size block.
void convert_fp8(const io::Config& qc, const Ctx& c, WeightMap& w, Dtype dt, HfQuantSummary& summary) {
  std::optional<std::pair<int64_t, int64_t>> block;
  if (qc.has("weight_block_size")) {
    auto b = qc.get_int_list("weight_block_size");
    if (b.size() != 2 || b[0] <= 0 || b[1] <= 0)
      throw ConfigError(format_error("config", "fp8 quantization_config weight_block_size must be [rows, cols]"));
    block = std::make_pair(b[0], b[1]);
  }
  std::string fmt = qc.get_string("fmt", "e4m3");
  if (fmt != "e4m3")
    throw NotSupportedError(
        format_error("load", "fp8 checkpoint with fmt '" + fmt + "' is not supported (supported: e4m3)"));
  std::set<std::string> done;
  for (const std::string& p : keys_ending(c.w, ".weight_scale_inv")) {
    std::string ks = p + ".weight_scale_inv", kw = p + ".weight";
    const Array& wt = c.need(kw, ks);
    w[kw] = dequant_fp8(c, kw, wt, ks, c.w.at(ks), block, dt);
    w.erase(ks);
    erase_extras(w, p, {".activation_scale", ".input_scale"});
    done.insert(kw);
    ++summary.dequantized;
  }
  for (const auto& [k, v] : w)
    if (v.dtype() == Dtype::f8_e4m3 && !done.count(k))
      throw IoError(format_error("load", "fp8 checkpoint: float8 tensor " + c.where(k) + " has no '" +
                                             (ends_with(k, ".weight") ? k.substr(0, k.size() - 7) : k) +
                                             ".weight_scale_inv'"));
}

// compressed-tensors (llm-compressor): per layer, from the tensors present:
//  - pack-quantized int: weight_packed int32 [out, in*bits/32], the signed codes q + 2^(bits-1) as a dense
//    LSB-first bit stream per row (compressed_tensors pack_to_int32; for bits 2/4/8 the legacy per-word packing
//    is the same); weight_shape [out, in]; weight_scale [out, in/g] (or [out, 1] / one value);
//    weight_zero_point (asymmetric only) packed the same way along out: [out*bits/32, groups]; weight_g_idx [in]
//    for activation ordering. w = (q - zp) * s.
//  - naive/int-quantized int8: weight int8 [out, in] + weight_scale (+ weight_zero_point int8).
//  - float-quantized FP8: weight float8_e4m3fn + weight_scale per tensor / channel / group / block.
void convert_compressed_tensors(const io::Config& qc, const Ctx& c, Emitter& e, Dtype dt, HfQuantSummary& summary) {
  static const std::vector<std::string> formats = {"pack-quantized", "naive-quantized", "int-quantized",
                                                   "float-quantized", "mixed-precision"};
  std::string fmt = qc.get_string("format", "pack-quantized");
  bool known = false;
  for (const auto& f : formats) known = known || f == fmt;
  if (!known)
    throw NotSupportedError(format_error(
        "load", "compressed-tensors format '" + fmt + "' is not supported (supported: " + join(formats) + ")"));
  if (qc.is_object("sparsity_config") && qc.sub("sparsity_config").get_string("format", "dense") != "dense")
    throw NotSupportedError(format_error("load", "compressed-tensors sparsity_config format '" +
                                                     qc.sub("sparsity_config").get_string("format") +
                                                     "' is not supported"));
  // Block structure of block-strategy scales (the first config group that names one).
  std::optional<std::pair<int64_t, int64_t>> block;
  if (qc.is_object("config_groups")) {
    io::Config groups = qc.sub("config_groups");
    for (const auto& g : groups.keys()) {
      if (!groups.is_object(g) || !groups.sub(g).is_object("weights")) continue;
      io::Config wcfg = groups.sub(g).sub("weights");
      if (wcfg.has("block_structure") && !block) {
        auto b = wcfg.get_int_list("block_structure");
        if (b.size() == 2 && b[0] > 0 && b[1] > 0) block = std::make_pair(b[0], b[1]);
      }
    }
  }
  WeightMap& w = e.w;
  for (const std::string& p : keys_ending(c.w, ".weight_packed")) {
    std::string kw = p + ".weight_packed", ks = p + ".weight_scale", kshape = p + ".weight_shape",
                kz = p + ".weight_zero_point", kg = p + ".weight_g_idx";
    const Array& pk = c.w.at(kw);
    const Array& sc = c.need(ks, kw);
    const Array& sh = c.need(kshape, kw);
    if (pk.ndim() != 2) throw c.bad(kw, "must be 2-d [out, in*bits/32], got " + shape_str(pk.shape()));
    std::vector<int64_t> shape = sh.to_vector<int64_t>();
    if (shape.size() != 2 || shape[0] != pk.shape(0) || shape[1] <= 0)
      throw c.bad(kshape, "must hold [out, in] with out = " + std::to_string(pk.shape(0)) + " (the rows of " +
                              c.where(kw) + ")");
    IntMatrix m;
    m.out = shape[0];
    m.in = shape[1];
    int64_t total_bits = pk.shape(1) * 32;
    if (total_bits % m.in != 0)
      throw c.bad(kw, "has " + std::to_string(pk.shape(1)) + " words per row, no whole bit width for " +
                          std::to_string(m.in) + " inputs");
    m.bits = static_cast<int>(total_bits / m.in);
    check_bits("compressed-tensors pack-quantized", m.bits, {2, 4, 8});
    Shape sshape = sc.shape();
    if (shape_size(sshape) == 1) {
      m.groups = 1;
    } else if (sshape.size() == 2 && sshape[0] == m.out && m.in % sshape[1] == 0) {
      m.groups = sshape[1];
    } else {
      throw c.bad(ks, "has shape " + shape_str(sshape) + ", expected [" + std::to_string(m.out) +
                          ", in/group_size] for weight_shape [" + std::to_string(m.out) + ", " + std::to_string(m.in) +
                          "]");
    }
    m.group = m.in / m.groups;
    std::vector<float> s = floats(c, ks, sc);
    const int64_t half = int64_t{1} << (m.bits - 1);
    const uint32_t mask = (1u << m.bits) - 1;
    const int pf = 32 / m.bits;
    std::vector<uint32_t> wq = words(c, kw, pk);
    m.q.resize(static_cast<size_t>(m.out * m.in));
    for (int64_t o = 0; o < m.out; ++o)
      for (int64_t i = 0; i < m.in; ++i)
        m.q[o * m.in + i] = (wq[o * pk.shape(1) + i / pf] >> (m.bits * (i % pf))) & mask;
    m.scale.resize(static_cast<size_t>(m.out * m.groups));
    m.zero.assign(m.scale.size(), static_cast<float>(half));  // symmetric: code = q + 2^(bits-1)
    for (int64_t o = 0; o < m.out; ++o)
      for (int64_t k = 0; k < m.groups; ++k)
        m.scale[o * m.groups + k] = s[m.groups == 1 && s.size() == 1 ? 0 : o * m.groups + k];
    std::vector<std::string> sources = {kw, ks, kshape};
    if (const Array* zp = c.find(kz)) {  // zero points: signed, stored + 2^(bits-1), packed along out
      expect_shape(
          c, kz, *zp, {(m.out + pf - 1) / pf, m.groups},
          "(ceil(out*bits/32), groups) for weight_shape [" + std::to_string(m.out) + ", " + std::to_string(m.in) + "]");
      std::vector<uint32_t> zq = words(c, kz, *zp);
      for (int64_t o = 0; o < m.out; ++o)
        for (int64_t k = 0; k < m.groups; ++k) {
          uint32_t code = (zq[(o / pf) * m.groups + k] >> (m.bits * (o % pf))) & mask;
          m.zero[o * m.groups + k] = static_cast<float>(code);  // (q - half) - (zp - half) = code(q) - code(zp)
        }
      sources.push_back(kz);
    }
    read_g_idx(c, kg, "(in) for weight_shape [" + std::to_string(m.out) + ", " + std::to_string(m.in) + "]", m,
               sources);
    erase_extras(w, p, {".input_scale", ".input_zero_point"});
    e.emit(p, m, sources);
  }
  for (const std::string& p : keys_ending(c.w, ".weight_scale")) {
    std::string kw = p + ".weight", ks = p + ".weight_scale", kz = p + ".weight_zero_point";
    const Array& wt = c.need(kw, ks);
    if (wt.dtype() == Dtype::f8_e4m3) {
      if (c.find(kz)) throw c.bad(kz, "is not supported for float-quantized (FP8) weights");
      w[kw] = dequant_fp8(c, kw, wt, ks, c.w.at(ks), block, dt);
      w.erase(ks);
      erase_extras(w, p, {".input_scale", ".input_zero_point"});
      ++summary.dequantized;
      continue;
    }
    if (wt.dtype() != Dtype::i8)
      throw c.bad(kw,
                  "must be int8 (naive-quantized) or float8_e4m3fn (float-quantized) next to its weight_scale, got " +
                      std::string(name(wt.dtype())));
    if (wt.ndim() != 2) throw c.bad(kw, "must be 2-d [out, in], got " + shape_str(wt.shape()));
    IntMatrix m;
    m.bits = 8;
    m.out = wt.shape(0);
    m.in = wt.shape(1);
    const Array& sc = c.w.at(ks);
    ScaleLayout L = scale_layout(c, ks, sc.shape(), m.out, m.in, std::nullopt);
    if (L.row_div != 1 && L.rows * L.cols != 1) throw c.bad(ks, "block scales are not supported for int8 weights");
    m.groups = L.rows * L.cols == 1 ? 1 : L.cols;
    m.group = m.in / m.groups;
    std::vector<float> s = floats(c, ks, sc);
    std::vector<uint8_t> raw = bytes(wt);
    m.q.resize(raw.size());
    for (size_t i = 0; i < raw.size(); ++i)
      m.q[i] = static_cast<uint8_t>(static_cast<int8_t>(raw[i]) + 128);  // code = q + 128
    m.scale.resize(static_cast<size_t>(m.out * m.groups));
    m.zero.assign(m.scale.size(), 128.0f);
    for (int64_t o = 0; o < m.out; ++o)
      for (int64_t k = 0; k < m.groups; ++k) m.scale[o * m.groups + k] = s[s.size() == 1 ? 0 : o * m.groups + k];
    std::vector<std::string> sources = {kw, ks};
    if (const Array* zp = c.find(kz)) {
      if (zp->dtype() != Dtype::i8) throw c.bad(kz, "must be int8, got " + std::string(name(zp->dtype())));
      if (shape_size(zp->shape()) != static_cast<int64_t>(s.size()))
        throw c.bad(kz, "has shape " + shape_str(zp->shape()) + ", expected the shape of " + c.where(ks) + " " +
                            shape_str(sc.shape()));
      std::vector<uint8_t> z = bytes(*zp);
      for (int64_t o = 0; o < m.out; ++o)
        for (int64_t k = 0; k < m.groups; ++k)
          m.zero[o * m.groups + k] =
              128.0f + static_cast<float>(static_cast<int8_t>(z[z.size() == 1 ? 0 : o * m.groups + k]));
      sources.push_back(kz);
    }
    erase_extras(w, p, {".input_scale", ".input_zero_point"});
    e.emit(p, m, sources);
  }
}

// gpt-oss mxfp4: `<name>_blocks` uint8 [..., G, 16] + `<name>_scales` uint8 [..., G] -> `<name>.weight` uint32
// [..., G*4] (the same bytes: four bytes little-endian per word keep element 2j in the low nibble of byte j,
// i.e. MLX's LSB-first code order) and `<name>.scales`.
void convert_mxfp4(const Ctx& c, WeightMap& w, HfQuantSummary& summary) {
  for (const std::string& p : keys_ending(c.w, "_blocks")) {
    std::string kb = p + "_blocks", ks = p + "_scales";
    const Array& b = c.w.at(kb);
    const Array& s = c.need(ks, kb);
    if (b.dtype() != Dtype::u8) throw c.bad(kb, "must be uint8, got " + std::string(name(b.dtype())));
    if (s.dtype() != Dtype::u8) throw c.bad(ks, "must be uint8 (E8M0 exponents), got " + std::string(name(s.dtype())));
    if (b.ndim() < 3 || b.shape(-1) != 16) throw c.bad(kb, "must be [..., groups, 16], got " + shape_str(b.shape()));
    Shape lead(b.shape().begin(), b.shape().end() - 1);
    expect_shape(c, ks, s, lead, "(the blocks' " + shape_str(b.shape()) + " without the last axis)");
    std::vector<uint8_t> raw = bytes(b);
    std::vector<uint32_t> packed(raw.size() / 4);
    for (size_t i = 0; i < packed.size(); ++i)
      packed[i] = uint32_t{raw[4 * i]} | uint32_t{raw[4 * i + 1]} << 8 | uint32_t{raw[4 * i + 2]} << 16 |
                  uint32_t{raw[4 * i + 3]} << 24;
    Shape wshape(b.shape().begin(), b.shape().end() - 2);
    wshape.push_back(b.shape(-2) * 4);
    Array scales = s;
    w.erase(kb);
    w.erase(ks);
    w[p + ".weight"] = Array::from(packed, wshape, Dtype::u32);
    w[p + ".scales"] = scales;
    summary.layers[p] = default_quant_spec(QuantMode::mxfp4);
    ++summary.repacked;
  }
}

std::string spec_json(const QuantSpec& s) {
  return "{\"group_size\": " + std::to_string(s.group_size) + ", \"bits\": " + std::to_string(s.bits) +
         ", \"mode\": \"" + std::string(quant_mode_name(s.mode)) + "\"";
}

}  // namespace

const std::vector<std::string>& hf_quant_methods() {
  static const std::vector<std::string> m = {"awq", "gptq", "compressed-tensors", "fp8", "mxfp4"};
  return m;
}

std::optional<HfQuantSummary> convert_hf_quantization(io::Config& config, WeightMap& weights, const FileOf& file_of,
                                                      const HfQuantOptions& options) {
  if (config.is_object("quantization")) return std::nullopt;  // MLX's own object wins (mlx-lm reads it first)
  std::optional<io::Config> qc;
  if (config.is_object("quantization_config"))
    qc = config.sub("quantization_config");
  else if (config.is_object("text_config") && config.sub("text_config").is_object("quantization_config"))
    qc = config.sub("text_config").sub("quantization_config");
  if (!qc || !qc->has("quant_method")) return std::nullopt;  // none, or MLX-style
  HfQuantSummary summary;
  summary.method = qc->get_string("quant_method");
  const auto& methods = hf_quant_methods();
  if (std::find(methods.begin(), methods.end(), summary.method) == methods.end())
    throw NotSupportedError(format_error("load", "quantization_config quant_method '" + summary.method + "' in " +
                                                     config.source() +
                                                     " is not supported (supported: " + join(methods) + ")"));
  Dtype dt = Dtype::bf16;
  if (options.dequant_dtype) {
    dt = *options.dequant_dtype;
  } else {
    std::string t = config.get_string("torch_dtype", "");
    if (t == "float16" || t == "bfloat16" || t == "float32") dt = dtype_from_name(t);
  }
  Ctx c{summary.method, weights, file_of};
  Emitter e{weights, dt, summary};
  if (summary.method == "awq")
    convert_awq(*qc, c, e);
  else if (summary.method == "gptq")
    convert_gptq(*qc, c, e);
  else if (summary.method == "compressed-tensors")
    convert_compressed_tensors(*qc, c, e, dt, summary);
  else if (summary.method == "fp8")
    convert_fp8(*qc, c, weights, dt, summary);
  else if (summary.method == "mxfp4")
    convert_mxfp4(c, weights, summary);

  if (summary.method == "mxfp4")
    summary.spec = default_quant_spec(QuantMode::mxfp4);  // mlx-lm sets it even with no blocks
  std::vector<std::pair<QuantSpec, int>> count;           // formats in first-seen order with their layer counts
  for (const auto& [p, s] : summary.layers) {
    auto it = std::find_if(count.begin(), count.end(), [&](const auto& e) { return e.first == s; });
    if (it == count.end())
      count.push_back({s, 1});
    else
      ++it->second;
  }
  for (const auto& [s, n] : count)
    if (!summary.spec ||
        n > std::find_if(count.begin(), count.end(), [&](const auto& e) { return e.first == *summary.spec; })->second)
      summary.spec = s;
  if (summary.spec) {
    std::string j = spec_json(*summary.spec);
    for (const auto& [p, s] : summary.layers)
      if (!(s == *summary.spec)) j += ", \"" + p + "\": " + spec_json(s) + "}";
    j += "}";
    config.set_json("quantization", j);
    config.set_json("quantization_config", j);
  } else {
    config.set_json("quantization_config", "null");
  }
  return summary;
}

}  // namespace loom::models
