// The sampling-support ops on the CPU (loom/ops/ops.h: cumsum, put_along_axis, scatter_add_axis;
// loom/ops/random.h: random_uniform; loom/ops/readback.h). Oracles are written out here by hand: f64
// prefix sums with a rounding bound derived from the documented summation order, exact integer prefix
// sums, the published splitmix64 reference outputs, and plain loops for numpy's put_along_axis.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "loom/backend/scan_order.h"
#include "loom/common/error.h"
#include "loom/ops/ops.h"
#include "loom/ops/random.h"
#include "loom/ops/readback.h"
#include "tests/ops/op_test_util.h"

namespace loom {
namespace {

using test::rand_array;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> rand_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ---- cumsum ----------------------------------------------------------------------------------------

TEST(Cumsum, ShortRowsAreThePlainSequentialF32Sum) {
  // Rows of at most kScanGroup (32) elements: every segment holds one element and all sit in group 0,
  // so the documented order reduces to acc = 0; acc += x in order — the same f32 operations as this loop.
  for (int64_t n : {1, 2, 7, 31, 32}) {
    std::vector<float> v = rand_floats(static_cast<size_t>(3 * n), 11 + static_cast<uint32_t>(n), -3.0f, 3.0f);
    auto got = cumsum(Array::from(v, {3, n}), -1).to_vector<float>();
    for (int64_t r = 0; r < 3; ++r) {
      float acc = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        acc += v[r * n + j];
        EXPECT_EQ(got[r * n + j], acc) << "n " << n << " row " << r << " col " << j;
      }
    }
  }
}

TEST(Cumsum, IntegerValuedRowsAreExactInEveryMode) {
  // Small integers: every partial sum is below 2^24, so any summation order gives the exact prefix
  // sums; this checks the index bookkeeping of forward/reverse and inclusive/exclusive scans at row
  // lengths around the segment boundaries (1024 segments: n = 1023, 1024, 1025, 2049 and 100003).
  for (int64_t n : {5, 33, 1023, 1024, 1025, 2049, 100003}) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::vector<float> v(static_cast<size_t>(2 * n));
    for (auto& x : v) x = static_cast<float>(static_cast<int>(rng() % 7) - 3);
    Array a = Array::from(v, {2, n});
    for (bool reverse : {false, true})
      for (bool inclusive : {true, false}) {
        auto got = cumsum(a, -1, reverse, inclusive).to_vector<float>();
        for (int64_t r = 0; r < 2; ++r) {
          double acc = 0;
          for (int64_t s = 0; s < n; ++s) {
            int64_t j = reverse ? n - 1 - s : s;
            if (inclusive) acc += v[r * n + j];
            ASSERT_EQ(got[r * n + j], static_cast<float>(acc))
                << "n " << n << " reverse " << reverse << " inclusive " << inclusive << " at " << r << "," << j;
            if (!inclusive) acc += v[r * n + j];
          }
        }
      }
  }
}

// The documented order (backend/cpu/sampling_support.cpp), written out independently: the bits the
// CPU kernel must produce, and the CUDA kernel too (tests/cuda/sampling_ops_test.cpp).
std::vector<float> blocked_cumsum(const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  const int64_t seg = n <= 1024 ? 1 : (n + 1023) / 1024;
  std::vector<float> total(1024, 0.0f), offset(1024, 0.0f), out(x.size());
  for (int64_t s = 0; s < 1024; ++s)
    for (int64_t j = s * seg; j < std::min(n, (s + 1) * seg); ++j) total[s] += x[j];
  float group_prefix = 0.0f;
  for (int64_t g = 0; g < 32; ++g) {
    float in_group = 0.0f;
    for (int64_t l = 0; l < 32; ++l) {
      offset[g * 32 + l] = group_prefix + in_group;
      in_group += total[g * 32 + l];
    }
    group_prefix += in_group;
  }
  for (int64_t s = 0; s < 1024; ++s) {
    float acc = offset[s];
    for (int64_t j = s * seg; j < std::min(n, (s + 1) * seg); ++j) out[j] = acc += x[j];
  }
  return out;
}

