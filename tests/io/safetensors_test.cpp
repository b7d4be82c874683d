// safetensors: round trip of every dtype, zero-copy views, folders (index, shards, consolidated),
// a file written by an independent writer (tests/io/data/make_fixtures.py), loom's output read by an
// independent Python reader, and every malformation of the format as a hand-crafted byte file.
#include "loom/io/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io_test_util.h"
#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/ops/ops.h"

namespace loom::io {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::temp_dir;
using test::write_bytes;

const std::vector<std::pair<Dtype, std::string>> kAllDtypes = {
    {Dtype::bool_, "BOOL"}, {Dtype::u8, "U8"},           {Dtype::i8, "I8"},          {Dtype::i16, "I16"},
    {Dtype::u16, "U16"},    {Dtype::f16, "F16"},         {Dtype::bf16, "BF16"},      {Dtype::i32, "I32"},
    {Dtype::u32, "U32"},    {Dtype::f32, "F32"},         {Dtype::f64, "F64"},        {Dtype::i64, "I64"},
    {Dtype::u64, "U64"},    {Dtype::f8_e4m3, "F8_E4M3"}, {Dtype::f8_e5m2, "F8_E5M2"}};

// An array of `dt` whose bytes follow a pattern that differs per dtype (bool gets 0/1).
Array patterned(Dtype dt, const Shape& shape, int salt) {
  Array a = Array::empty(shape, dt, Device::cpu());
  auto* p = static_cast<uint8_t*>(a.raw_data());
  for (size_t i = 0; i < a.nbytes(); ++i)
    p[i] = dt == Dtype::bool_ ? (i + salt) % 2 : static_cast<uint8_t>(i * 37 + salt * 11 + 5);
  return a;
}

std::string bytes_of(const Array& a) {
  return std::string(static_cast<const char*>(a.raw_data()), a.nbytes());
}

// A safetensors file from raw header text and data bytes: u64 LE length, header, data.
std::string st_bytes(const std::string& header, const std::string& data = "", uint64_t declared = UINT64_MAX) {
  uint64_t n = declared == UINT64_MAX ? header.size() : declared;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(SafetensorsDtype, NamesRoundTrip) {
  for (const auto& [dt, s] : kAllDtypes) {
    EXPECT_EQ(dtype_to_safetensors(dt), s);
    EXPECT_EQ(dtype_from_safetensors(s), dt);
  }
  expect_error<IoError>([] { dtype_from_safetensors("F4"); }, {"[safetensors]", "unknown dtype 'F4'"});
}

TEST(Safetensors, RoundTripEveryDtype) {
  std::string dir = temp_dir();
  std::string path = dir + "/all.safetensors";
  std::vector<std::pair<std::string, Array>> tensors;
  int salt = 0;
  for (const auto& [dt, s] : kAllDtypes) tensors.emplace_back("t." + s, patterned(dt, {3, 5}, ++salt));
  tensors.emplace_back("scalar", patterned(Dtype::f32, {}, 1));
  tensors.emplace_back("empty", patterned(Dtype::bf16, {0, 7}, 2));
  tensors.emplace_back("rank4", patterned(Dtype::i16, {2, 1, 3, 2}, 3));
  std::map<std::string, std::string> meta = {{"format", "mlx"}, {"note", "quoted \" and unicode \xc3\xa9"}};
  save_safetensors(path, tensors, meta);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  // The header is padded with spaces so the data section starts at a multiple of 8.
  std::string raw = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8], '{');

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->tensors().size(), tensors.size());
  for (const auto& [name, src] : tensors) {
    SCOPED_TRACE(name);
    const TensorInfo* info = f->find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, src.dtype());
    EXPECT_EQ(info->shape, src.shape());
    EXPECT_EQ(info->end - info->begin, src.nbytes());
    Array a = f->load(name);
    EXPECT_EQ(a.dtype(), src.dtype());
    EXPECT_EQ(a.shape(), src.shape());
    EXPECT_TRUE(a.is_contiguous());
    EXPECT_EQ(bytes_of(a), bytes_of(src));
  }
  // Written in the given order: file order (by offset) equals input order.
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(f->tensors()[i].name, tensors[i].first);
}

