// CUDA parity of the recurrent scans (loom/ops/ssm.h): each op on the GPU against the same op on the
// CPU (itself checked against the step-by-step twins in tests/ops/ssm_test.cpp), for the step kernels
// (chunk 0, decode L = 1 and prefill) and the chunked matmul forms, with an initial state and a
// left-padded row, in f32, bf16 and f16, at state rows that cross the kernels' dispatch points
// (entries per lane 1, 2, 4, 8: N or Dk of 16, 64, 128, 256). Small operands (A, D, left_padding,
// conv weight) stay on the host, so the ops' upload of small host arrays is exercised too.
#include "loom/ops/ssm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom {
namespace {

using fast::ScanResult;
using test::gpu_matches_cpu;
using test::on_gpu;
using test::rand_array;

// f32: the same recurrence with warp-sum instead of sequential reductions (a few ulps; 1e-5), and
// for the chunked forms cuBLAS vs OpenBLAS summation order compounded over the chunks (1e-4,
// DESIGN.md's f32 row). Half outputs: one rounding of nearly equal f32 values, so 1e-2 of max|cpu|.
constexpr double kTolStep = 1e-5;
constexpr double kTolChunk = 1e-4;
constexpr double kTolHalf = 1e-2;

const Dtype kDtypes[] = {Dtype::f32, Dtype::bf16, Dtype::f16};

double tol(Dtype dt, int64_t chunk) { return dt != Dtype::f32 ? kTolHalf : chunk > 0 ? kTolChunk : kTolStep; }

Array padding(int64_t p) { return Array::from(std::vector<int32_t>{0, static_cast<int32_t>(p)}, {2}); }
Array l2_normalize(const Array& a) { return a * rsqrt(sum(square(a), {-1}, true) + 1e-6); }

void expect_parity(const ScanResult& gpu, const ScanResult& cpu, double tol_y, double tol_state) {
  EXPECT_TRUE(gpu_matches_cpu(gpu.y, cpu.y, tol_y)) << "y";
  EXPECT_TRUE(gpu_matches_cpu(gpu.state, cpu.state, tol_state)) << "state";
}

std::string trace(Dtype dt, int64_t L, int64_t n, int64_t chunk) {
  return std::string(name(dt)) + " L=" + std::to_string(L) + " n=" + std::to_string(n) +
         " chunk=" + std::to_string(chunk);
}

TEST(CudaSsm, CausalConv1dMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (int64_t L : {1, 7, 130}) {
      SCOPED_TRACE(trace(dt, L, 0, 0));
      Array x = rand_array({2, L, 200}, 1, dt), w = rand_array({200, 4}, 2, dt), b = rand_array({200}, 3, dt);
      Array st = rand_array({2, 3, 200}, 4, dt);
      Array lp = padding(L == 1 ? 1 : L / 2);
      ScanResult cpu = fast::causal_conv1d(x, w, b, st, lp);
      ScanResult gpu = fast::causal_conv1d(on_gpu(x), w, b, on_gpu(st), lp);
      expect_parity(gpu, cpu, tol(dt, 0), 0.0);  // the state is copied input rows: exact
      ScanResult cpu0 = fast::causal_conv1d(x, w, Array(), Array());
      expect_parity(fast::causal_conv1d(on_gpu(x), w, Array(), Array()), cpu0, tol(dt, 0), 0.0);
    }
  }
}

TEST(CudaSsm, SelectiveScanMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (int64_t N : {16, 64}) {
      for (int64_t L : {1, 9, 70}) {
        SCOPED_TRACE(trace(dt, L, N, 0));
        const int64_t Di = 37;
        Array x = rand_array({2, L, Di}, 10, dt), dtv = rand_array({2, L, Di}, 11, Dtype::f32, 0.01f, 1.0f);
        Array A = rand_array({Di, N}, 12, Dtype::f32, -2.0f, -0.5f), D = rand_array({Di}, 13);
        Array Bm = rand_array({2, L, N}, 14, dt), Cm = rand_array({2, L, N}, 15, dt);
        Array st = rand_array({2, Di, N}, 16);
        Array lp = padding(L == 1 ? 1 : L / 2);
        ScanResult cpu = fast::selective_scan(x, dtv, A, Bm, Cm, D, st, lp);
        ScanResult gpu = fast::selective_scan(on_gpu(x), on_gpu(dtv), A, on_gpu(Bm), on_gpu(Cm), D, on_gpu(st), lp);
        expect_parity(gpu, cpu, tol(dt, 0), kTolStep);
      }
    }
  }
}