TEST(Cumsum, LongRowsFollowTheDocumentedOrderBitForBit) {
  for (int64_t n : {33, 1000, 5000, 151936}) {
    std::vector<float> v = rand_floats(static_cast<size_t>(n), 5, 0.0f, 1e-3f);
    auto got = cumsum(Array::from(v, {n})).to_vector<float>();
    auto want = blocked_cumsum(v);
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(got[j], want[j]) << "n " << n << " at " << j;
  }
}

TEST(Cumsum, CloseToTheExactPrefixSums) {
  // f64 prefix sums as the oracle. An input passes through at most 2S + 65 rounded f32 additions on
  // its way into an output (its segment's total, the in-group and group prefix chains, the offset's
  // add, the run through the output's segment), so each output's error is at most
  // (2S + 66) * 2^-24 * (sum of |x| up to it) — checked element by element, S = ceil(n / 1024).
  for (int64_t n : {100, 4096, 100000}) {
    std::vector<float> v = rand_floats(static_cast<size_t>(n), 9, -1.0f, 1.0f);
    auto got = cumsum(Array::from(v, {1, n}), 1).to_vector<float>();
    const double depth = static_cast<double>(2 * scan_segment_length(n) + 66);
    double exact = 0, mass = 0;
    for (int64_t j = 0; j < n; ++j) {
      exact += v[j];
      mass += std::fabs(v[j]);
      ASSERT_LE(std::fabs(got[j] - exact), depth * std::ldexp(1.0, -24) * mass) << "n " << n << " at " << j;
    }
  }
}

TEST(Cumsum, AnyAxisViewsAndDtypes) {
  // cumsum along axis 0 of a transposed view == the rows of the contiguous original, summed.
  Array base = astype(rand_array({4, 6}, 3, Dtype::f32, -4.0f, 4.0f), Dtype::i32);  // small integers: exact
  Array f = astype(base, Dtype::f32);
  Array t = transpose(f);  // [6, 4], non-contiguous
  auto got = cumsum(t, 0).to_vector<float>();
  auto src = f.to_vector<float>();
  for (int64_t c = 0; c < 4; ++c) {
    float acc = 0;
    for (int64_t r = 0; r < 6; ++r) EXPECT_EQ(got[r * 4 + c], acc += src[c * 6 + r]);
  }
  // bf16 in, bf16 out (f32 accumulation, one rounding at the end): [1, 1, ..., 1] sums to 1..n exactly.
  Array ones_bf = ones({1, 300}, Dtype::bf16);
  Array cb = cumsum(ones_bf);
  EXPECT_EQ(cb.dtype(), Dtype::bf16);
  auto vb = cb.to_vector<float>();
  EXPECT_EQ(vb[255], 256.0f);
  EXPECT_EQ(vb[256], 256.0f);  // 257 rounds to even (256) in bf16's 8-bit mantissa
  EXPECT_EQ(cumsum(Array::scalar(2.5)).item<float>(), 2.5f);
  EXPECT_THROW(cumsum(Array::from(std::vector<int32_t>{1, 2}, {2})), NotSupportedError);
  EXPECT_THROW(cumsum(ones({2, 3}), 2), ValueError);
}

// ---- random_uniform ----------------------------------------------------------------------------------

TEST(RandomUniform, KeyZeroIsTheSplitmix64ReferenceStream) {
  // Element i of key 0 hashes 0 + golden * (i + 1): exactly the (i+1)-th output of the reference
  // splitmix64 generator seeded with 0, whose published first outputs are below; the value is their
  // top 24 bits over 2^24.
  const uint64_t ref[] = {0xE220A8397B1DCDAFull, 0x6E789E6AA1B965F4ull, 0x06C45D188009454Full, 0xF88BB8A8724C81ECull};
  auto got = random_uniform({4}, 0, Device::cpu()).to_vector<float>();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(got[i], static_cast<float>(ref[i] >> 40) / 16777216.0f) << i;
    EXPECT_EQ(got[i], random::uniform_at(0, static_cast<uint64_t>(i)));
  }
}

