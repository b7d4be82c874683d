// CUDA parity of the copy, elementwise and reduction kernels (backend/cuda/copy.cu, elementwise.cu,
// reduce.cu): each public op runs on CPU arrays and on GPU copies of the same views (same shape,
// strides and offset), and the results must agree. Tolerances, relative to max |cpu|: exact for
// copies, integers, comparisons and bools; 1e-6 for f32 arithmetic (a few ulps); 1e-5 for f32
// transcendentals (CUDA's and glibc's libm differ by ulps); 1e-2 for f16/bf16 outputs (one ulp of
// the output after rounding f32 math that may differ by an ulp); 1e-4 for f32 sums over long rows
// (the CPU adds sequentially, the GPU in a tree).
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom {
namespace {

using test::gpu_matches_cpu;
using test::kGpu;
using test::on_gpu;
using test::rand_array;
using test::rand_gapped;
using test::rand_swapped;

constexpr double kExact = 0;
constexpr double kTolArith = 1e-6;
constexpr double kTolTrans = 1e-5;
constexpr double kTolHalf = 1e-2;
constexpr double kTolLongSum = 1e-4;
// Rows of many equal terms (integer inputs): the CPU's sequential f32 sum drifts systematically
// (each add rounds the same way), by about 1e-4 at 1e5 terms; the GPU's tree sum does not.
constexpr double kTolLongEqualSum = 1e-3;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const Dtype kFloats[] = {Dtype::f32, Dtype::bf16, Dtype::f16};

// Tolerance for a result of dtype `dt`; `trans` for f32 results of transcendental math.
double tol_for(Dtype dt, bool trans = false) {
  if (dt == Dtype::f16 || dt == Dtype::bf16) return kTolHalf;
  if (dt == Dtype::f32 || dt == Dtype::f64) return trans ? kTolTrans : kTolArith;
  return kExact;
}

// f(inputs...) on the CPU and f(on_gpu(inputs)...) on the GPU, compared within `tol`.
template <typename F, typename... A>
::testing::AssertionResult parity(double tol, F&& f, const A&... in) {
  Array cpu = f(in...);
  Array gpu = f(on_gpu(in)...);
  return gpu_matches_cpu(gpu, cpu, tol);
}

// Random values from a small integer set (as `dtype`), so comparisons and arg-reductions tie.
Array rand_ints(const Shape& shape, uint32_t seed, Dtype dtype, int lo, int hi) {
  return astype(rand_array(shape, seed, Dtype::i32, static_cast<float>(lo), static_cast<float>(hi)), dtype);
}

Array special_values(Dtype dt) {
  std::vector<float> v = {kNaN, kInf, -kInf, -0.0f, 0.0f, 0.5f, 1.5f, 2.5f, -2.5f, -0.5f, 3.0f, -3.0f,
                          25.0f, -25.0f, 100.0f, -100.0f, 1e-3f, -1e-3f, 0.7f, -7.25f};
  return Array::from(v, {static_cast<int64_t>(v.size())}, dt);
}

// Views the kernels must index correctly: contiguous, a transposed view, rows with gaps, a
// contiguous view at an odd offset (misaligned for vector loads), and a transposed view whose
// innermost extent lets threads take runs of 4 elements.
std::vector<Array> layouts(uint32_t seed, Dtype dt, float lo, float hi) {
  std::vector<Array> v;
  v.push_back(rand_array({3, 5, 7}, seed, dt, lo, hi));
  v.push_back(rand_swapped({3, 5, 7}, seed + 1, 0, 2, dt, lo, hi));
  v.push_back(rand_gapped({3, 5, 7}, seed + 2, dt, lo, hi));
  v.push_back(reshape(slice_axis(rand_array({106}, seed + 3, dt, lo, hi), 0, 1, 106), {3, 5, 7}));
  v.push_back(rand_swapped({4, 6, 8}, seed + 4, 0, 1, dt, lo, hi));
  return v;
}

std::string op_name(int op) { return "op " + std::to_string(op); }

// ---------------------------------------------------------------- copy, fill, arange

TEST(CudaCopy, AstypeEveryPairAndLayout) {
  LOOM_REQUIRE_CUDA();
  const Dtype all[] = {Dtype::bool_, Dtype::u8,  Dtype::i8,   Dtype::i16, Dtype::u16, Dtype::i32, Dtype::u32,
                       Dtype::i64,   Dtype::u64, Dtype::f16,  Dtype::bf16, Dtype::f32, Dtype::f64};
  // Fractions, negatives, values past the narrow types' ranges (wrap), NaN and inf (-> 0 and
  // INT64_MIN for integers on both devices).
  std::vector<float> vals = {0.0f, 1.0f, -1.0f, 2.7f, -2.7f, 127.9f, -128.5f, 255.5f, 300.7f, -300.7f, 65504.0f,
                             70000.0f, -70000.0f, 1e10f, -1e10f, kNaN, kInf, -kInf, 0.5f, 1e-8f, 12345.678f};
  Array base = Array::from(vals, {3, 7}, Dtype::f32);
  for (Dtype src : all) {
    // Negative values make uint64 sources above 2^53, whose conversion to other integers the CPU
    // rounds through double (uint64 max -> int32 gives 0 there) while the GPU converts exactly.
    Array s = src == Dtype::u64 ? astype(abs(base), src) : astype(base, src);
    std::vector<Array> views = {s, transpose(s), slice(s, {0, 1}, {3, 7}, {2, 3}),
                                broadcast_to(s.reshape({3, 1, 7}), {3, 4, 7})};
    for (Dtype dst : all) {
      SCOPED_TRACE(std::string(name(src)) + " -> " + std::string(name(dst)));
      for (const Array& v : views) EXPECT_TRUE(parity(kExact, [&](const Array& a) { return astype(a, dst); }, v));
    }
  }
}

TEST(CudaCopy, ContiguousOfViews) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::i8, Dtype::i64, Dtype::bool_}) {
    SCOPED_TRACE(std::string(name(dt)));
    auto cont = [](const Array& a) { return contiguous(a); };
    EXPECT_TRUE(parity(kExact, cont, rand_swapped({3, 5, 7}, 1, 0, 2, dt, -50, 50)));
    EXPECT_TRUE(parity(kExact, cont, rand_gapped({4, 1, 33}, 2, dt, -50, 50)));
    EXPECT_TRUE(parity(kExact, cont, transpose(rand_array({2, 3, 4, 5}, 3, dt, -50, 50), {3, 1, 0, 2})));
    EXPECT_TRUE(parity(kExact, cont, broadcast_to(rand_array({5, 1}, 4, dt, -50, 50), {3, 5, 7})));
    EXPECT_TRUE(parity(kExact, cont, broadcast_to(Array::scalar(3, dt), {2, 9})));
    EXPECT_TRUE(parity(kExact, cont, slice(rand_array({9, 11}, 5, dt, -50, 50), {1, 2}, {9, 11}, {3, 4})));
    EXPECT_TRUE(parity(kExact, cont, rand_array({0, 5}, 6, dt)));
    EXPECT_TRUE(parity(kExact, cont, rand_swapped({8, 12, 16}, 7, 0, 1, dt, -50, 50)));  // runs of 4
    EXPECT_TRUE(parity(kExact, cont, rand_gapped({6, 8}, 8, dt, -50, 50)));
  }
  // Long enough for many blocks, transposed (the common contiguous() of a K/V view).
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return contiguous(a); },
                     rand_swapped({64, 129, 130}, 7, 0, 1, Dtype::bf16)));
}

