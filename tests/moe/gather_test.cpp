// gather_mm against its twin (take + matmul) on odd shapes crossing the kernel's thresholds (SIMD
// width 16 along K, 64-column blocks along N, threading), every weight dtype, transposed stacked
// weights and row-major operands; argpartition / argsort / take_along_axis on hand-made rows.
#include <gtest/gtest.h>

#include <random>

#include "loom/common/error.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"

namespace loom::test {
namespace {

Array randn(const Shape& shape, uint32_t seed, Dtype dt = Dtype::f32) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(shape_size(shape));
  for (auto& x : v) x = d(g);
  return astype(Array::from(v, shape), dt);
}

Array randint(const Shape& shape, int hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(shape_size(shape));
  for (auto& x : v) x = static_cast<int32_t>(g() % hi);
  return Array::from(v, shape);
}

void expect_close(const Array& got, const Array& want, double tol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  auto g = astype(got, Dtype::f32).to_float_vector(), w = astype(want, Dtype::f32).to_float_vector();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double d = std::abs(g[i] - w[i]) / (1.0 + std::abs(w[i]));
    if (d > worst) worst = d, at = i;
  }
  EXPECT_LT(worst, tol) << what << ": worst at " << at << " got " << g[at] << " want " << w[at];
}

TEST(GatherMM, SwitchLayoutMatchesTwinForEveryWeightDtype) {
  // x [3, 5, 1, 1, 37] against experts w [7, 130, 37] (used transposed), indices [3, 5, 2].
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16}) {
    Array x = randn({3, 5, 1, 1, 37}, 1);
    Array w = randn({7, 130, 37}, 2, dt);
    Array idx = randint({3, 5, 2}, 7, 3);
    Array wt = swapaxes(w, -1, -2);
    Array got = gather_mm(x, wt, {}, idx);
    EXPECT_EQ(got.shape(), (Shape{3, 5, 2, 1, 130}));
    EXPECT_EQ(got.dtype(), Dtype::f32);
    expect_close(got, detail::gather_mm_reference(x, wt, {}, idx), 1e-5, "dtype " + std::string(name(dt)));
  }
}

TEST(GatherMM, SortedPathAndBf16ActivationsMatchTwin) {
  // The sorted layout: x [N*k, 1, K] with non-decreasing expert ids; bf16 in, bf16 out.
  Array x = randn({70, 1, 67}, 4, Dtype::bf16);
  Array w = randn({5, 33, 67}, 5, Dtype::bf16);
  std::vector<int32_t> ids(70);
  for (int i = 0; i < 70; ++i) ids[i] = i * 5 / 70;
  Array idx = Array::from(ids, {70});
  Array got = gather_mm(x, swapaxes(w, -1, -2), {}, idx, /*sorted_indices=*/true);
  EXPECT_EQ(got.dtype(), Dtype::bf16);
  expect_close(got, detail::gather_mm_reference(x, swapaxes(w, -1, -2), {}, idx), 1e-2, "bf16 sorted");
}

TEST(GatherMM, RowMajorOperandsWithBothIndexArraysBroadcast) {
  // a [4, 3, 9] picked by lhs [2, 1], b [6, 9, 5] (row-major) picked by rhs [1, 3] -> [2, 3, 3, 5].
  Array a = randn({4, 3, 9}, 6);
  Array b = randn({6, 9, 5}, 7);
  Array lhs = Array::from(std::vector<int32_t>{3, 0}, {2, 1});
  Array rhs = Array::from(std::vector<int32_t>{5, 1, 2}, {1, 3});
  Array got = gather_mm(a, b, lhs, rhs);
  EXPECT_EQ(got.shape(), (Shape{2, 3, 3, 5}));
  expect_close(got, detail::gather_mm_reference(a, b, lhs, rhs), 1e-5, "row-major");
  // One entry by hand: got[1, 2] = a[0] @ b[2].
  expect_close(reshape(slice(got, {1, 2, 0, 0}, {2, 3, 3, 5}), {3, 5}), matmul(reshape(slice_axis(a, 0, 0, 1), {3, 9}),
               reshape(slice_axis(b, 0, 2, 3), {9, 5})), 1e-5, "entry [1, 2]");
}

TEST(GatherMM, ManyTokensCrossTheThreadingGrain) {
  Array x = randn({300, 1, 1, 48}, 8);
  Array w = randn({16, 96, 48}, 9, Dtype::bf16);
  Array idx = randint({300, 4}, 16, 10);
  Array wt = swapaxes(w, -1, -2);
  expect_close(gather_mm(x, wt, {}, idx), detail::gather_mm_reference(x, wt, {}, idx), 1e-5, "300 tokens");
}

TEST(GatherMM, RejectsBadArguments) {
  Array a = randn({2, 1, 4}, 1), b = randn({3, 4, 5}, 2);
  EXPECT_THROW(gather_mm(a, randn({3, 5, 5}, 3), {}, Array::from(std::vector<int32_t>{0}, {1})), ValueError);
  EXPECT_THROW(gather_mm(a, b, {}, Array::from(std::vector<int32_t>{3}, {1})), ValueError);
  EXPECT_THROW(gather_mm(a, b, {}, Array::from(std::vector<float>{1}, {1})), ValueError);
}

TEST(Selection, ArgpartitionArgsortTakeAlongAxis) {
  // Row 0: [0.5, -1, 3, 0.5, 2] -> ascending order of values: 1 (-1), 0 (0.5, ties by index), 3, 4, 2.
  // Row 1: [4, 3, 2, 1, 0] -> 4, 3, 2, 1, 0.
  Array a = Array::from(std::vector<float>{0.5f, -1, 3, 0.5f, 2, 4, 3, 2, 1, 0}, {2, 5});
  EXPECT_EQ(argsort(a, -1).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 3, 4, 2, 4, 3, 2, 1, 0}));
  Array top2 = slice_axis(argpartition(negative(a), 1, -1), -1, 0, 2);  // the two largest: {2, 4} and {0, 1}
  EXPECT_EQ(top2.to_vector<int64_t>(), (std::vector<int64_t>{2, 4, 0, 1}));
  EXPECT_EQ(take_along_axis(a, top2, -1).to_float_vector(), (std::vector<float>{3, 2, 4, 3}));
  // Along axis 0: column-wise picks.
  Array rows = Array::from(std::vector<int32_t>{1, 0, 0, 1, 1}, {1, 5});
  EXPECT_EQ(take_along_axis(a, rows, 0).to_float_vector(), (std::vector<float>{4, -1, 3, 1, 0}));
  EXPECT_THROW(argpartition(a, 5, -1), ValueError);
}

}  // namespace
}  // namespace loom::test