TEST(Safetensors, SaveMakesNonContiguousInputContiguous) {
  std::string path = temp_dir() + "/t.safetensors";
  Array a = Array::from<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Array t = transpose(a);  // [3, 2] view: [[1, 4], [2, 5], [3, 6]]
  ASSERT_FALSE(t.is_contiguous());
  save_safetensors(path, {{"t", t}});
  Array back = SafetensorsFile::open(path)->load("t");
  EXPECT_EQ(back.shape(), (Shape{3, 2}));
  EXPECT_EQ(back.to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(Safetensors, SaveErrors) {
  std::string dir = temp_dir();
  Array a = Array::from<float>({1}, {1});
  expect_error<IoError>([&] { save_safetensors(dir + "/d.safetensors", {{"x", a}, {"x", a}}); },
                        {dir + "/d.safetensors", "'x'", "duplicate"});
  EXPECT_FALSE(fs::exists(dir + "/d.safetensors"));
  expect_error<IoError>([&] { save_safetensors(dir + "/m.safetensors", {{"__metadata__", a}}); },
                        {"__metadata__"});
  std::string missing = dir + "/no/such/dir/x.safetensors";
  expect_error<IoError>([&] { save_safetensors(missing, {{"x", a}}); }, {missing, "cannot create"});
  EXPECT_FALSE(fs::exists(missing));
}

TEST(Safetensors, ZeroCopyViewsShareTheMapping) {
  std::string path = temp_dir() + "/z.safetensors";
  save_safetensors(path, {{"a", patterned(Dtype::f32, {4, 4}, 1)}, {"b", patterned(Dtype::u8, {3}, 2)}});
  auto f = SafetensorsFile::open(path);
  uint64_t allocs_before = allocator::stats().allocs;
  Array a1 = f->load("a");
  Array a2 = f->load("a");
  Array b = f->load("b");
  EXPECT_EQ(allocator::stats().allocs, allocs_before);  // no allocation: views of the mapping
  EXPECT_EQ(a1.raw_data(), a2.raw_data());
  // b lies in the same mapping, exactly its data offset after a.
  EXPECT_EQ(static_cast<const uint8_t*>(b.raw_data()) - static_cast<const uint8_t*>(a1.raw_data()),
            static_cast<ptrdiff_t>(f->find("b")->begin - f->find("a")->begin));
  std::string expected = bytes_of(patterned(Dtype::u8, {3}, 2));
  // The views keep the file mapped after the file object is gone.
  f.reset();
  EXPECT_EQ(bytes_of(b), expected);
  EXPECT_EQ(bytes_of(a1), bytes_of(patterned(Dtype::f32, {4, 4}, 1)));
}

// tests/io/data/reference.safetensors was written by make_fixtures.py with struct + json (an
// independent implementation of the format); the expected values are the ones that script wrote.
TEST(Safetensors, ReadsIndependentWriterFile) {
  auto f = SafetensorsFile::open(test::fixture("reference.safetensors"));
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"producer", "make_fixtures.py"}}));
  // File order is data order: the script wrote names in reverse alphabetical order.
  std::vector<std::string> order;
  for (const auto& t : f->tensors()) order.push_back(t.name);
  // empty_f32 occupies no bytes at the offset where boolean begins; the empty range sorts first.
  EXPECT_EQ(order, (std::vector<std::string>{"u8", "scalar_i32", "i8", "i64", "fp8", "f64", "f32", "f16",
                                             "empty_f32", "boolean", "bf16"}));

  Array f32 = f->load("f32");
  EXPECT_EQ(f32.dtype(), Dtype::f32);
  EXPECT_EQ(f32.shape(), (Shape{2, 3}));
  EXPECT_EQ(f32.to_vector<float>(), (std::vector<float>{0.5f, -1.25f, 3.0f, 1e-3f, 65504.0f, -0.0f}));
  EXPECT_TRUE(std::signbit(f32.to_vector<float>()[5]));

  Array f16 = f->load("f16");
  EXPECT_EQ(f16.dtype(), Dtype::f16);
  EXPECT_EQ(f16.to_float_vector(), (std::vector<float>{1.0f, -2.0f, 0.333251953125f, 65504.0f}));

  Array bf16 = f->load("bf16");
  EXPECT_EQ(bf16.dtype(), Dtype::bf16);
  const auto* bits = static_cast<const uint16_t*>(bf16.raw_data());
  EXPECT_EQ(bits[0], 0x3F80);
  EXPECT_EQ(bits[3], 0x7F61);
  EXPECT_EQ(bf16.to_float_vector(), (std::vector<float>{1.0f, -2.5f, 0.15625f, std::ldexp(1.0f + 97.0f / 128, 127)}));

  Array i64 = f->load("i64");
  EXPECT_EQ(i64.dtype(), Dtype::i64);
  EXPECT_EQ(i64.to_vector<int64_t>(), (std::vector<int64_t>{-(int64_t{1} << 40), 7, 0, int64_t{1} << 62}));
  EXPECT_EQ(f->load("i8").to_vector<int8_t>(), (std::vector<int8_t>{-128, -1, 0, 127}));
  EXPECT_EQ(f->load("u8").to_vector<uint8_t>(), (std::vector<uint8_t>{0, 1, 200, 255}));
  Array boolean = f->load("boolean");
  EXPECT_EQ(boolean.dtype(), Dtype::bool_);
  EXPECT_EQ(bytes_of(boolean), std::string("\x01\x00\x01", 3));
  Array f64 = f->load("f64");
  EXPECT_EQ(f64.dtype(), Dtype::f64);
  EXPECT_EQ(std::vector<double>(f64.data<double>(), f64.data<double>() + 2),
            (std::vector<double>{3.141592653589793, -1e300}));
  Array scalar = f->load("scalar_i32");
  EXPECT_EQ(scalar.shape(), Shape{});
  EXPECT_EQ(scalar.item<int32_t>(), -123456);
  Array empty = f->load("empty_f32");
  EXPECT_EQ(empty.shape(), (Shape{0, 4}));
  EXPECT_EQ(empty.size(), 0);
  // F8_E4M3 (OCP spec): 0x38 = 1.0, 0xC0 = -2.0, 0x7E = 448, 0x01 = 2^-9.
  Array fp8 = f->load("fp8");
  EXPECT_EQ(fp8.dtype(), Dtype::f8_e4m3);
  const auto* b8 = static_cast<const uint8_t*>(fp8.raw_data());
  std::vector<float> fp8_values;
  for (int i = 0; i < 4; ++i) fp8_values.push_back(f8e4m3_to_float(b8[i]));
  EXPECT_EQ(fp8_values, (std::vector<float>{1.0f, -2.0f, 448.0f, std::ldexp(1.0f, -9)}));
}