TEST(CudaCopy, Float8AndFloat64Storage) {
  LOOM_REQUIRE_CUDA();
  for (Dtype f8 : {Dtype::f8_e4m3, Dtype::f8_e5m2}) {
    SCOPED_TRACE(std::string(name(f8)));
    Array bytes = Array::empty({256}, f8, Device::cpu());
    auto* p = static_cast<uint8_t*>(bytes.raw_data());
    for (int i = 0; i < 256; ++i) p[i] = static_cast<uint8_t>(i);
    for (Dtype dst : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::f64})
      EXPECT_TRUE(parity(kExact, [&](const Array& a) { return astype(a, dst); }, bytes));
    EXPECT_THROW(astype(on_gpu(rand_array({4}, 1)), f8), NotSupportedError);
  }
  std::vector<double> d = {1.0 / 3.0, -1e300, 1e-300, 65519.99, 3.0000001, -2.5, 1e20, 0.1};
  Array f64 = Array::from(d, {8});
  for (Dtype dst : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i64, Dtype::i8, Dtype::bool_})
    EXPECT_TRUE(parity(kExact, [&](const Array& a) { return astype(a, dst); }, f64));
}

TEST(CudaCopy, FullAndArange) {
  LOOM_REQUIRE_CUDA();
  const Dtype dts[] = {Dtype::bool_, Dtype::u8, Dtype::i8, Dtype::i16, Dtype::i32, Dtype::u32,
                       Dtype::i64, Dtype::f16, Dtype::bf16, Dtype::f32, Dtype::f64};
  for (Dtype dt : dts) {
    SCOPED_TRACE(std::string(name(dt)));
    for (double v : {0.0, 1.0, -1.0, 0.1, 3.7, -300.5, 1e10, std::nan("")}) {
      Array c = full({3, 5, 7}, v, dt, Device::cpu());
      Array g = full({3, 5, 7}, v, dt, kGpu);
      EXPECT_TRUE(gpu_matches_cpu(g, c, kExact)) << "value " << v;
    }
    EXPECT_TRUE(gpu_matches_cpu(full({0, 3}, 2.0, dt, kGpu), full({0, 3}, 2.0, dt, Device::cpu()), kExact));
    struct R {
      double start, stop, step;
    };
    for (R r : {R{0, 10, 1}, R{0.5, 10, 0.3}, R{-3, 3, 0.25}, R{0, 100000, 7}, R{10, 0, -1.5}, R{0, 300, 1},
                R{5, 5, 1}}) {
      Array c = arange(r.start, r.stop, r.step, dt, Device::cpu());
      Array g = arange(r.start, r.stop, r.step, dt, kGpu);
      EXPECT_TRUE(gpu_matches_cpu(g, c, kExact)) << r.start << ":" << r.stop << ":" << r.step;
    }
  }
}

