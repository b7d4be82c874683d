// .npy: round trip of every supported dtype, files written by numpy (tests/io/data/make_fixtures.py)
// read by loom, and loom's files read back by numpy.
#include "loom/io/npy.h"

#include <gtest/gtest.h>

#include <cstring>

#include "io_test_util.h"
#include "loom/common/error.h"
#include "loom/common/strings.h"

namespace loom::io {
namespace {

using test::expect_error;
using test::temp_dir;
using test::write_bytes;

std::string bytes_of(const Array& a) { return std::string(static_cast<const char*>(a.raw_data()), a.nbytes()); }

TEST(Npy, RoundTripEveryDtype) {
  std::string dir = temp_dir();
  const Dtype dtypes[] = {Dtype::bool_, Dtype::u8,  Dtype::i8,  Dtype::i16, Dtype::u16, Dtype::i32,
                          Dtype::u32,   Dtype::i64, Dtype::u64, Dtype::f16, Dtype::f32, Dtype::f64};
  const Shape shapes[] = {{}, {1}, {7}, {2, 3}, {2, 0, 3}, {3, 1, 2, 2}};
  int k = 0;
  for (Dtype dt : dtypes) {
    for (const Shape& shape : shapes) {
      SCOPED_TRACE(std::string(name(dt)) + " " + shape_str(shape));
      Array a = Array::empty(shape, dt, Device::cpu());
      auto* p = static_cast<uint8_t*>(a.raw_data());
      for (size_t i = 0; i < a.nbytes(); ++i) p[i] = dt == Dtype::bool_ ? i % 2 : static_cast<uint8_t>(i * 29 + k);
      std::string path = dir + "/a" + std::to_string(k++) + ".npy";
      save_npy(path, a);
      std::string raw = read_file(path);
      // numpy's layout: magic, v1.0, header so the data starts at a multiple of 64.
      ASSERT_EQ(raw.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)), 0);
      size_t hlen = static_cast<uint8_t>(raw[8]) | (static_cast<uint8_t>(raw[9]) << 8);
      EXPECT_EQ((10 + hlen) % 64, 0u);
      EXPECT_EQ(raw[10 + hlen - 1], '\n');
      Array b = load_npy(path);
      EXPECT_EQ(b.dtype(), dt);
      EXPECT_EQ(b.shape(), shape);
      EXPECT_EQ(bytes_of(b), bytes_of(a));
    }
  }
}

TEST(Npy, Bf16IsWrittenAsF32) {
  std::string path = temp_dir() + "/bf.npy";
  save_npy(path, Array::from<float>({1.0f, -2.5f, 0.15625f}, {3}, Dtype::bf16));
  Array b = load_npy(path);
  EXPECT_EQ(b.dtype(), Dtype::f32);
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{1.0f, -2.5f, 0.15625f}));
}

TEST(Npy, NonContiguousIsWrittenInCOrder) {
  std::string path = temp_dir() + "/t.npy";
  Array a = Array::from<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3}).transpose();
  save_npy(path, a);
  Array b = load_npy(path);
  EXPECT_EQ(b.shape(), (Shape{3, 2}));
  EXPECT_EQ(b.to_vector<int32_t>(), (std::vector<int32_t>{1, 4, 2, 5, 3, 6}));
}

// Written by numpy in make_fixtures.py: np.arange(12, dtype='<f4').reshape(3, 4) / 8 - 0.5.
TEST(Npy, ReadsNumpyFile) {
  Array a = load_npy(test::fixture("numpy_written.npy"));
  EXPECT_EQ(a.dtype(), Dtype::f32);
  EXPECT_EQ(a.shape(), (Shape{3, 4}));
  std::vector<float> expect;
  for (int i = 0; i < 12; ++i) expect.push_back(i / 8.0f - 0.5f);
  EXPECT_EQ(a.to_vector<float>(), expect);
}

// np.asfortranarray(np.arange(6, dtype='<i8').reshape(2, 3) * 10 - 7): fortran_order True on disk.
TEST(Npy, ReadsFortranOrder) {
  Array a = load_npy(test::fixture("numpy_fortran.npy"));
  EXPECT_EQ(a.dtype(), Dtype::i64);
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{-7, 3, 13, 23, 33, 43}));
}

