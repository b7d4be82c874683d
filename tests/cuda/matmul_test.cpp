// CUDA parity of matmul (backend/cuda/matmul.cu), gather_mm and argpartition/argsort
// (backend/cuda/gather_mm.cu) against their CPU twins, on the same views on both devices. Shapes cross the
// CUDA dispatch points: the decode GEMV (M <= 8 with weight rows; 1, 2, 4 and 8 row tiles; 16-byte and
// scalar paths) versus cuBLAS (M >= 9, row-major weights, mixed dtypes in f32 panels), odd K and N,
// broadcast batch dims, grouped products (matmuls_t, swiglu_matmul_t), and the shared-memory versus
// radix-sort argsort.
// Tolerances (max |diff| / max |cpu|): f32 1e-5 for K <= 512, 2e-5 beyond; 1e-2 with a half output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom::test {
namespace {

double tol_for(Dtype out, int64_t k) {
  if (out != Dtype::f32) return 1e-2;
  return k <= 512 ? 1e-5 : 2e-5;
}

std::string desc(const Array& a, const Array& b) {
  return "a " + shape_str(a.shape()) + " " + std::string(name(a.dtype())) + " strides " + shape_str(a.strides()) +
         " @ b " + shape_str(b.shape()) + " " + std::string(name(b.dtype())) + " strides " + shape_str(b.strides());
}

// matmul on the CPU and on the GPU over the same views; GPU within tol of the CPU twin.
void expect_matmul_parity(const Array& a, const Array& b) {
  Array cpu = matmul(a, b);
  Array gpu = matmul(on_gpu(a), on_gpu(b));
  EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, tol_for(cpu.dtype(), a.shape(-1)))) << desc(a, b);
}

// Weight rows: W [N, K] row-major seen as [K, N] (the Linear layout).
Array weight_rows(int64_t k, int64_t n, uint32_t seed, Dtype dt) { return transpose(rand_array({n, k}, seed, dt)); }

const Dtype kFloats[] = {Dtype::f32, Dtype::bf16, Dtype::f16};

TEST(CudaMatmul, DecodeGemvMatchesCpuForEveryDtypePair) {
  LOOM_REQUIRE_CUDA();
  for (Dtype xd : kFloats)
    for (Dtype wd : kFloats)
      for (int64_t m : {1, 2, 3, 5, 8})
        for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{{200, 37}, {64, 1}, {1, 5}, {520, 24}}) {
          Array a = rand_array({m, k}, static_cast<uint32_t>(m * 7 + k), xd);
          Array b = weight_rows(k, n, static_cast<uint32_t>(n * 3 + k), wd);
          expect_matmul_parity(a, b);
        }
}

TEST(CudaMatmul, DecodeGemvLargeKAndOddRows) {
  LOOM_REQUIRE_CUDA();
  for (Dtype wd : {Dtype::bf16, Dtype::f16, Dtype::f32})
    for (Dtype xd : {Dtype::f32, wd})
      for (int64_t m : {1, 3, 8}) {
        expect_matmul_parity(rand_array({m, 4096}, 11, xd), weight_rows(4096, 1000, 12, wd));
        // K = 201: rows are not 16-byte aligned, so the kernel takes its scalar path.
        expect_matmul_parity(rand_array({m, 201}, 13, xd), weight_rows(201, 77, 14, wd));
      }
}

TEST(CudaMatmul, GemvOnStridedActivationsAndGappedWeights) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kFloats) {
    // Activation rows with gaps, weight rows with gaps (a wider buffer sliced, then transposed).
    Array a = rand_gapped({3, 256}, 21, dt);
    Array w = rand_gapped({45, 256}, 22, dt);
    expect_matmul_parity(a, transpose(w));
    // Column-major activations (not GEMV-eligible: cuBLAS path).
    expect_matmul_parity(rand_swapped({4, 96}, 23, 0, 1, dt), weight_rows(96, 33, 24, dt));
    // A 1-d activation vector (numpy semantics).
    expect_matmul_parity(rand_array({300}, 25, dt), weight_rows(300, 19, 26, dt));
  }
}