// loom's writer checked by an independent reader: Python with struct + json + numpy.
TEST(Safetensors, WrittenFileReadByIndependentReader) {
  std::string dir = temp_dir();
  std::string path = dir + "/w.safetensors";
  save_safetensors(path,
                   {{"w", Array::from<float>({1.5f, -2.0f, 0.25f, 8.0f, 0.0f, -3.75f}, {2, 3})},
                    {"ids", Array::from<int64_t>({5, -6, 1LL << 40}, {3})},
                    {"h", Array::from<float>({1.0f, -2.5f}, {2}, Dtype::bf16)},
                    {"mask", Array::from<bool>({true, false}, {2})}},
                   {{"format", "mlx"}});
  std::string script =
      "import json,struct,sys,numpy as np\n"
      "b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); d=b[8+n:]\n"
      "assert n%8==0 and b[8+n-1:8+n] in (b' ',b'}')\n"
      "dt={'F32':'<f4','I64':'<i8','BF16':'<u2','BOOL':'?'}\n"
      "print(h.pop('__metadata__'))\n"
      "for k,v in h.items():\n"
      "  s,e=v['data_offsets']; a=np.frombuffer(d[s:e],dtype=dt[v['dtype']]).reshape(v['shape'])\n"
      "  print(k,v['dtype'],v['shape'],a.tolist())\n"
      "print(len(d))\n";
  std::string script_path = dir + "/read.py";
  write_bytes(script_path, script);
  std::string out = test::run_capture("/usr/bin/python3 " + script_path + " " + path);
  // bf16 bits: 1.0 = 0x3F80 = 16256, -2.5 = 0xC020 = 49184.
  EXPECT_EQ(out,
            "{'format': 'mlx'}\n"
            "w F32 [2, 3] [[1.5, -2.0, 0.25], [8.0, 0.0, -3.75]]\n"
            "ids I64 [3] [5, -6, 1099511627776]\n"
            "h BF16 [2] [16256, 49184]\n"
            "mask BOOL [2] [True, False]\n"
            "54\n");  // data section: 24 (w) + 24 (ids) + 4 (h) + 2 (mask) bytes
}