TEST(CudaCopy, SliceUpdateConcatenateAssign) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::i32}) {
    SCOPED_TRACE(std::string(name(dt)));
    Array dst = rand_array({4, 9, 6}, 1, dt);
    Array src = rand_swapped({2, 5, 6}, 2, 0, 2, dt);
    EXPECT_TRUE(parity(kExact, [](const Array& d, const Array& s) { return slice_update(d, s, {1, 3, 0}); }, dst, src));
    // Converting writes into strided regions: concatenate promotes (f16 with bf16 -> f32, etc.).
    Array a = rand_gapped({3, 4, 5}, 3, dt), b = rand_array({3, 2, 5}, 4, Dtype::f16);
    Array c = rand_array({3, 1, 5}, 5, Dtype::u8, 0, 9);
    EXPECT_TRUE(parity(kExact, [](const Array& x, const Array& y, const Array& z) { return concatenate({x, y, z}, 1); },
                       a, b, c));
    EXPECT_TRUE(parity(kExact, [](const Array& x, const Array& y) { return concatenate({x, y}, 2); }, a,
                       rand_array({3, 4, 2}, 6, dt)));
    // assign broadcasts its source into a strided view in place.
    Array cpu_dst = rand_array({5, 8}, 7, dt), gpu_dst = on_gpu(cpu_dst);
    Array row = rand_array({1, 3}, 8, Dtype::f32);
    assign(slice(cpu_dst, {1, 2}, {5, 8}, {1, 2}), row);
    assign(slice(gpu_dst, {1, 2}, {5, 8}, {1, 2}), on_gpu(row));
    EXPECT_TRUE(gpu_matches_cpu(gpu_dst, cpu_dst, kExact));
  }
}

// ---------------------------------------------------------------- unary

constexpr UnaryOp kUnaryOps[] = {
    UnaryOp::negative, UnaryOp::abs,     UnaryOp::exp,  UnaryOp::log,         UnaryOp::log1p,       UnaryOp::sqrt,
    UnaryOp::rsqrt,    UnaryOp::square,  UnaryOp::sin,  UnaryOp::cos,         UnaryOp::tanh,        UnaryOp::sigmoid,
    UnaryOp::erf,      UnaryOp::silu,    UnaryOp::gelu, UnaryOp::gelu_approx, UnaryOp::relu,        UnaryOp::softplus,
    UnaryOp::logical_not, UnaryOp::floor, UnaryOp::ceil, UnaryOp::round,      UnaryOp::sign,        UnaryOp::reciprocal,
};

bool exact_in_f32(UnaryOp op) {
  switch (op) {
    case UnaryOp::negative: case UnaryOp::abs: case UnaryOp::square: case UnaryOp::sqrt: case UnaryOp::rsqrt:
    case UnaryOp::relu: case UnaryOp::logical_not: case UnaryOp::floor: case UnaryOp::ceil: case UnaryOp::round:
    case UnaryOp::sign: case UnaryOp::reciprocal:
      return true;
    default: return false;
  }
}

bool needs_positive(UnaryOp op) {
  return op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::log1p;
}