TEST(RandomUniform, PureFunctionOfKeyAndIndex) {
  const uint64_t key = 0x1234567890ABCDEFull;
  auto flat = random_uniform({3000}, key, Device::cpu()).to_vector<float>();
  auto shaped = random_uniform({3, 10, 100}, key, Device::cpu()).to_vector<float>();
  EXPECT_EQ(flat, shaped);  // the shape does not enter, only the flat index
  for (int64_t i : {0, 1, 999, 2999}) EXPECT_EQ(flat[i], random::uniform_at(key, static_cast<uint64_t>(i)));
  EXPECT_NE(flat, random_uniform({3000}, key + 1, Device::cpu()).to_vector<float>());
  EXPECT_EQ(random_uniform({}, key, Device::cpu()).item<float>(), flat[0]);
}

TEST(RandomUniform, UniformOnTheUnitInterval) {
  // 2^17 draws: every value a multiple of 2^-24 in [0, 1); mean within 5 sd (sd = sqrt(1/12/n)) of
  // 1/2 - 2^-25 (the grid's mean), and each of 16 equal bins within 5 sd of n/16.
  const int64_t n = 1 << 17;
  auto v = random_uniform({n}, 42, Device::cpu()).to_vector<float>();
  double sum = 0;
  std::vector<double> bins(16, 0);
  for (float x : v) {
    ASSERT_GE(x, 0.0f);
    ASSERT_LT(x, 1.0f);
    ASSERT_EQ(std::ldexp(x, 24), std::floor(std::ldexp(x, 24)));
    sum += x;
    bins[static_cast<size_t>(x * 16)] += 1;
  }
  EXPECT_NEAR(sum / n, 0.5 - std::ldexp(1.0, -25), 5 * std::sqrt(1.0 / 12 / n));
  const double p = 1.0 / 16, sd = std::sqrt(n * p * (1 - p));
  for (double b : bins) EXPECT_NEAR(b, n * p, 5 * sd);
}

// ---- put_along_axis / scatter_add_axis ------------------------------------------------------------------

TEST(PutAlongAxis, MatchesNumpyLoops) {
  // a [2, 5, 3], indices [1, 2, 3] along axis 1 broadcast over axis 0; values [2, 2, 3].
  // numpy: out[i, idx[0, j, k], k] = values[i, j, k] for every i, j, k (negative idx + 5).
  Array a = rand_array({2, 5, 3}, 1);
  std::vector<int32_t> idx = {0, -1, 2, 4, 3, 1};  // [1, 2, 3]
  std::vector<float> vals = {10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25};
  Array out = put_along_axis(a, Array::from(idx, {1, 2, 3}), Array::from(vals, {2, 2, 3}), 1);
  auto want = a.to_vector<float>();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 3; ++k) {
        int c = idx[j * 3 + k];
        if (c < 0) c += 5;
        want[(i * 5 + c) * 3 + k] = vals[(i * 2 + j) * 3 + k];
      }
  EXPECT_EQ(out.to_vector<float>(), want);
  EXPECT_EQ(out.shape(), a.shape());
  EXPECT_NE(a.to_vector<float>(), want);  // the input is untouched
  // A scalar value broadcast everywhere, on a transposed (non-contiguous) input along axis 0.
  Array t = transpose(rand_array({3, 4}, 2));  // [4, 3]
  Array o2 = put_along_axis(t, Array::from(std::vector<int32_t>{3, 0}, {2, 1}), Array::scalar(-kInf), 0);
  auto tv = t.to_vector<float>();
  auto ov = o2.to_vector<float>();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(ov[r * 3 + c], (r == 3 || r == 0) ? -kInf : tv[r * 3 + c]);
}