// ---- folders ----

void save_one(const std::string& path, const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, Array>> t;
  float v = 0;
  for (const auto& n : names) t.emplace_back(n, Array::from<float>({v++, v++}, {2}));
  save_safetensors(path, t);
}

TEST(WeightStore, ShardedFolderWithIndex) {
  std::string dir = temp_dir();
  save_one(dir + "/model-00001-of-00002.safetensors", {"a.weight", "b.weight"});
  save_one(dir + "/model-00002-of-00002.safetensors", {"c.weight"});
  write_bytes(dir + "/model.safetensors.index.json",
              R"({"metadata": {"total_size": 24}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                  "b.weight": "model-00001-of-00002.safetensors", "c.weight": "model-00002-of-00002.safetensors"}})");
  write_bytes(dir + "/consolidated.safetensors", "garbage that would fail to parse");
  WeightStore ws = WeightStore::open_folder(dir);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_EQ(ws.files().size(), 2u);
  EXPECT_EQ(ws.file_of("c.weight"), dir + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(ws.info("b.weight").shape, Shape{2});
  EXPECT_EQ(ws.load("b.weight").to_vector<float>(), (std::vector<float>{2, 3}));
  EXPECT_EQ(ws.load("c.weight").to_vector<float>(), (std::vector<float>{0, 1}));
  EXPECT_TRUE(ws.contains("a.weight"));
  EXPECT_FALSE(ws.contains("z"));
  expect_error<IoError>([&] { ws.load("z"); }, {"'z'", dir + "/model-00001-of-00002.safetensors"});
  expect_error<IoError>([&] { ws.info("z"); }, {"'z'"});
}

TEST(WeightStore, IndexListsMissingShard) {
  std::string dir = temp_dir();
  save_one(dir + "/model-00001-of-00002.safetensors", {"a"});
  write_bytes(dir + "/model.safetensors.index.json",
              R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  expect_error<IoError>([&] { WeightStore::open_folder(dir); },
                        {dir + "/model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing"});
}

TEST(WeightStore, IndexNamesTensorItsShardLacks) {
  std::string dir = temp_dir();
  save_one(dir + "/model-00001-of-00001.safetensors", {"a"});
  write_bytes(dir + "/model.safetensors.index.json",
              R"({"weight_map": {"a": "model-00001-of-00001.safetensors", "ghost": "model-00001-of-00001.safetensors"}})");
  expect_error<IoError>([&] { WeightStore::open_folder(dir); }, {"index.json", "'ghost'", "does not contain"});
}

TEST(WeightStore, BadIndexJson) {
  std::string dir = temp_dir();
  write_bytes(dir + "/model.safetensors.index.json", R"({"weight_map": [1, 2]})");
  expect_error<IoError>([&] { WeightStore::open_folder(dir); }, {"index.json", "weight_map"});
  write_bytes(dir + "/model.safetensors.index.json", "{oops");
  expect_error<IoError>([&] { WeightStore::open_folder(dir); }, {"index.json", "invalid JSON"});
}

TEST(WeightStore, ShardsWithoutIndexAndConsolidatedIgnored) {
  std::string dir = temp_dir();
  save_one(dir + "/model-00002-of-00002.safetensors", {"y"});
  save_one(dir + "/model-00001-of-00002.safetensors", {"x"});
  save_one(dir + "/consolidated.safetensors", {"x", "y", "only_in_consolidated"});
  save_one(dir + "/adapter.safetensors", {"lora"});
  WeightStore ws = WeightStore::open_folder(dir);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"x", "y"}));
  ASSERT_EQ(ws.files().size(), 2u);  // sorted by name
  EXPECT_EQ(ws.files()[0]->path(), dir + "/model-00001-of-00002.safetensors");
  EXPECT_EQ(ws.files()[1]->path(), dir + "/model-00002-of-00002.safetensors");
}