TEST(CudaElementwise, EveryUnaryOpFloat) {
  LOOM_REQUIRE_CUDA();
  for (UnaryOp op : kUnaryOps) {
    for (Dtype dt : kFloats) {
      SCOPED_TRACE(op_name(static_cast<int>(op)) + " " + std::string(name(dt)));
      float lo = needs_positive(op) ? 0.05f : -4.0f, hi = 4.0f;
      auto f = [op](const Array& a) { return unary(op, a); };
      Dtype out_dt = op == UnaryOp::logical_not ? Dtype::bool_ : dt;
      double tol = tol_for(out_dt, !exact_in_f32(op));
      for (const Array& x : layouts(static_cast<uint32_t>(op) * 10, dt, lo, hi)) EXPECT_TRUE(parity(tol, f, x));
      EXPECT_TRUE(parity(tol, f, special_values(dt)));
      EXPECT_TRUE(parity(tol, f, rand_array({1, 100003}, 7, dt, lo, hi)));  // many blocks, odd tail
      EXPECT_TRUE(parity(tol, f, rand_array({0, 5}, 8, dt)));
      EXPECT_TRUE(parity(tol, f, Array::scalar(0.75, dt)));
    }
  }
}

TEST(CudaElementwise, UnaryOnIntegers) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::i32, Dtype::i64, Dtype::i8, Dtype::u8, Dtype::i16, Dtype::bool_}) {
    for (UnaryOp op : kUnaryOps) {
      SCOPED_TRACE(op_name(static_cast<int>(op)) + " " + std::string(name(dt)));
      // Integer ops stay integral (exact); the float-only ones give f32 from the integer values.
      auto f = [op](const Array& a) { return unary(op, a); };
      Array x = dt == Dtype::bool_ ? rand_ints({3, 5, 7}, 1, dt, 0, 2) : rand_ints({3, 5, 7}, 1, dt, -128, 128);
      Dtype out_dt = unary(op, x).dtype();
      double tol = tol_for(out_dt, !exact_in_f32(op));
      EXPECT_TRUE(parity(tol, f, x));
      EXPECT_TRUE(parity(tol, f, transpose(x)));
    }
  }
}

// ---------------------------------------------------------------- binary

constexpr BinaryOp kBinaryOps[] = {
    BinaryOp::add,       BinaryOp::subtract,   BinaryOp::multiply,      BinaryOp::divide,     BinaryOp::maximum,
    BinaryOp::minimum,   BinaryOp::power,      BinaryOp::equal,         BinaryOp::not_equal,  BinaryOp::less,
    BinaryOp::less_equal, BinaryOp::greater,   BinaryOp::greater_equal, BinaryOp::logical_and, BinaryOp::logical_or,
};

// Operands for op: b stays away from 0 for float division, power gets a positive base.
std::pair<Array, Array> binary_operands(BinaryOp op, const Shape& sa, const Shape& sb, uint32_t seed, Dtype dt) {
  if (!is_floating(dt)) {
    if (op == BinaryOp::power) return {rand_ints(sa, seed, dt, -5, 6), rand_ints(sb, seed + 1, dt, -3, 7)};
    if (dt == Dtype::bool_) return {rand_ints(sa, seed, dt, 0, 2), rand_ints(sb, seed + 1, dt, 0, 2)};
    return {rand_ints(sa, seed, dt, -20, 20), rand_ints(sb, seed + 1, dt, -5, 5)};  // zeros: int / 0 is f32 inf/NaN
  }
  if (op == BinaryOp::power) return {rand_array(sa, seed, dt, 0.1f, 3.0f), rand_array(sb, seed + 1, dt, -3.0f, 3.0f)};
  if (op == BinaryOp::divide) return {rand_array(sa, seed, dt, -4, 4), rand_array(sb, seed + 1, dt, 0.25f, 2.0f)};
  // Small integer values make ties for the comparisons, max and min.
  if (op >= BinaryOp::maximum && op != BinaryOp::power)
    return {rand_ints(sa, seed, dt, -3, 4), rand_ints(sb, seed + 1, dt, -3, 4)};
  return {rand_array(sa, seed, dt, -4, 4), rand_array(sb, seed + 1, dt, -4, 4)};
}

