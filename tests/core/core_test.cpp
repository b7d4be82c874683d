// Core: dtypes (names, sizes, MLX promotion), f16/bf16 conversion edge cases, views sharing buffers,
// Array::from validation, allocator reuse, and the thread pool's coverage and nesting guarantees.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "loom/core/allocator.h"
#include "loom/core/array.h"
#include "loom/core/dtype.h"
#include "loom/core/thread_pool.h"
#include "loom/ops/ops.h"

namespace loom {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---------------------------------------------------------------- dtypes

TEST(Dtype, NamesAndSizes) {
  struct Row {
    Dtype dt;
    const char* name;
    size_t size;
  };
  const Row rows[] = {{Dtype::bool_, "bool", 1}, {Dtype::u8, "uint8", 1},      {Dtype::i8, "int8", 1},
                      {Dtype::i16, "int16", 2},  {Dtype::u16, "uint16", 2},    {Dtype::i32, "int32", 4},
                      {Dtype::u32, "uint32", 4}, {Dtype::i64, "int64", 8},     {Dtype::u64, "uint64", 8},
                      {Dtype::f16, "float16", 2}, {Dtype::bf16, "bfloat16", 2}, {Dtype::f32, "float32", 4},
                      {Dtype::f64, "float64", 8}, {Dtype::f8_e4m3, "float8_e4m3fn", 1}, {Dtype::f8_e5m2, "float8_e5m2", 1}};
  for (const Row& r : rows) {
    EXPECT_EQ(name(r.dt), r.name);
    EXPECT_EQ(size_of(r.dt), r.size) << r.name;
    EXPECT_EQ(dtype_from_name(r.name), r.dt) << r.name;
  }
  EXPECT_EQ(dtype_from_name("torch.bfloat16"), Dtype::bf16);
  EXPECT_EQ(dtype_from_name("bf16"), Dtype::bf16);
  EXPECT_EQ(dtype_from_name("torch.float16"), Dtype::f16);
  EXPECT_THROW(dtype_from_name("float128"), std::exception);
  EXPECT_TRUE(is_floating(Dtype::bf16));
  EXPECT_FALSE(is_floating(Dtype::i32));
  EXPECT_TRUE(is_integral(Dtype::bool_));
  EXPECT_FALSE(is_compute_dtype(Dtype::f8_e4m3));
  EXPECT_TRUE(is_compute_dtype(Dtype::bf16));
}

TEST(Dtype, PromotionMatchesMlx) {
  // Cases from MLX's documented promotion table (docs: "Data Types" / type promotion).
  struct Row {
    Dtype a, b, want;
  };
  const Row rows[] = {
      {Dtype::bool_, Dtype::i8, Dtype::i8},     {Dtype::u8, Dtype::i8, Dtype::i16},
      {Dtype::i32, Dtype::f16, Dtype::f16},     {Dtype::bf16, Dtype::f16, Dtype::f32},
      {Dtype::u8, Dtype::u16, Dtype::u16},      {Dtype::u16, Dtype::i16, Dtype::i32},
      {Dtype::u32, Dtype::i32, Dtype::i64},     {Dtype::u8, Dtype::i32, Dtype::i32},
      {Dtype::i32, Dtype::f32, Dtype::f32},     {Dtype::bf16, Dtype::f32, Dtype::f32},
      {Dtype::f16, Dtype::f32, Dtype::f32},     {Dtype::i64, Dtype::bf16, Dtype::bf16},
      {Dtype::bool_, Dtype::bool_, Dtype::bool_}, {Dtype::bool_, Dtype::f16, Dtype::f16},
      {Dtype::i8, Dtype::i64, Dtype::i64},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(promote_types(r.a, r.b), r.want) << name(r.a) << " + " << name(r.b);
    EXPECT_EQ(promote_types(r.b, r.a), r.want) << name(r.b) << " + " << name(r.a) << " (symmetry)";
  }
}

TEST(Dtype, WeakScalarsDoNotPromote) {
  Array hb = Array::from<float>({1.0f, 2.0f}, {2}, Dtype::bf16);
  EXPECT_EQ((hb * 2.0).dtype(), Dtype::bf16);
  EXPECT_EQ((0.5 + hb).dtype(), Dtype::bf16);
  Array hf = Array::from<float>({1.0f, 2.0f}, {2}, Dtype::f16);
  EXPECT_EQ((hf / 3.0).dtype(), Dtype::f16);
  Array i = Array::from<int32_t>({1, 2}, {2});
  EXPECT_EQ((i + 1.0).dtype(), Dtype::i32);
  EXPECT_EQ((i * 0.5).dtype(), Dtype::f32);
  EXPECT_EQ((i * 0.5).to_float_vector(), (std::vector<float>{0.5f, 1.0f}));
}

// ---------------------------------------------------------------- f16 / bf16 conversion

TEST(Convert, Bf16EdgeCases) {
  // bf16 keeps the top 16 bits of a float32; rounding to nearest, ties to even on bit 16.
  EXPECT_EQ(float_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);             // sign of zero kept
  EXPECT_EQ(float_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(float_to_bf16(-INFINITY), 0xff80);
  uint16_t n = float_to_bf16(NAN);
  EXPECT_EQ(n & 0x7f80, 0x7f80);
  EXPECT_NE(n & 0x007f, 0);                             // still a NaN (mantissa non-zero)
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);               // 0x3f800000
  // 0x3f808000 = 1 + 2^-8: exactly halfway between bf16 0x3f80 and 0x3f81; 0x3f80 is even -> down.
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808000u)), 0x3f80);
  // 0x3f818000: halfway between 0x3f81 (odd) and 0x3f82 (even) -> up to 0x3f82.
  EXPECT_EQ(float_to_bf16(from_bits(0x3f818000u)), 0x3f82);
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808001u)), 0x3f81);  // just above the tie -> up
  EXPECT_EQ(float_to_bf16(from_bits(0x3f807fffu)), 0x3f80);  // just below -> down
  // Largest finite float 0x7f7fffff: the low half 0xffff > 0x8000 rounds up into the exponent -> inf.
  EXPECT_EQ(float_to_bf16(from_bits(0x7f7fffffu)), 0x7f80);
  // Subnormals are kept (no flush): 0x00018000 is a tie between 0x0001 (odd) and 0x0002 -> 0x0002.
  EXPECT_EQ(float_to_bf16(from_bits(0x00018000u)), 0x0002);
  EXPECT_EQ(float_to_bf16(from_bits(0x00008000u)), 0x0000);  // tie between 0 (even) and 1 -> 0
  EXPECT_EQ(float_to_bf16(from_bits(0x00010000u)), 0x0001);  // smallest bf16 subnormal, exact
  // Back to float is exact.
  EXPECT_EQ(bits_of(bf16_to_float(0x3f82)), 0x3f820000u);
  EXPECT_EQ(bits_of(bf16_to_float(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isnan(bf16_to_float(0x7fc0)));
}

TEST(Convert, F16EdgeCases) {
  EXPECT_EQ(float_to_f16(0.0f), 0x0000);
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(float_to_f16(-INFINITY), 0xfc00);
  uint16_t n = float_to_f16(NAN);
  EXPECT_EQ(n & 0x7c00, 0x7c00);
  EXPECT_NE(n & 0x03ff, 0);
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);                // exponent 15, mantissa 0
  EXPECT_EQ(float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);            // largest finite half
  // 65520 = 65504 + 16 is halfway to 65536 (which overflows); 0x7bff is odd -> rounds up -> inf.
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_f16(65519.0f), 0x7bff);            // below the tie -> stays finite
  // Ties in the normal range: 1 + 2^-11 is halfway between 0x3c00 (even) and 0x3c01 -> 0x3c00;
  // 1 + 3*2^-11 is halfway between 0x3c01 (odd) and 0x3c02 -> 0x3c02.
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Subnormals: unit 2^-24. 2^-24 -> 0x0001; 2^-25 is a tie between 0 and 0x0001 -> 0 (even);
  // 3*2^-25 is a tie between 0x0001 and 0x0002 -> 0x0002; 2^-14 - 2^-24 -> 0x03ff; 2^-14 -> 0x0400.
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(float_to_f16(3 * std::ldexp(1.0f, -25)), 0x0002);
  EXPECT_EQ(float_to_f16(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -24)), 0x03ff);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -14)), 0x0400);
  // Rounding a subnormal up into the smallest normal: 2^-14 - 2^-25 is a tie between 0x03ff (odd) and 0x0400.
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);
  // Decoding.
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(bits_of(f16_to_float(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isinf(f16_to_float(0xfc00)) && f16_to_float(0xfc00) < 0);
  EXPECT_TRUE(std::isnan(f16_to_float(0x7e00)));
  // Every finite half round-trips exactly.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(float_to_f16(f16_to_float(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(Convert, ArrayAstypeUsesSameRounding) {
  std::vector<float> v = {from_bits(0x3f808000u), from_bits(0x3f818000u), 65520.0f, -0.0f, 1.0f + std::ldexp(1.0f, -11)};
  Array a = Array::from(v, {5});
  std::vector<float> b = a.astype(Dtype::bf16).to_float_vector();
  EXPECT_EQ(bits_of(b[0]), 0x3f800000u);
  EXPECT_EQ(bits_of(b[1]), 0x3f820000u);
  EXPECT_EQ(bits_of(b[3]), 0x80000000u);
  std::vector<float> h = a.astype(Dtype::f16).to_float_vector();
  EXPECT_TRUE(std::isinf(h[2]));
  EXPECT_EQ(h[4], 1.0f);
  // Integer conversions go through double and truncate toward zero.
  Array f = Array::from<float>({2.7f, -2.7f, 0.5f, -0.5f}, {4});
  EXPECT_EQ(f.astype(Dtype::i32).to_vector<int32_t>(), (std::vector<int32_t>{2, -2, 0, 0}));
  EXPECT_EQ(f.astype(Dtype::bool_).to_vector<bool>(), (std::vector<bool>{true, true, true, true}));
}

// ---------------------------------------------------------------- arrays and views

TEST(ArrayViews, ShareTheBuffer) {
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[i] = static_cast<float>(i);
  Array a = Array::from(v, {2, 3, 4});
  ASSERT_TRUE(a.is_contiguous());

  Array r = reshape(a, {6, 4});
  EXPECT_EQ(r.buffer(), a.buffer());
  EXPECT_TRUE(r.is_contiguous());
  EXPECT_EQ(r.to_float_vector(), v);

  Array t = transpose(a, {2, 0, 1});
  EXPECT_EQ(t.buffer(), a.buffer());
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(t.strides(), (Strides{1, 12, 4}));
  EXPECT_EQ(t.to_float_vector()[1], 4.0f);  // t[0, 0, 1] = a[0, 1, 0]

  Array s = slice(a, {1, 0, 1}, {2, 3, 4}, {1, 2, 2});  // a[1:2, 0:3:2, 1:4:2]
  EXPECT_EQ(s.buffer(), a.buffer());
  EXPECT_EQ(s.shape(), (Shape{1, 2, 2}));
  EXPECT_EQ(s.offset(), 13);
  EXPECT_EQ(s.to_float_vector(), (std::vector<float>{13, 15, 21, 23}));

  Array b = broadcast_to(slice_axis(a, 0, 0, 1), {5, 3, 4});
  EXPECT_EQ(b.buffer(), a.buffer());
  EXPECT_EQ(b.strides()[0], 0);
  EXPECT_EQ(b.to_float_vector()[12 * 4 + 5], 5.0f);

  Array e = expand_dims(a, 1);
  EXPECT_EQ(e.buffer(), a.buffer());
  EXPECT_EQ(squeeze(e, 1).buffer(), a.buffer());

  // Writing through a view is visible in the base (assign writes into a view in place).
  assign(s, full({1, 2, 2}, -1.0));
  std::vector<float> after = a.to_float_vector();
  EXPECT_EQ(after[13], -1.0f);
  EXPECT_EQ(after[23], -1.0f);
  EXPECT_EQ(after[14], 14.0f);

  // Reshaping a non-contiguous view must copy (a new buffer), and keep the values in row-major order.
  Array rt = reshape(t, {8, 3});
  EXPECT_NE(rt.buffer(), a.buffer());
  EXPECT_EQ(rt.to_float_vector(), t.to_float_vector());
  // contiguous() of a contiguous array is the same handle.
  EXPECT_EQ(contiguous(a).buffer(), a.buffer());
  EXPECT_NE(contiguous(t).buffer(), a.buffer());
}

TEST(ArrayViews, FromValidatesSize) {
  EXPECT_THROW(Array::from<float>({1.0f, 2.0f, 3.0f}, {2, 2}), std::invalid_argument);
  EXPECT_THROW(Array::from<int32_t>({1}, {0}), std::invalid_argument);
  EXPECT_NO_THROW(Array::from(std::vector<int32_t>{}, {0, 3}));
  Array a = Array::from<float>({1.5f, -2.0f}, {2}, Dtype::bf16);
  EXPECT_EQ(a.dtype(), Dtype::bf16);
  EXPECT_EQ(a.to_float_vector(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(Array::scalar(3.0, Dtype::i32).item<int32_t>(), 3);
  EXPECT_THROW(a.item<float>(), std::exception);
  EXPECT_THROW(Array::empty({2, -1}, Dtype::f32), std::exception);
  EXPECT_THROW(reshape(a, {3}), std::exception);
}

// ---------------------------------------------------------------- allocator

TEST(Allocator, ReusesFreedBlocks) {
  constexpr size_t kBytes = 3 * 1000 * 1000 + 17;  // an odd size past the power-of-two classes
  { auto warm = allocator::allocate(kBytes, Device::cpu()); }
  AllocatorStats before = allocator::stats();
  for (int i = 0; i < 10; ++i) {
    auto b = allocator::allocate(kBytes, Device::cpu());
    ASSERT_NE(b->ptr, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b->ptr) % 64, 0u);
    std::memset(b->ptr, 0xab, kBytes);
  }
  AllocatorStats after = allocator::stats();
  EXPECT_EQ(after.system_allocs, before.system_allocs);
  EXPECT_EQ(after.allocs, before.allocs + 10);
  EXPECT_EQ(after.active_bytes, before.active_bytes);

  // The same holds for arrays: a steady loop of same-sized temporaries makes no system allocation.
  Array x = Array::from<float>(std::vector<float>(1000, 1.0f), {10, 100});
  { Array y = x * 2.0 + 1.0; }
  before = allocator::stats();
  for (int i = 0; i < 20; ++i) {
    Array y = x * 2.0 + 1.0;
    ASSERT_EQ(y.to_float_vector()[7], 3.0f);
  }
  after = allocator::stats();
  EXPECT_EQ(after.system_allocs, before.system_allocs);

  // Two blocks alive at once need two distinct buffers; clear_cache hands them back.
  {
    auto b1 = allocator::allocate(kBytes, Device::cpu());
    auto b2 = allocator::allocate(kBytes, Device::cpu());
    EXPECT_NE(b1->ptr, b2->ptr);
  }
  allocator::clear_cache();
  EXPECT_EQ(allocator::stats().cached_bytes, 0u);
  before = allocator::stats();
  { auto b = allocator::allocate(kBytes, Device::cpu()); }
  EXPECT_EQ(allocator::stats().system_allocs, before.system_allocs + 1);
}

// ---------------------------------------------------------------- thread pool

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  int saved = num_threads();
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    EXPECT_EQ(num_threads(), threads);
    for (int64_t n : {1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, 4097, 100003}) {
      for (int64_t grain : {1, 2, 5, 16, 64, 1000, 200000}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int64_t> calls{0};
        std::atomic<bool> bad_range{false};
        parallel_for(n, grain, [&](int64_t b, int64_t e) {
          calls++;
          if (b < 0 || e > n || b >= e) bad_range = true;
          // Ranges are at least `grain` long unless the whole job is shorter.
          if (e - b < std::min(grain, n)) bad_range = true;
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        ASSERT_FALSE(bad_range) << "n=" << n << " grain=" << grain << " threads=" << threads;
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "index " << i << " n=" << n << " grain=" << grain << " threads=" << threads;
        ASSERT_LE(calls.load(), threads);
      }
    }
  }
  parallel_for(0, 1, [&](int64_t, int64_t) { FAIL() << "n = 0 must not call fn"; });
  set_num_threads(saved);
}

TEST(ThreadPool, NestedCallsRunSerially) {
  int saved = num_threads();
  set_num_threads(4);
  const int64_t outer = 16, inner = 1000;
  std::vector<std::atomic<int>> hits(outer * inner);
  std::atomic<int> inner_calls{0};
  std::atomic<bool> wrong_thread{false};
  parallel_for(outer, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      std::thread::id me = std::this_thread::get_id();
      int calls_here = 0;
      parallel_for(inner, 1, [&](int64_t ib, int64_t ie) {
        ++calls_here;
        inner_calls++;
        if (std::this_thread::get_id() != me) wrong_thread = true;
        if (ib != 0 || ie != inner) wrong_thread = true;  // one serial call over the whole range
        for (int64_t i = ib; i < ie; ++i) hits[o * inner + i]++;
      });
      if (calls_here != 1) wrong_thread = true;
    }
  });
  EXPECT_FALSE(wrong_thread);
  EXPECT_EQ(inner_calls.load(), outer);
  for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), 1) << i;
  set_num_threads(saved);
}