TEST(WeightStore, SingleModelFile) {
  std::string dir = temp_dir();
  save_one(dir + "/model.safetensors", {"x"});
  WeightStore ws = WeightStore::open_folder(dir);
  EXPECT_EQ(ws.names(), std::vector<std::string>{"x"});
}

TEST(WeightStore, FolderWithoutWeights) {
  std::string dir = temp_dir();
  expect_error<IoError>([&] { WeightStore::open_folder(dir); },
                        {dir, "model.safetensors.index.json", "model*.safetensors"});
  save_one(dir + "/consolidated.safetensors", {"x"});
  expect_error<IoError>([&] { WeightStore::open_folder(dir); }, {dir, "model*.safetensors", "consolidated"});
  expect_error<IoError>([&] { WeightStore::open_folder(dir + "/nope"); }, {dir + "/nope", "not a directory"});
}

TEST(WeightStore, DuplicateAcrossFilesNamesBoth) {
  std::string dir = temp_dir();
  save_one(dir + "/model-00001-of-00002.safetensors", {"a", "dup"});
  save_one(dir + "/model-00002-of-00002.safetensors", {"dup"});
  expect_error<IoError>([&] { WeightStore::open_folder(dir); },
                        {"'dup'", dir + "/model-00001-of-00002.safetensors", dir + "/model-00002-of-00002.safetensors"});
  expect_error<IoError>(
      [&] {
        WeightStore::open_files({dir + "/model-00002-of-00002.safetensors", dir + "/model-00001-of-00002.safetensors"});
      },
      {"'dup'", "appears in both"});
}

TEST(SafetensorsFile, LoadMissingTensor) {
  std::string path = temp_dir() + "/m.safetensors";
  save_one(path, {"a"});
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->find("b"), nullptr);
  expect_error<IoError>([&] { f->load("b"); }, {path, "'b'"});
}

// ---- malformed files: each one hand-crafted, each error names the file (and tensor) ----

class BadFile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = temp_dir(); }
  // Writes `bytes` to a file and expects open() to fail with a message holding the path and `parts`.
  void expect_bad(const std::string& bytes, std::vector<std::string> parts) {
    std::string path = dir_ + "/bad" + std::to_string(count_++) + ".safetensors";
    write_bytes(path, bytes);
    parts.push_back(path);
    parts.push_back("[safetensors]");
    expect_error<IoError>([&] { SafetensorsFile::open(path); }, parts);
  }
  std::string dir_;
  int count_ = 0;
};

TEST_F(BadFile, MissingFile) {
  expect_error<IoError>([&] { SafetensorsFile::open(dir_ + "/absent.safetensors"); },
                        {dir_ + "/absent.safetensors", "cannot open"});
}

TEST_F(BadFile, Truncated) {
  expect_bad("", {"truncated", "0 bytes"});
  expect_bad(std::string("\x05\x00\x00", 3), {"truncated", "3 bytes"});
  expect_bad(std::string(7, '\0'), {"truncated", "7 bytes"});
}