TEST(CudaElementwise, EveryBinaryOpEveryDtype) {
  LOOM_REQUIRE_CUDA();
  const Dtype dts[] = {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::i64, Dtype::u8, Dtype::i8, Dtype::bool_};
  for (BinaryOp op : kBinaryOps) {
    for (Dtype dt : dts) {
      SCOPED_TRACE(op_name(static_cast<int>(op)) + " " + std::string(name(dt)));
      auto f = [op](const Array& a, const Array& b) { return binary(op, a, b); };
      bool trans = op == BinaryOp::power;
      auto [a, b] = binary_operands(op, {3, 5, 7}, {3, 5, 7}, static_cast<uint32_t>(op) * 7 + 1, dt);
      double tol = tol_for(binary(op, a, b).dtype(), trans);
      EXPECT_TRUE(parity(tol, f, a, b));                          // contiguous (vectorized)
      EXPECT_TRUE(parity(tol, f, transpose(a, {2, 0, 1}).reshape({3, 5, 7}), b));
      EXPECT_TRUE(parity(tol, f, swapaxes(a, 0, 1), swapaxes(b, 0, 1)));  // both strided
      auto [c, d] = binary_operands(op, {3, 1, 7}, {5, 1}, static_cast<uint32_t>(op) * 7 + 3, dt);
      EXPECT_TRUE(parity(tol, f, c, d));  // broadcast on both sides: [3,1,7] with [5,1]
      auto [e, s] = binary_operands(op, {1, 1003}, {}, static_cast<uint32_t>(op) * 7 + 5, dt);
      EXPECT_TRUE(parity(tol, f, e, s));  // a 0-d operand
      EXPECT_TRUE(parity(tol, f, s, e));
      auto [g, h] = binary_operands(op, {6, 4, 8}, {4, 1, 8}, static_cast<uint32_t>(op) * 7 + 6, dt);
      EXPECT_TRUE(parity(tol, f, swapaxes(g, 0, 1), h));  // strided and broadcast, runs of 4
      auto [z0, z1] = binary_operands(op, {0, 4}, {4}, 9, dt);
      EXPECT_TRUE(parity(tol, f, z0, z1));
    }
  }
}

TEST(CudaElementwise, BinarySpecialValuesAndLongRows) {
  LOOM_REQUIRE_CUDA();
  for (BinaryOp op : kBinaryOps) {
    SCOPED_TRACE(op_name(static_cast<int>(op)));
    auto f = [op](const Array& a, const Array& b) { return binary(op, a, b); };
    Array a = special_values(Dtype::f32);
    Array b = Array::from(std::vector<float>{1.0f, kNaN, 2.0f, 0.0f, -0.0f, kInf, 0.5f, -kInf, 3.0f, kNaN, 0.0f, 2.0f,
                                             -1.0f, 0.5f, 1.0f, 1.0f, 3.0f, 2.0f, -0.5f, 1.0f},
                          {20});
    EXPECT_TRUE(parity(kTolTrans, f, a, b));
    EXPECT_TRUE(parity(kTolTrans, f, b, a));
    auto [x, y] = binary_operands(op, {1, 300007}, {1, 300007}, 11, Dtype::bf16);
    EXPECT_TRUE(parity(kTolHalf, f, x, y));
  }
}

TEST(CudaElementwise, MixedDtypesPromote) {
  LOOM_REQUIRE_CUDA();
  struct P {
    Dtype a, b;
  };
  for (P p : {P{Dtype::bf16, Dtype::f32}, P{Dtype::f16, Dtype::bf16}, P{Dtype::i32, Dtype::f32},
              P{Dtype::u8, Dtype::i8}, P{Dtype::bool_, Dtype::i32}, P{Dtype::i32, Dtype::i64},
              P{Dtype::u8, Dtype::bf16}}) {
    for (BinaryOp op : kBinaryOps) {
      SCOPED_TRACE(std::string(name(p.a)) + " with " + std::string(name(p.b)) + " " + op_name(static_cast<int>(op)));
      Array a = rand_ints({3, 5, 7}, 1, p.a, p.a == Dtype::bool_ ? 0 : -6, p.a == Dtype::bool_ ? 2 : 7);
      Array b = op == BinaryOp::power ? rand_ints({5, 7}, 2, p.b, 0, 4) : rand_ints({5, 7}, 2, p.b, 1, 5);
      auto f = [op](const Array& x, const Array& y) { return binary(op, x, y); };
      double tol = tol_for(binary(op, a, b).dtype(), op == BinaryOp::power);
      EXPECT_TRUE(parity(tol, f, a, b));
      EXPECT_TRUE(parity(tol, f, swapaxes(b, 0, 1), swapaxes(a, 1, 2)));
    }
  }
}