// matmuls_t / swiglu_matmul_t: decode shapes run as one GEMV launch over all weights' row blocks (3 weights
// with odd N, so blocks end mid-segment; model sizes where the warps of a block split K and where they do
// not), M = 1..8 and 33 (separate cuBLAS calls), every dtype; against the CPU twin (separate matmuls) with
// matmul's tolerances; a swiglu of two products that may each land one half-precision step apart: 2e-2.
TEST(CudaMatmul, GroupedGemvMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  struct Case {
    std::vector<int64_t> n;
    int64_t k;
  };
  for (const Case& c : std::vector<Case>{{{37, 5, 130}, 640}, {{2048, 512, 512}, 2048}, {{4096, 1024, 1024}, 4096}})
    for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16})
      for (int64_t m : {1, 2, 3, 5, 8, 33}) {
        if (c.k > 640 && (m == 33 || m == 5 || dt == Dtype::f16)) continue;  // size: the common cases
        SCOPED_TRACE(std::string(name(dt)) + " K " + std::to_string(c.k) + " N0 " + std::to_string(c.n[0]) + " M " +
                     std::to_string(m));
        std::vector<Array> ws, gws;
        for (size_t i = 0; i < c.n.size(); ++i) {
          ws.push_back(rand_array({c.n[i], c.k}, static_cast<uint32_t>(3 * i + c.k), dt));
          gws.push_back(on_gpu(ws.back()));
        }
        Array x = rand_array({1, m, c.k}, static_cast<uint32_t>(m + c.k), dt);
        std::vector<Array> cpu = matmuls_t(x, ws), gpu = matmuls_t(on_gpu(x), gws);
        for (size_t i = 0; i < cpu.size(); ++i)
          EXPECT_TRUE(gpu_matches_cpu(gpu[i], cpu[i], tol_for(cpu[i].dtype(), c.k))) << "product " << i;
        Array up = rand_array({c.n[0], c.k}, 99, dt);
        Array sc = swiglu_matmul_t(x, ws[0], up), sg = swiglu_matmul_t(on_gpu(x), gws[0], on_gpu(up));
        EXPECT_TRUE(gpu_matches_cpu(sg, sc, dt == Dtype::f32 ? tol_for(dt, c.k) : 2e-2)) << "swiglu";
      }
}

TEST(CudaMatmul, CublasPathMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype xd : kFloats)
    for (Dtype wd : kFloats)
      for (int64_t m : {1, 9, 64, 130})
        for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{{200, 37}, {33, 130}}) {
          const uint32_t seed = static_cast<uint32_t>(m + 31 * k + n);
          Array a = rand_array({m, k}, seed, xd);
          expect_matmul_parity(a, weight_rows(k, n, seed + 1, wd));       // transposed weights
          expect_matmul_parity(a, rand_array({k, n}, seed + 2, wd));      // row-major weights
          expect_matmul_parity(a, rand_gapped({k, n}, seed + 3, wd));     // row-major with row gaps
          expect_matmul_parity(rand_swapped({m, k}, seed + 4, 0, 1, xd),  // column-major activations
                               rand_array({k, n}, seed + 5, wd));
        }
}

TEST(CudaMatmul, LargeKPrefillMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype wd : kFloats) {
    expect_matmul_parity(rand_array({64, 4096}, 31, Dtype::f32), weight_rows(4096, 1000, 32, wd));
    expect_matmul_parity(rand_array({9, 4096}, 33, wd), weight_rows(4096, 1000, 34, wd));
  }
}

TEST(CudaMatmul, BatchedAndBroadcastBatches) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kFloats)
    for (int64_t m : {1, 3, 9, 64}) {
      const uint32_t seed = static_cast<uint32_t>(m * 5);
      // Shared 2-d weight broadcast over [2, 3] batches (zero batch strides on b).
      expect_matmul_parity(rand_array({2, 3, m, 200}, seed, dt), weight_rows(200, 37, seed + 1, dt));
      // Per-batch transposed weights [4, N, K] seen as [4, K, N].
      expect_matmul_parity(rand_array({4, m, 72}, seed + 2, dt),
                           swapaxes(rand_array({4, 40, 72}, seed + 3, dt), -1, -2));
      // Broadcast on both sides: [3, 1] x [1, 4] batch dims.
      expect_matmul_parity(rand_array({3, 1, m, 48}, seed + 4, dt), rand_array({1, 4, 48, 21}, seed + 5, dt));
      // Activations broadcast against a batch of weights.
      expect_matmul_parity(rand_array({m, 64}, seed + 6, dt), swapaxes(rand_array({5, 17, 64}, seed + 7, dt), -1, -2));
      // Batch dims that do not merge (a sliced batch axis).
      Array wide = rand_array({2, 6, m, 40}, seed + 8, dt);
      expect_matmul_parity(slice_axis(wide, 1, 1, 4), rand_array({2, 3, 40, 13}, seed + 9, dt));
    }
  // Mixed dtypes in a batch (f32 activations with bf16 weights broadcast over the batch).
  expect_matmul_parity(rand_array({2, 3, 17, 96}, 41, Dtype::f32), weight_rows(96, 50, 42, Dtype::bf16));
  expect_matmul_parity(rand_array({2, 17, 96}, 43, Dtype::bf16), rand_array({2, 96, 50}, 44, Dtype::f16));
}

TEST(CudaMatmul, EmptyInnerDimensionGivesZeros) {
  LOOM_REQUIRE_CUDA();
  Array a = zeros({3, 0}), b = zeros({0, 5});
  Array gpu = matmul(on_gpu(a), on_gpu(b));
  EXPECT_TRUE(gpu_matches_cpu(gpu, matmul(a, b), 0.0));
}

// --- gather_mm