// Format version 2.0 (u32 header length): np.array([[1, 2], [3, 4]], dtype='<i4').
TEST(Npy, ReadsVersion2) {
  Array a = load_npy(test::fixture("numpy_v2.npy"));
  EXPECT_EQ(a.dtype(), Dtype::i32);
  EXPECT_EQ(a.shape(), (Shape{2, 2}));
  EXPECT_EQ(a.to_vector<int32_t>(), (std::vector<int32_t>{1, 2, 3, 4}));
}

TEST(Npy, NumpyReadsLoomFiles) {
  std::string dir = temp_dir();
  save_npy(dir + "/f.npy", Array::from<float>({0.5f, -1.0f, 3.25f, 1e-3f, 2.0f, -0.0f}, {2, 3}));
  save_npy(dir + "/b.npy", Array::from<float>({1.0f, -2.5f}, {2}, Dtype::bf16));
  save_npy(dir + "/m.npy", Array::from<bool>({true, false, true}, {3}));
  save_npy(dir + "/s.npy", Array::from<int64_t>({-(int64_t{1} << 40)}, {}));
  save_npy(dir + "/e.npy", Array::empty({0, 2}, Dtype::u8, Device::cpu()));
  save_npy(dir + "/h.npy", Array::from<float>({1.0f, 0.5f}, {2}, Dtype::f16));
  std::string out = test::run_capture(
      "/usr/bin/python3 -c \"import numpy as np, sys\n"
      "for n in 'fbmseh':\n"
      "  a = np.load(sys.argv[1] + '/' + n + '.npy')\n"
      "  print(n, a.dtype.str, a.shape, a.flags['C_CONTIGUOUS'], a.tolist())\" " +
      dir);
  EXPECT_EQ(out,
            "f <f4 (2, 3) True [[0.5, -1.0, 3.25], [0.0010000000474974513, 2.0, -0.0]]\n"
            "b <f4 (2,) True [1.0, -2.5]\n"
            "m |b1 (3,) True [True, False, True]\n"
            "s <i8 () True -1099511627776\n"
            "e |u1 (0, 2) True []\n"
            "h <f2 (2,) True [1.0, 0.5]\n");
}

TEST(Npy, Errors) {
  std::string dir = temp_dir();
  expect_error<IoError>([&] { load_npy(dir + "/absent.npy"); }, {dir + "/absent.npy"});
  write_bytes(dir + "/magic.npy", "PK\x03\x04 not numpy");
  expect_error<IoError>([&] { load_npy(dir + "/magic.npy"); }, {"[npy]", dir + "/magic.npy", "bad magic"});
  // Header declaring 24 bytes of data, with only 8 present.
  std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  write_bytes(dir + "/short.npy", std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(hdr.size()) +
                                      std::string(1, '\0') + hdr + std::string(8, 'x'));
  expect_error<IoError>([&] { load_npy(dir + "/short.npy"); }, {dir + "/short.npy", "truncated data", "24"});
  std::string be = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
  write_bytes(dir + "/be.npy", std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(be.size()) +
                                   std::string(1, '\0') + be + std::string(4, 'x'));
  expect_error<IoError>([&] { load_npy(dir + "/be.npy"); }, {dir + "/be.npy", "'>f4'"});
  write_bytes(dir + "/long.npy", std::string("\x93NUMPY\x01\x00\xff\x00{", 11));
  expect_error<IoError>([&] { load_npy(dir + "/long.npy"); }, {dir + "/long.npy", "past the end"});
  write_bytes(dir + "/v9.npy", std::string("\x93NUMPY\x09\x00\x00\x00", 10));
  expect_error<IoError>([&] { load_npy(dir + "/v9.npy"); }, {"version 9"});
  expect_error<IoError>([&] { save_npy(dir + "/f8.npy", Array::empty({2}, Dtype::f8_e4m3, Device::cpu())); },
                        {dir + "/f8.npy", "float8_e4m3fn"});
  expect_error<IoError>([&] { save_npy(dir + "/no/dir/x.npy", Array::from<float>({1}, {1})); }, {"x.npy"});
}

}  // namespace
}  // namespace loom::io