TEST(CudaElementwise, WeakScalarMeetsGpuArray) {
  LOOM_REQUIRE_CUDA();
  // The scalar is a CPU 0-d array; the ops layer uploads it to meet the GPU operand.
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::bool_}) {
    SCOPED_TRACE(std::string(name(dt)));
    Array x = rand_ints({4, 33}, 1, dt, dt == Dtype::bool_ ? 0 : -9, dt == Dtype::bool_ ? 2 : 9);
    Array gx = on_gpu(x);
    auto check = [&](const std::function<Array(const Array&)>& f) {
      Array c = f(x), g = f(gx);
      EXPECT_TRUE(gpu_matches_cpu(g, c, tol_for(c.dtype()))) << name(c.dtype());
    };
    check([](const Array& a) { return a * 0.5; });
    check([](const Array& a) { return a + 3.0; });
    check([](const Array& a) { return 2.0 - a; });
    check([](const Array& a) { return a / 2.0; });
    check([](const Array& a) { return 1.0 / (a + 10.0); });
    check([](const Array& a) { return maximum(a, Array::scalar(1.0, a.dtype())); });
    check([](const Array& a) { return less(a, weak_scalar(0.5, a)); });
  }
}

TEST(CudaElementwise, Where) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::i64, Dtype::i8}) {
    SCOPED_TRACE(std::string(name(dt)));
    auto f = [](const Array& c, const Array& a, const Array& b) { return where(c, a, b); };
    Array cond = rand_ints({3, 1, 7}, 1, Dtype::bool_, 0, 2);
    Array a = rand_swapped({3, 5, 7}, 2, 0, 1, dt, -9, 9);
    Array b = Array::scalar(-1.5, dt);
    EXPECT_TRUE(parity(kExact, f, cond, a, b));
    EXPECT_TRUE(parity(kExact, f, cond, b, a));
    EXPECT_TRUE(parity(kExact, f, rand_ints({3, 5, 7}, 3, Dtype::u8, 0, 3), a, rand_gapped({3, 5, 7}, 4, dt, -9, 9)));
    // Mixed dtypes convert (f32 output); a float condition truncates (0.5 is false), as on the CPU.
    EXPECT_TRUE(parity(kExact, f, cond, a, rand_array({5, 7}, 5, Dtype::f32)));
    EXPECT_TRUE(parity(kExact, f, rand_array({3, 5, 7}, 6, Dtype::f32, -1.5f, 1.5f), a, b));
    EXPECT_TRUE(parity(kExact, f, cond, rand_array({3, 0, 7}, 7, dt), b));
    EXPECT_TRUE(parity(kExact, f, rand_ints({4, 1, 8}, 8, Dtype::bool_, 0, 2), rand_swapped({4, 6, 8}, 9, 0, 1, dt),
                       rand_gapped({4, 6, 8}, 10, dt)));
  }
}

TEST(CudaElementwise, Swiglu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kFloats) {
    SCOPED_TRACE(std::string(name(dt)));
    auto f = [](const Array& g, const Array& u) { return fast::swiglu(g, u); };
    double tol = tol_for(dt, true);
    EXPECT_TRUE(parity(tol, f, rand_array({3, 5, 7}, 1, dt, -6, 6), rand_array({3, 5, 7}, 2, dt, -2, 2)));
    EXPECT_TRUE(parity(tol, f, rand_array({2, 100003}, 3, dt, -6, 6), rand_array({2, 100003}, 4, dt, -2, 2)));
    EXPECT_TRUE(parity(tol, f, rand_swapped({3, 5, 7}, 5, 0, 2, dt), rand_gapped({3, 5, 7}, 6, dt)));
    Array odd = reshape(slice_axis(rand_array({106}, 7, dt), 0, 1, 106), {3, 5, 7});  // misaligned
    EXPECT_TRUE(parity(tol, f, odd, rand_array({3, 5, 7}, 8, dt)));
    EXPECT_TRUE(parity(tol, f, rand_array({0, 7}, 9, dt), rand_array({0, 7}, 10, dt)));
  }
  // Mixed: bf16 gate with f32 up -> f32.
  EXPECT_TRUE(parity(kTolTrans, [](const Array& g, const Array& u) { return fast::swiglu(g, u); },
                     rand_array({4, 9}, 11, Dtype::bf16, -4, 4), rand_array({4, 9}, 12, Dtype::f32)));
}

// ---------------------------------------------------------------- reductions

// Row lengths around the warp/block team switch and block sizes.
const int64_t kRowLengths[] = {1, 7, 31, 32, 33, 255, 1024, 1025, 5000, 16384, 100003};