TEST_F(BadFile, HeaderLengthPastEof) {
  expect_bad(st_bytes("{}", "", 1000), {"header length 1000", "past the end", "10 bytes"});
  expect_bad(st_bytes("", "", UINT64_MAX - 1), {"header length", "past the end"});
  // A file cut inside the data section: the header then names offsets past the end.
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", "1234"),
             {"'w'", "out of range", "4 bytes"});
}

TEST_F(BadFile, InvalidHeaderJson) {
  expect_bad(st_bytes("{\"w\": {\"dtype\": "), {"invalid header JSON"});
  expect_bad(st_bytes("not json at all"), {"invalid header JSON"});
  expect_bad(st_bytes(""), {"invalid header JSON"});
  expect_bad(st_bytes("{\"\xff\": 1}"), {"invalid header JSON"});  // invalid UTF-8
}

TEST_F(BadFile, HeaderNotAnObject) {
  expect_bad(st_bytes("[1, 2, 3]"), {"not a JSON object", "array"});
  expect_bad(st_bytes("42"), {"not a JSON object", "number"});
}

TEST_F(BadFile, EntryMissingFields) {
  expect_bad(st_bytes(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "abcd"), {"'w'", "missing 'dtype'"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", "abcd"), {"'w'", "missing 'shape'"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [1]}})", "abcd"), {"'w'", "missing 'data_offsets'"});
}

TEST_F(BadFile, EntryWrongTypes) {
  expect_bad(st_bytes(R"({"w": 3})"), {"'w'", "entry must be an object"});
  expect_bad(st_bytes(R"({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}})", "abcd"),
             {"'w'", "'dtype' must be a string"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", "abcd"),
             {"'w'", "'shape' must be an array"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "abcd"),
             {"'w'", "'data_offsets' must be an array [begin, end]"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}})", "abcd"),
             {"'w'", "'data_offsets' must be non-negative integers"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", "abcd"),
             {"'w'", "'data_offsets' must be non-negative integers"});
}

TEST_F(BadFile, BadShape) {
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [-1, 1], "data_offsets": [0, 4]}})", "abcd"),
             {"'w'", "'shape' entries must be non-negative integers", "-1"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", "abcd"),
             {"'w'", "'shape' entries must be non-negative integers", "1.5"});
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}})", "abcd"),
             {"'w'", "'shape' entries must be non-negative integers"});
}

TEST_F(BadFile, UnknownDtype) {
  expect_bad(st_bytes(R"({"w": {"dtype": "Q4_K", "shape": [1], "data_offsets": [0, 1]}})", "a"),
             {"'w'", "unknown dtype 'Q4_K'"});
}

TEST_F(BadFile, OffsetsOutOfRange) {
  expect_bad(st_bytes(R"({"w": {"dtype": "U8", "shape": [5], "data_offsets": [0, 5]}})", "abcd"),
             {"'w'", "[0, 5] out of range", "4 bytes"});
  expect_bad(st_bytes(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 0]}})", "a"),
             {"'w'", "data_offsets"});
}

TEST_F(BadFile, BeginAfterEnd) {
  expect_bad(st_bytes(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [3, 1]}})", "abcd"),
             {"'w'", "begin 3 > end 1"});
}

TEST_F(BadFile, OverlappingTensors) {
  expect_bad(st_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                          "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                      "abcdef"),
             {"'a'", "'b'", "overlap"});
  // Identical ranges overlap too; an empty tensor inside another's range does not.
  expect_bad(st_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                          "b": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}})",
                      "abcd"),
             {"'a'", "'b'", "overlap"});
  // A third tensor overlapping the first but not the second (the check keeps the widest range).
  expect_bad(st_bytes(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                          "b": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]},
                          "c": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})",
                      "abcdefgh"),
             {"'a'", "overlap"});
}