TEST(CudaSsm, SsdScanMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (int64_t N : {16, 128, 256}) {
      for (int64_t L : {1, 9, 130}) {
        const int64_t H = 6, G = 2, P = 8;
        Array x = rand_array({2, L, H, P}, 20, dt), dtv = rand_array({2, L, H}, 21, Dtype::f32, 0.01f, 1.0f);
        Array A = rand_array({H}, 22, Dtype::f32, -4.0f, -0.05f), D = rand_array({H}, 23);
        Array Bm = rand_array({2, L, G, N}, 24, dt), Cm = rand_array({2, L, G, N}, 25, dt);
        Array st = rand_array({2, H, P, N}, 26);
        Array lp = padding(L == 1 ? 1 : L / 2);
        for (int64_t chunk : {0, 16, 64}) {
          SCOPED_TRACE(trace(dt, L, N, chunk));
          ScanResult cpu = fast::ssd_scan(x, dtv, A, Bm, Cm, D, st, lp, chunk);
          ScanResult gpu = fast::ssd_scan(on_gpu(x), on_gpu(dtv), A, on_gpu(Bm), on_gpu(Cm), D, on_gpu(st), lp, chunk);
          expect_parity(gpu, cpu, tol(dt, chunk), chunk > 0 ? kTolChunk : kTolStep);
        }
      }
    }
  }
}

TEST(CudaSsm, GatedDeltaRuleMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (int64_t Dk : {32, 128}) {
      for (bool per_channel : {false, true}) {
        for (int64_t L : {1, 9, 130}) {
          const int64_t Hk = 2, Hv = 4, Dv = 24;
          Shape gs = per_channel ? Shape{2, L, Hv, Dk} : Shape{2, L, Hv};
          Array q = astype(l2_normalize(rand_array({2, L, Hk, Dk}, 30)), dt);
          Array k = astype(l2_normalize(rand_array({2, L, Hk, Dk}, 31)), dt);
          Array v = rand_array({2, L, Hv, Dv}, 32, dt);
          Array g = exp(negative(rand_array(gs, 33, Dtype::f32, 0.0f, 2.0f)));
          Array beta = rand_array({2, L, Hv}, 34, dt, 0.0f, 1.0f);
          Array st = rand_array({2, Hv, Dv, Dk}, 35, Dtype::f32, -0.5f, 0.5f);
          Array lp = padding(L == 1 ? 1 : L / 2);
          for (int64_t chunk : {0, 16, 64}) {
            SCOPED_TRACE(trace(dt, L, Dk, chunk) + (per_channel ? " per-channel g" : ""));
            ScanResult cpu = fast::gated_delta_rule(q, k, v, g, beta, st, lp, chunk);
            ScanResult gpu =
                fast::gated_delta_rule(on_gpu(q), on_gpu(k), on_gpu(v), on_gpu(g), on_gpu(beta), on_gpu(st), lp, chunk);
            expect_parity(gpu, cpu, tol(dt, chunk), chunk > 0 ? kTolChunk : kTolStep);
          }
        }
      }
    }
  }
}

TEST(CudaSsm, LinearScanMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (int64_t L : {1, 9, 130}) {
      SCOPED_TRACE(trace(dt, L, 0, 0));
      Array a = rand_array({2, L, 300}, 40, dt, 0.0f, 1.0f), x = rand_array({2, L, 300}, 41, dt);
      Array st = rand_array({2, 300}, 42);
      Array lp = padding(L == 1 ? 1 : L / 2);
      ScanResult cpu = fast::linear_scan(a, x, st, lp);
      expect_parity(fast::linear_scan(on_gpu(a), on_gpu(x), on_gpu(st), lp), cpu, tol(dt, 0), kTolStep);
    }
  }
}

// The GPU's chunked forms against its own step kernels (as on the CPU): a Mamba-2-sized scan.
TEST(CudaSsm, ChunkedEqualsStepOnGpu) {
  LOOM_REQUIRE_CUDA();
  const int64_t L = 300, H = 24, P = 64, N = 128;
  Array x = on_gpu(rand_array({1, L, H, P}, 50)), dtv = on_gpu(rand_array({1, L, H}, 51, Dtype::f32, 0.001f, 0.1f));
  Array A = rand_array({H}, 52, Dtype::f32, -8.0f, -1.0f), D = rand_array({H}, 53);
  Array Bm = on_gpu(rand_array({1, L, 1, N}, 54)), Cm = on_gpu(rand_array({1, L, 1, N}, 55));
  ScanResult step = fast::ssd_scan(x, dtv, A, Bm, Cm, D, Array(), {}, 0);
  ScanResult chunked = fast::ssd_scan(x, dtv, A, Bm, Cm, D, Array(), {}, 64);
  EXPECT_TRUE(test::all_close(test::on_cpu(chunked.y), test::on_cpu(step.y), kTolChunk));
  EXPECT_TRUE(test::all_close(test::on_cpu(chunked.state), test::on_cpu(step.state), kTolChunk));
}

TEST(CudaSsm, RejectsStateRowsPast256) {
  LOOM_REQUIRE_CUDA();
  Array x = on_gpu(rand_array({1, 1, 2, 2}, 1)), dtv = on_gpu(rand_array({1, 1, 2}, 2, Dtype::f32, 0.1f, 0.2f));
  Array Bm = on_gpu(rand_array({1, 1, 1, 300}, 3));
  EXPECT_THROW(fast::ssd_scan(x, dtv, rand_array({2}, 4, Dtype::f32, -1, -0.5f), Bm, Bm, Array(), Array(), {}, 0),
               NotSupportedError);
}

}  // namespace
}  // namespace loom