TEST(CudaReduce, SumProdMaxMin) {
  LOOM_REQUIRE_CUDA();
  using Fn = Array (*)(const Array&, const std::vector<int>&, bool, StreamOrDevice);
  const std::pair<const char*, Fn> ops[] = {{"sum", &sum}, {"prod", &prod}, {"max", &max}, {"min", &min}};
  for (auto [nm, fn] : ops) {
    bool is_prod = std::string(nm) == "prod";
    for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::i8, Dtype::u8, Dtype::bool_, Dtype::i64}) {
      SCOPED_TRACE(std::string(nm) + " " + std::string(name(dt)));
      Array x = !is_floating(dt) ? rand_ints({3, 5, 7}, 1, dt, dt == Dtype::bool_ ? 0 : -3, dt == Dtype::bool_ ? 2 : 4)
                : is_prod        ? rand_array({3, 5, 7}, 1, dt, 0.5f, 1.5f)
                                 : rand_array({3, 5, 7}, 1, dt, -3, 3);
      double tol = tol_for(is_floating(dt) ? dt : Dtype::i32);
      for (std::vector<int> axes : std::vector<std::vector<int>>{{-1}, {0}, {1}, {0, 2}, {}}) {
        EXPECT_TRUE(parity(tol, [&](const Array& a) { return fn(a, axes, false, {}); }, x));
        EXPECT_TRUE(parity(tol, [&](const Array& a) { return fn(a, axes, true, {}); }, swapaxes(x, 0, 2)));
      }
      if (is_prod) continue;
      for (int64_t n : kRowLengths) {
        Array y = is_floating(dt) ? rand_array({3, n}, 2, dt, -1, 1) : rand_ints({3, n}, 2, dt, 0, 2);
        double t = std::string(nm) == "sum" && dt == Dtype::f32 && n > 1000 ? kTolLongSum : tol;
        EXPECT_TRUE(parity(t, [&](const Array& a) { return fn(a, {-1}, false, {}); }, y)) << "n " << n;
      }
    }
  }
  // Sums and products over an empty axis: 0 and 1 on both devices.
  Array e = rand_array({0, 5}, 3);
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return sum(a, {0}); }, e));
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return prod(a, {0}); }, e));
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return sum(a, {1}); }, e));
  // NaN propagates through max/min; mean = sum * 1/n.
  Array nan_row = Array::from(std::vector<float>{1, kNaN, 3, -kInf, 2, 0, kInf, 5}, {2, 4});
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return max(a, {-1}); }, nan_row));
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return min(a, {-1}); }, nan_row));
  EXPECT_TRUE(parity(kTolArith, [](const Array& a) { return mean(a, {1, 2}); }, rand_array({4, 6, 9}, 4)));
  EXPECT_TRUE(parity(kTolArith, [](const Array& a) { return mean(a, {0}); }, rand_ints({4, 6}, 5, Dtype::i32, -9, 9)));
}

TEST(CudaReduce, ArgmaxArgmin) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::u8}) {
    SCOPED_TRACE(std::string(name(dt)));
    // Few distinct values: many ties, which must resolve to the first index as on the CPU.
    Array x = rand_ints({3, 5, 7}, 1, dt, 0, 4);
    for (int axis : {0, 1, 2}) {
      EXPECT_TRUE(parity(kExact, [&](const Array& a) { return argmax(a, axis); }, x));
      EXPECT_TRUE(parity(kExact, [&](const Array& a) { return argmin(a, axis, true); }, x));
    }
    for (int64_t n : kRowLengths) {
      Array y = rand_ints({2, n}, 2, dt, 0, 50);
      EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmax(a); }, y)) << "n " << n;
      EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmin(a); }, y)) << "n " << n;
    }
  }
  // Vocab-sized logits: one long row.
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmax(a); }, rand_array({1, 151936}, 3, Dtype::bf16)));
  // NaN: ignored, except at index 0 where the CPU's scan never moves off it.
  Array nan_rows = Array::from(std::vector<float>{kNaN, 1, 5, 2, 3, kNaN, 7, 7, 1, 2, kNaN, -1, kNaN, kNaN, kNaN, kNaN,
                                                  -kInf, -kInf, kNaN, -kInf},
                               {5, 4});
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmax(a); }, nan_rows));
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmin(a); }, nan_rows));
  // The same on long rows, which the GPU splits across blocks: NaN first in row 0, scattered NaN
  // and many ties elsewhere.
  std::vector<float> v = rand_ints({3, 50000}, 4, Dtype::f32, 0, 20).to_vector<float>();
  v[0] = kNaN;
  for (size_t i = 7; i < v.size(); i += 977) v[i] = kNaN;
  Array long_rows = Array::from(v, {3, 50000});
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmax(a); }, long_rows));
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return argmin(a); }, long_rows));
}