TEST(PutAlongAxis, RepeatsDtypesAndErrors) {
  Array a = zeros({1, 4});
  // Repeated index: on the CPU the last write wins.
  Array o = put_along_axis(a, Array::from(std::vector<int32_t>{2, 2}, {1, 2}), Array::from({1.0f, 2.0f}, {1, 2}), -1);
  EXPECT_EQ(o.to_vector<float>(), (std::vector<float>{0, 0, 2, 0}));
  // Element bits of 1-, 2- and 8-byte dtypes move unchanged.
  Array b = put_along_axis(zeros({2, 3}, Dtype::bool_), Array::from(std::vector<int32_t>{1}, {1, 1}),
                           full({}, 1.0, Dtype::bool_), 1);
  EXPECT_EQ(b.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 0, 0, 1, 0}));
  Array h = put_along_axis(zeros({3}, Dtype::bf16), Array::from(std::vector<int64_t>{0}, {1}), Array::scalar(1.5), 0);
  EXPECT_EQ(h.dtype(), Dtype::bf16);
  EXPECT_EQ(h.to_vector<float>(), (std::vector<float>{1.5f, 0, 0}));
  Array d = put_along_axis(zeros({3}, Dtype::i64), Array::from(std::vector<int32_t>{-1}, {1}),
                           Array::scalar(7, Dtype::i64), 0);
  EXPECT_EQ(d.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 7}));
  // Errors: host indices out of range, float indices, wrong rank, indices that do not broadcast.
  EXPECT_THROW(put_along_axis(a, Array::from(std::vector<int32_t>{4}, {1, 1}), Array::scalar(1), 1), ValueError);
  EXPECT_THROW(put_along_axis(a, Array::from(std::vector<int32_t>{-5}, {1, 1}), Array::scalar(1), 1), ValueError);
  EXPECT_THROW(put_along_axis(a, Array::from({1.0f}, {1, 1}), Array::scalar(1), 1), ValueError);
  EXPECT_THROW(put_along_axis(a, Array::from(std::vector<int32_t>{1}, {1}), Array::scalar(1), 1), ValueError);
  EXPECT_THROW(put_along_axis(a, Array::from(std::vector<int32_t>{1, 1}, {2, 1}), Array::scalar(1), 1), ValueError);
}

TEST(ScatterAddAxis, RepeatedIndicesAddUp) {
  // np.add.at semantics: index 1 three times adds 1 + 2 + 3.
  Array a = Array::from({1.0f, 1.0f, 1.0f}, {1, 3});
  Array o = scatter_add_axis(a, Array::from(std::vector<int32_t>{1, 1, 1, 2}, {1, 4}),
                             Array::from({1.0f, 2.0f, 3.0f, 0.5f}, {1, 4}), 1);
  EXPECT_EQ(o.to_vector<float>(), (std::vector<float>{1, 7, 1.5f}));
  // A broadcast scalar on rows [2, 3], int32.
  Array i = scatter_add_axis(zeros({2, 3}, Dtype::i32), Array::from(std::vector<int32_t>{0, 0}, {1, 2}),
                             Array::scalar(-2, Dtype::i32), 1);
  EXPECT_EQ(i.to_vector<int32_t>(), (std::vector<int32_t>{-4, 0, 0, -4, 0, 0}));
  EXPECT_THROW(
      scatter_add_axis(zeros({3}, Dtype::bf16), Array::from(std::vector<int32_t>{0}, {1}), Array::scalar(1), 0),
      NotSupportedError);
}

// ---- Readback ------------------------------------------------------------------------------------------

TEST(Readback, CpuRoundTripOnce) {
  Array a = Array::from(std::vector<int32_t>{3, -1, 7}, {3});
  Readback r(slice_axis(a, 0, 1, 3));
  EXPECT_TRUE(r.pending());
  Array got = r.get();
  EXPECT_FALSE(r.pending());
  EXPECT_EQ(got.to_vector<int32_t>(), (std::vector<int32_t>{-1, 7}));
  EXPECT_THROW(r.get(), ValueError);
  EXPECT_THROW(Readback(zeros({65})), ValueError);  // 260 bytes > kMaxBytes
  Readback dropped(a);                              // destroyed without get(): its slot is released
}

}  // namespace
}  // namespace loom