TEST_F(BadFile, EmptyTensorInsideAnotherIsFine) {
  std::string path = dir_ + "/ok.safetensors";
  write_bytes(path, st_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                 "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [2, 2]}})",
                             "abcd"));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->load("e").shape(), (Shape{0, 3}));
  EXPECT_EQ(bytes_of(f->load("a")), "abcd");
}

TEST_F(BadFile, ByteSizeMismatch) {
  expect_bad(st_bytes(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", std::string(24, 'x')),
             {"'w'", "[2, 3]", "needs 24 bytes", "span 20"});
  expect_bad(st_bytes(R"({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}})", std::string(8, 'x')),
             {"'w'", "needs 6 bytes", "span 8"});
  // A shape whose byte size overflows 64 bits.
  expect_bad(st_bytes(R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
                      std::string(8, 'x')),
             {"'w'", "more than 2^64"});
}

TEST_F(BadFile, DuplicateTensorNames) {
  expect_bad(st_bytes(R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                          "w": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
                      "abcd"),
             {"duplicate tensor name 'w'"});
  expect_bad(st_bytes(R"({"w": {"dtype": "U8", "dtype": "I8", "shape": [2], "data_offsets": [0, 2]}})", "ab"),
             {"duplicate key 'dtype'"});
}

TEST_F(BadFile, MetadataNotStringMap) {
  expect_bad(st_bytes(R"({"__metadata__": {"format": 1}})"), {"__metadata__", "'format'", "integer 1"});
  expect_bad(st_bytes(R"({"__metadata__": "pt"})"), {"__metadata__", "must be an object"});
  expect_bad(st_bytes(R"({"__metadata__": {"nested": {"a": "b"}}})"), {"__metadata__", "'nested'"});
}

TEST_F(BadFile, ValidHandCraftedFileWithTrailingPadding) {
  // The control case for the files above: well-formed, header padded with spaces, data unaligned.
  std::string path = dir_ + "/ok.safetensors";
  float v[2] = {1.5f, -4.0f};
  write_bytes(path, st_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}  )",
                             std::string(reinterpret_cast<const char*>(v), 8)));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->load("w").to_vector<float>(), (std::vector<float>{1.5f, -4.0f}));
  EXPECT_TRUE(f->metadata().empty());
}

// Every truncation of a valid file is an error; every single-byte corruption of its length and header
// is either an error or a file whose views stay inside the data -- never a crash.
TEST_F(BadFile, TruncationsAndByteCorruptions) {
  std::string good_path = dir_ + "/good.safetensors";
  save_safetensors(good_path, {{"a", Array::from<float>({1, 2, 3}, {3})}, {"b", Array::from<int16_t>({4, 5}, {1, 2})}},
                   {{"k", "v"}});
  const std::string good = read_file(good_path);
  std::string path = dir_ + "/mutant.safetensors";
  for (size_t len = 0; len < good.size(); ++len) {
    write_bytes(path, good.substr(0, len));
    expect_error<IoError>([&] { SafetensorsFile::open(path); }, {path});
  }
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  const char replacements[] = {'0', '9', '-', '"', '}', ']', '[', ',', ' ', '\xff', '\0', 'F'};
  int opened = 0, rejected = 0;
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    for (char r : replacements) {
      if (good[pos] == r) continue;
      std::string bytes = good;
      bytes[pos] = r;
      write_bytes(path, bytes);
      try {
        auto f = SafetensorsFile::open(path);
        uint64_t n2 = 0;
        std::memcpy(&n2, bytes.data(), 8);
        for (const auto& t : f->tensors()) {
          Array a = f->load(t.name);
          ASSERT_LE(8 + n2 + t.end, bytes.size());
          EXPECT_EQ(bytes_of(a), bytes.substr(8 + n2 + t.begin, t.end - t.begin));
        }
        ++opened;
      } catch (const IoError& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(opened, 0);  // e.g. a changed metadata value or a space inside the JSON stays valid
}

}  // namespace
}  // namespace loom::io