TEST(ThreadPool, ManySmallJobsBackToBack) {
  // Decode launches many tiny jobs; a lost wake-up or a stale part would hang or miscount here.
  int saved = num_threads();
  set_num_threads(4);
  std::atomic<int64_t> total{0};
  for (int it = 0; it < 20000; ++it)
    parallel_for(8, 1, [&](int64_t b, int64_t e) { total += e - b; });
  EXPECT_EQ(total.load(), 8 * 20000);
  set_num_threads(saved);
}

// Consecutive jobs with different part counts: every index of a job is done exactly once, and no part
// is still running when parallel_for returns (the job's lambda and vectors die right after). A worker
// late from one job used to take an index of the next between the main thread's stores, so a part ran
// twice and parallel_for could return while a part still ran (seen as rare crashes on 16 cores).
TEST(ThreadPool, JobsOfChangingSizeFinishBeforeReturning) {
  int saved = num_threads();
  set_num_threads(8);
  for (int it = 0; it < 20000; ++it) {
    const int64_t n = 2 + (it * 7) % 15;
    std::vector<int> hits(static_cast<size_t>(n), 0);
    std::atomic<int> active{0};
    parallel_for(n, 1, [&](int64_t b, int64_t e) {
      active++;
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      active--;
    });
    ASSERT_EQ(active.load(), 0) << "a part still ran after parallel_for returned (job " << it << ")";
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)], 1) << "index " << i << " of job " << it;
  }
  set_num_threads(saved);
}

}  // namespace
}  // namespace loom