TEST(CudaReduce, SoftmaxAndLogsumexp) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32}) {
    SCOPED_TRACE(std::string(name(dt)));
    Dtype out_dt = is_floating(dt) ? dt : Dtype::f32;
    double tol = tol_for(out_dt, true);
    Array x = is_floating(dt) ? rand_array({3, 5, 7}, 1, dt, -5, 5) : rand_ints({3, 5, 7}, 1, dt, -5, 5);
    for (int axis : {-1, 0, 1}) {
      EXPECT_TRUE(parity(tol, [&](const Array& a) { return softmax(a, axis); }, x));
      EXPECT_TRUE(parity(tol, [&](const Array& a) { return logsumexp(a, axis); }, x));
      EXPECT_TRUE(parity(tol, [&](const Array& a) { return logsumexp(a, axis, true); }, swapaxes(x, 0, 2)));
    }
    for (int64_t n : kRowLengths) {
      Array y = is_floating(dt) ? rand_array({3, n}, 2, dt, -8, 8) : rand_ints({3, n}, 2, dt, -8, 8);
      double t = n > 1000 && out_dt == Dtype::f32 ? (is_floating(dt) ? kTolLongSum : kTolLongEqualSum) : tol;
      EXPECT_TRUE(parity(t, [](const Array& a) { return softmax(a); }, y)) << "n " << n;
      EXPECT_TRUE(parity(t, [](const Array& a) { return logsumexp(a); }, y)) << "n " << n;
    }
  }
  // Masked rows: -inf entries, a fully masked row (NaN softmax, -inf logsumexp), an inf entry.
  Array masked = Array::from(std::vector<float>{0, -kInf, 1, 2, -kInf, -kInf, -kInf, -kInf, 1, kInf, 0, 3}, {3, 4});
  EXPECT_TRUE(parity(kTolTrans, [](const Array& a) { return softmax(a); }, masked));
  EXPECT_TRUE(parity(kTolTrans, [](const Array& a) { return logsumexp(a); }, masked));
  EXPECT_TRUE(parity(kExact, [](const Array& a) { return softmax(a); }, rand_array({0, 7}, 3)));
}

// ---------------------------------------------------------------- take

TEST(CudaTake, IndexDtypesAxesAndLayouts) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::i8, Dtype::i64}) {
    SCOPED_TRACE(std::string(name(dt)));
    Array table = rand_array({10, 6}, 1, dt, -50, 50);
    Array idx = Array::from(std::vector<int32_t>{0, 9, -1, 3, -10, 4, 4, 7, 2, 1, 0, 5}, {3, 4});
    for (Dtype it : {Dtype::i32, Dtype::i64, Dtype::i16, Dtype::i8}) {
      Array ix = astype(idx, it);
      EXPECT_TRUE(parity(kExact, [&](const Array& t) { return take(t, ix, 0); }, table));
      EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); }, table, ix));
      EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); }, table, transpose(ix)));
    }
    Array uidx = Array::from(std::vector<uint32_t>{5, 0, 3}, {3});
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 1); }, table, uidx));
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); }, transpose(table),
                       astype(uidx, Dtype::u8)));
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); }, table,
                       Array::from(std::vector<bool>{true, false, true}, {3})));
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); }, table,
                       Array::from(std::vector<int32_t>{}, {0})));
    // A 3-d table along a middle axis (inner rows of 3 elements).
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 1); },
                       rand_array({2, 7, 3}, 2, dt), Array::from(std::vector<int32_t>{6, -7, 2, 2}, {2, 2})));
  }
  // Embedding lookups: long rows (16-byte units, block per index) in bf16 and f32.
  for (Dtype dt : {Dtype::bf16, Dtype::f32}) {
    Array emb = rand_array({1000, 4096}, 3, dt);
    Array tokens = Array::from(std::vector<int32_t>{17, 999, 0, 17, 512, 3, -1}, {7});
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); }, emb, tokens));
    EXPECT_TRUE(parity(kExact, [](const Array& t, const Array& i) { return take(t, i, 0); },
                       slice_axis(rand_array({50, 131}, 4, dt), 1, 0, 130),
                       Array::from(std::vector<int32_t>{42, 0, -50}, {3})));
  }
}

TEST(CudaTake, DeviceIndicesOutOfRangeAreClamped) {
  LOOM_REQUIRE_CUDA();
  // Device indices are not validated on the host; the kernel wraps negatives once and clamps.
  Array table = rand_array({10, 5}, 1);
  Array bad = Array::from(std::vector<int32_t>{100, -100, 10, -11, 3}, {5});
  Array clamped = Array::from(std::vector<int32_t>{9, 0, 9, 0, 3}, {5});
  Array g = take(on_gpu(table), on_gpu(bad), 0);
  EXPECT_TRUE(gpu_matches_cpu(g, take(table, clamped, 0), kExact));
}

}  // namespace
}  // namespace loom