Array rand_indices(int64_t n, int hi, uint32_t seed, bool sorted) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(g() % hi);
  if (sorted) std::sort(v.begin(), v.end());
  return Array::from(v, {n});
}

void expect_gather_parity(const Array& a, const Array& b, const Array& lhs, const Array& rhs, const std::string& what) {
  Array cpu = gather_mm(a, b, lhs, rhs);
  Array gpu = gather_mm(on_gpu(a), on_gpu(b), on_gpu(lhs), on_gpu(rhs));
  EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, tol_for(cpu.dtype(), a.shape(-1)))) << what << ": " << desc(a, b);
}

TEST(CudaGatherMM, ExpertWeightRowsMatchCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype xd : kFloats)
    for (Dtype wd : kFloats)
      for (int64_t m : {1, 3, 9}) {
        // a [P, M, K] against experts [E, N, K] seen as [E, K, N]; P = 13 tokens, 6 experts.
        const uint32_t seed = static_cast<uint32_t>(m * 17);
        Array a = rand_array({13, m, 200}, seed, xd);
        Array w = swapaxes(rand_array({6, 37, 200}, seed + 1, wd), -1, -2);
        for (bool sorted : {false, true}) {
          Array lhs = rand_indices(20, 13, seed + 2, false), rhs = rand_indices(20, 6, seed + 3, sorted);
          expect_gather_parity(a, w, lhs, rhs, "weight rows, M " + std::to_string(m));
        }
      }
}

TEST(CudaGatherMM, RowMajorAndLargeKMatchCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kFloats)
    for (int64_t m : {1, 3, 70}) {
      const uint32_t seed = static_cast<uint32_t>(m * 3 + 1);
      // Row-major stacked weights [E, K, N]: the tiled kernel for every M.
      Array a = rand_array({4, m, 67}, seed, dt);
      Array w = rand_array({5, 67, 130}, seed + 1, dt);
      expect_gather_parity(a, w, rand_indices(9, 4, seed + 2, false), rand_indices(9, 5, seed + 3, true), "row-major");
      // Transposed experts with M > 8 (tiled kernel reading K-contiguous weights) and a long K.
      Array a2 = rand_array({3, m, 1030}, seed + 4, dt);
      Array w2 = swapaxes(rand_array({4, 65, 1030}, seed + 5, dt), -1, -2);
      expect_gather_parity(a2, w2, rand_indices(7, 3, seed + 6, false), rand_indices(7, 4, seed + 7, false), "long K");
    }
}

// --- argpartition / argsort

// Rows with many ties (values on a coarse grid, including -0 and +0) so the (value, index) order matters.
Array tie_rows(int64_t rows, int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> v(rows * n);
  for (auto& x : v) {
    int q = static_cast<int>(g() % 9) - 4;
    x = q == 0 ? ((g() & 1) ? -0.0f : 0.0f) : 0.25f * static_cast<float>(q);
  }
  return Array::from(v, {rows, n});
}

TEST(CudaArgsort, FullSortEqualsCpuExactly) {
  LOOM_REQUIRE_CUDA();
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{5, 8}, {33, 64}, {3, 100}, {2, 4096}, {3, 5000}}) {
    for (bool ties : {false, true}) {
      Array x = ties ? tie_rows(rows, n, static_cast<uint32_t>(n)) : rand_array({rows, n}, static_cast<uint32_t>(n));
      Array cpu = argsort(x, -1);
      Array gpu = argsort(on_gpu(x), -1);
      ASSERT_EQ(gpu.dtype(), cpu.dtype());
      EXPECT_EQ(on_cpu(gpu).to_vector<int64_t>(), cpu.to_vector<int64_t>()) << rows << " x " << n << " ties " << ties;
    }
  }
  // Along a non-last axis (the op moves it last).
  Array x = tie_rows(40, 6, 7);
  EXPECT_EQ(on_cpu(argsort(on_gpu(x), 0)).to_vector<int64_t>(), argsort(x, 0).to_vector<int64_t>());
}

TEST(CudaArgpartition, LeadingEntriesEqualCpu) {
  LOOM_REQUIRE_CUDA();
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{64, 8}, {7, 60}, {2, 6000}})
    for (int64_t kth : {int64_t{0}, int64_t{1}, n / 2, n - 1}) {
      Array x = tie_rows(rows, n, static_cast<uint32_t>(n + kth));
      auto cpu = argpartition(x, static_cast<int>(kth), -1).to_vector<int64_t>();
      auto gpu = on_cpu(argpartition(on_gpu(x), static_cast<int>(kth), -1)).to_vector<int64_t>();
      ASSERT_EQ(gpu.size(), cpu.size());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i <= kth; ++i)
          ASSERT_EQ(gpu[r * n + i], cpu[r * n + i]) << "row " << r << " entry " << i << " kth " << kth << " n " << n;
    }
}

}  // namespace
}  // namespace loom::test
