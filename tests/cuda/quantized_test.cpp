// CUDA parity of quantize / dequantize / quantized_matmul (backend/cuda/quantized.cu) against the CPU
// twin, for every affine width (2, 3, 4, 5, 6, 8) and group size (32, 64, 128) and for mxfp4, nvfp4 (with
// and without a global scale) and mxfp8. quantize must be bit-identical (packed words, scales, biases);
// dequantize within 1e-6 of max |cpu| (the same formula and roundings); quantized_matmul within 1e-5 for
// M in {1, 5, 33} (decode kernels for M <= 8 with W.T, f32 panels + cuBLAS otherwise), with W.T and W.
// The decode GEMV (one kernel: 2 rows per warp for M = 1, 8 or 4 rows for more; vector or word loads by
// alignment; nvfp4 rows of 16 mod 32 codes) is covered for every format and M = 1..8, with rows long enough
// for several rounds per lane, an odd number of groups per row, and output counts that are not multiples
// of a warp's rows. Its sums are the same f32 sums in another order than the twin's: within 1e-5 of max
// |cpu| (f32 outputs), one half-precision rounding apart (1e-2) for bf16/f16 outputs. Grouped products
// (quantized_matmuls, quantized_swiglu: several matrices in one launch) are covered the same way.
#include "loom/ops/quantized.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/quant.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom::test {
namespace {

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

std::vector<QuantSpec> all_specs() {
  std::vector<QuantSpec> v;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int gs : {32, 64, 128}) v.push_back({QuantMode::affine, bits, gs});
  v.push_back(default_quant_spec(QuantMode::mxfp4));
  v.push_back(default_quant_spec(QuantMode::nvfp4));
  v.push_back(default_quant_spec(QuantMode::mxfp8));
  return v;
}

std::string spec_desc(const QuantSpec& q, Dtype dt) { return quant_spec_str(q) + " w " + std::string(name(dt)); }

// quantized_matmul of the same operands on the CPU and on GPU copies: {gpu, cpu}.
std::pair<Array, Array> gpu_and_cpu(const Array& x, const QuantizedArrays& p, bool transpose, const QuantSpec& q,
                                    const Array& global_scale = Array()) {
  Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, transpose, q, global_scale);
  Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), transpose, q, global_scale);
  return {gpu, cpu};
}

// Weights whose rows differ in scale (so groups see small and large spreads), plus an all-zero row and a
// constant row to reach the quantizers' degenerate branches.
Array weights(int64_t rows, int64_t k, uint32_t seed, Dtype dt) {
  Array base = rand_array({rows, k}, seed, Dtype::f32);
  std::vector<float> v = base.to_float_vector();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) {
      float& x = v[r * k + j];
      if (r == 0)
        x = 0.0f;
      else if (r == 1)
        x = 0.375f;
      else
        x *= 0.05f * static_cast<float>(r);
    }
  return Array::from(v, {rows, k}, dt);
}

// Exact equality of two arrays of the same dtype, bit for bit (floats compared through their f32 bits,
// which is exact for bf16/f16 too).
::testing::AssertionResult bits_equal(const Array& gpu, const Array& cpu) {
  if (gpu.dtype() != cpu.dtype() || gpu.shape() != cpu.shape())
    return ::testing::AssertionFailure() << "dtype/shape " << name(gpu.dtype()) << shape_str(gpu.shape()) << " vs "
                                         << name(cpu.dtype()) << shape_str(cpu.shape());
  Array g = on_cpu(gpu);
  std::vector<uint32_t> a, b;
  if (cpu.dtype() == Dtype::u32 || cpu.dtype() == Dtype::u8) {
    a = g.to_vector<uint32_t>();
    b = cpu.to_vector<uint32_t>();
  } else {
    for (float f : g.to_float_vector()) a.push_back(std::bit_cast<uint32_t>(f));
    for (float f : cpu.to_float_vector()) b.push_back(std::bit_cast<uint32_t>(f));
  }
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i])
      return ::testing::AssertionFailure()
             << "first difference at flat " << i << " (" << index_str(cpu.shape(), static_cast<int64_t>(i))
             << "): gpu 0x" << std::hex << a[i] << " cpu 0x" << b[i];
  return ::testing::AssertionSuccess();
}

Array global_scale_for(const QuantSpec& q, bool with_global) {
  if (q.mode != QuantMode::nvfp4 || !with_global) return {};
  return Array::scalar(3.5, Dtype::f32);
}

TEST(CudaQuantize, BitIdenticalToCpu) {
  LOOM_REQUIRE_CUDA();
  for (const QuantSpec& q : all_specs())
    for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16})
      for (bool with_global : {false, true}) {
        if (with_global && q.mode != QuantMode::nvfp4) continue;
        Array w = weights(7, 384, static_cast<uint32_t>(q.bits * 100 + q.group_size), dt);
        Array g = global_scale_for(q, with_global);
        QuantizedArrays cpu = quantize(w, q, g);
        QuantizedArrays gpu = quantize(on_gpu(w), q, g);
        const std::string what = spec_desc(q, dt) + (with_global ? " global" : "");
        EXPECT_TRUE(bits_equal(gpu.wq, cpu.wq)) << what << " (packed words)";
        EXPECT_TRUE(bits_equal(gpu.scales, cpu.scales)) << what << " (scales)";
        if (cpu.biases.valid()) {
          EXPECT_TRUE(bits_equal(gpu.biases, cpu.biases)) << what << " (biases)";
        }
      }
}

TEST(CudaQuantize, StridedInputMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  // A gapped (non-contiguous) input is made contiguous by the op on each device.
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 64}, default_quant_spec(QuantMode::mxfp4)}) {
    Array w = rand_gapped({5, 256}, 3, Dtype::bf16);
    QuantizedArrays cpu = quantize(w, q);
    QuantizedArrays gpu = quantize(on_gpu(w), q);
    EXPECT_TRUE(bits_equal(gpu.wq, cpu.wq)) << quant_spec_str(q);
    EXPECT_TRUE(bits_equal(gpu.scales, cpu.scales)) << quant_spec_str(q);
  }
}

TEST(CudaDequantize, MatchesCpuForEveryOutputDtype) {
  LOOM_REQUIRE_CUDA();
  for (const QuantSpec& q : all_specs())
    for (Dtype wdt : {Dtype::f32, Dtype::bf16})
      for (Dtype odt : {Dtype::f32, Dtype::bf16, Dtype::f16}) {
        Array w = weights(6, 256, static_cast<uint32_t>(q.bits + q.group_size), wdt);
        Array g = global_scale_for(q, true);
        QuantizedArrays p = quantize(w, q, g);
        Array cpu = dequantize(p.wq, p.scales, p.biases, q, odt, g);
        Array gpu = dequantize(on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), q, odt, g);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-6)) << spec_desc(q, wdt) << " -> " << name(odt);
      }
}

TEST(CudaQuantizedMatmul, MatchesCpuWithAndWithoutTranspose) {
  LOOM_REQUIRE_CUDA();
  for (const QuantSpec& q : all_specs())
    for (int64_t m : {1, 5, 33}) {
      const uint32_t seed = static_cast<uint32_t>(q.bits * 1000 + q.group_size * 10 + m);
      Array g = global_scale_for(q, true);
      // W.T: wq [N, K] with N = 37 output columns, K = 256.
      {
        QuantizedArrays p = quantize(weights(37, 256, seed, Dtype::f32), q, g);
        Array x = rand_array({m, 256}, seed + 1);
        auto [gpu, cpu] = gpu_and_cpu(x, p, true, q, g);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " transpose M " << m;
      }
      // W: wq [K, N] with K = 40 inner rows, N = 128 outputs.
      {
        QuantizedArrays p = quantize(weights(40, 128, seed + 2, Dtype::f32), q, g);
        Array x = rand_array({m, 40}, seed + 3);
        auto [gpu, cpu] = gpu_and_cpu(x, p, false, q, g);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " no transpose M " << m;
      }
    }
}

TEST(CudaQuantizedMatmul, DecodeShapesMatchCpu) {
  LOOM_REQUIRE_CUDA();
  // Long rows (several packs per thread), half-precision scales, a leading batch dim on x, and nvfp4 rows of
  // 16 mod 32 codes (the kernel's half-pack tail).
  for (const QuantSpec& q :
       {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 3, 32}, QuantSpec{QuantMode::affine, 8, 128},
        default_quant_spec(QuantMode::mxfp4), default_quant_spec(QuantMode::mxfp8)})
    for (int64_t m : {1, 2, 4, 8}) {
      QuantizedArrays p = quantize(weights(300, 4096, static_cast<uint32_t>(q.bits + m), Dtype::bf16), q);
      Array x = rand_array({1, m, 4096}, static_cast<uint32_t>(m));
      auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 2e-5)) << quant_spec_str(q) << " M " << m;
    }
  // K = 2112 (66 packs): 2 warps share each row group, and N = 130 gives 65 groups, so the last block's
  // second pair of warps has no group and exits before the others' barrier.
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 64}, default_quant_spec(QuantMode::mxfp8)}) {
    QuantizedArrays p = quantize(weights(130, 2112, static_cast<uint32_t>(q.bits + 30), Dtype::bf16), q);
    Array x = rand_array({1, 2112}, 31);
    auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
    EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 2e-5)) << quant_spec_str(q) << " N 130 K 2112";
  }
  // Many output rows: one warp per row group (fewer rows share each group among a block's warps).
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 32}, default_quant_spec(QuantMode::nvfp4)})
    for (int64_t m : {1, 3, 6}) {
      QuantizedArrays p = quantize(weights(9000, 256, static_cast<uint32_t>(m + 40), Dtype::f32), q);
      Array x = rand_array({m, 256}, static_cast<uint32_t>(m + 41));
      auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " N 9000 M " << m;
    }
  const QuantSpec nv = default_quant_spec(QuantMode::nvfp4);
  for (int64_t m : {1, 3, 12}) {
    Array g = global_scale_for(nv, true);
    QuantizedArrays p = quantize(weights(21, 272, static_cast<uint32_t>(m + 5), Dtype::f32), nv, g);
    Array x = rand_array({m, 272}, static_cast<uint32_t>(m + 6));
    auto [gpu, cpu] = gpu_and_cpu(x, p, true, nv, g);
    EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << "nvfp4 K 272 M " << m;
  }
  // bf16 activations: the op computes in f32 and returns bf16.
  QuantSpec q{QuantMode::affine, 4, 32};
  QuantizedArrays p = quantize(weights(50, 512, 9, Dtype::bf16), q);
  Array x = rand_array({3, 512}, 10, Dtype::bf16);
  auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
  EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-2));
}

// Activations, scales and output in every float dtype (the kernels read them as stored, no per-call
// conversion): f16 x with f32 scales, bf16 x with bf16 scales, both the decode GEMV (M 1, 7) and the
// dequantize + GEMM path (M 33). The CPU twin converts to f32 first; one rounding of the output differs
// at most, so half outputs get the half tolerance and f32 outputs the f32 one.
TEST(CudaQuantizedMatmul, HalfActivationsAndScalesAsStored) {
  LOOM_REQUIRE_CUDA();
  QuantSpec q{QuantMode::affine, 4, 64};
  for (Dtype wdt : {Dtype::f32, Dtype::bf16})
    for (Dtype xdt : {Dtype::f32, Dtype::bf16, Dtype::f16})
      for (int64_t m : {1, 7, 33}) {
        SCOPED_TRACE(std::string(name(wdt)) + " scales, " + std::string(name(xdt)) + " x, M " + std::to_string(m));
        QuantizedArrays p = quantize(weights(96, 640, 11, wdt), q);
        Array x = rand_array({m, 640}, 12, xdt);
        auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, cpu.dtype() == Dtype::f32 ? 1e-5 : 1e-2));
      }
}

// K of the long-row decode tests: an odd number of groups, near 9600 codes (300 packs: with the 4 warps
// of a block splitting a row, each lane runs 2 or 3 rounds, the last one partial).
int64_t long_k(const QuantSpec& q) { return q.group_size * ((9600 / q.group_size) | 1); }

// A copy of p.wq whose first word sits 4 bytes past a 16-byte boundary (the view starts one word into its
// buffer): 8/16-byte vector loads do not fit it, so 2/4/6/8-word packs are read a word at a time.
Array misaligned(const Array& wq) {
  std::vector<uint32_t> v = wq.to_vector<uint32_t>();
  v.insert(v.begin(), 0u);
  Array whole = Array::from(v, {static_cast<int64_t>(v.size())});
  return Array(whole.buffer(), wq.shape(), {wq.shape(1), 1}, 1, Dtype::u32);
}

TEST(CudaQuantizedMatmul, DecodeEveryFormatAndRowCount) {
  LOOM_REQUIRE_CUDA();
  // 37 output rows (not a multiple of 2, 4 or 8 rows per warp), K long (several rounds per lane), M = 1..8,
  // aligned (vector loads) and misaligned (word loads) packed rows.
  for (const QuantSpec& q : all_specs()) {
    const int64_t k = long_k(q);
    Array g = global_scale_for(q, true);
    QuantizedArrays p = quantize(weights(37, k, static_cast<uint32_t>(q.bits * 7 + q.group_size), Dtype::f32), q, g);
    Array wq_mis = misaligned(p.wq);
    for (int64_t m = 1; m <= 8; ++m) {
      Array x = rand_array({m, k}, static_cast<uint32_t>(m + 100));
      auto [gpu, cpu] = gpu_and_cpu(x, p, true, q, g);
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " K " << k << " M " << m;
      Array gpu_mis = quantized_matmul(on_gpu(x), on_gpu(wq_mis), on_gpu(p.scales), on_gpu(p.biases), true, q, g);
      EXPECT_TRUE(gpu_matches_cpu(gpu_mis, cpu, 1e-5)) << quant_spec_str(q) << " misaligned K " << k << " M " << m;
    }
  }
}

TEST(CudaQuantizedMatmul, DecodeManyRowsLongK) {
  LOOM_REQUIRE_CUDA();
  // 9000 output rows (one warp per row group, no splitting) and 1600 packs per row (50 rounds per lane);
  // nvfp4 rows of 16 mod 32 codes (a half pack at the end) at the same size.
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 8, 64},
                             QuantSpec{QuantMode::affine, 3, 128}, default_quant_spec(QuantMode::mxfp4)})
    for (int64_t m : {1, 3}) {
      QuantizedArrays p = quantize(weights(9000, 1024, static_cast<uint32_t>(q.bits + 60), Dtype::bf16), q);
      Array x = rand_array({m, 1024}, static_cast<uint32_t>(m + 61), Dtype::bf16);
      auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-2)) << quant_spec_str(q) << " N 9000 M " << m;
    }
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 32}, default_quant_spec(QuantMode::mxfp8)}) {
    QuantizedArrays p = quantize(weights(45, 51200, static_cast<uint32_t>(q.bits + 70), Dtype::f32), q);
    Array x = rand_array({2, 51200}, 71);
    auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
    EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " K 51200";
  }
  const QuantSpec nv = default_quant_spec(QuantMode::nvfp4);
  Array g = global_scale_for(nv, true);
  QuantizedArrays p = quantize(weights(300, 9616, 72, Dtype::f32), nv, g);
  Array x = rand_array({5, 9616}, 73);
  auto [gpu, cpu] = gpu_and_cpu(x, p, true, nv, g);
  EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << "nvfp4 K 9616";
}

// Every activation, scale and output dtype through the decode kernel (the loads convert x as stored, the
// scales are read as stored, the store rounds once).
TEST(CudaQuantizedMatmul, DecodeDtypes) {
  LOOM_REQUIRE_CUDA();
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 128}, QuantSpec{QuantMode::affine, 8, 32},
                             QuantSpec{QuantMode::affine, 6, 64}, default_quant_spec(QuantMode::nvfp4)})
    for (Dtype wdt : {Dtype::f32, Dtype::bf16, Dtype::f16})
      for (Dtype xdt : {Dtype::f32, Dtype::bf16, Dtype::f16})
        for (int64_t m : {1, 2, 6}) {
          SCOPED_TRACE(quant_spec_str(q) + ", " + std::string(name(wdt)) + " weights, " + std::string(name(xdt)) +
                       " x, M " + std::to_string(m));
          QuantizedArrays p = quantize(weights(70, 3840, 13, wdt), q);
          Array x = rand_array({m, 3840}, 14, xdt);
          auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
          EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, cpu.dtype() == Dtype::f32 ? 1e-5 : 1e-2));
        }
}

// The decode GEMV at 4 and 8 bits (affine, power-of-two groups >= 32, M <= 4, 16-byte aligned packed rows,
// what mlx-community ships) over every group size, M = 1..4, 37 output rows, K from one group up to 8192
// codes, including K whose 16-byte chunks (32 codes at 4-bit, 16 at 8-bit) end on a partial step of a warp
// (640, 4224), and every activation and scale dtype. The GPU sums the twin's f32 terms in another order: f32 outputs
// within 1e-5 of max |cpu|; half outputs (the output dtype is x's) may land one output rounding apart, at
// most one step of the dtype at the value, i.e. 2^-7 (bf16) or 2^-10 (f16) of max |cpu|.
TEST(CudaQuantizedMatmul, Decode4And8BitGroupsAndDtypes) {
  LOOM_REQUIRE_CUDA();
  const std::vector<std::pair<Dtype, Dtype>> dtypes = {{Dtype::f32, Dtype::f32},   {Dtype::bf16, Dtype::bf16},
                                                       {Dtype::f16, Dtype::f16},   {Dtype::f32, Dtype::bf16},
                                                       {Dtype::bf16, Dtype::f16}, {Dtype::f16, Dtype::f32}};
  for (int bits : {4, 8})
    for (int gs : {32, 64, 128}) {
      const QuantSpec q{QuantMode::affine, bits, gs};
      for (int64_t k : {int64_t{gs}, int64_t{640}, int64_t{4224}, int64_t{8192}})
        for (const auto& [wdt, xdt] : dtypes) {
          QuantizedArrays p = quantize(weights(37, k, static_cast<uint32_t>(bits * 31 + gs + k), wdt), q);
          for (int64_t m = 1; m <= 4; ++m) {
            SCOPED_TRACE(quant_spec_str(q) + " K " + std::to_string(k) + ", " + std::string(name(wdt)) +
                         " scales, " + std::string(name(xdt)) + " x, M " + std::to_string(m));
            Array x = rand_array({m, k}, static_cast<uint32_t>(m + 7 * k), xdt);
            auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
            const double tol = cpu.dtype() == Dtype::f32 ? 1e-5 : (cpu.dtype() == Dtype::bf16 ? 0x1p-7 : 0x1p-10);
            EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, tol));
          }
        }
    }
}

// The decode GEMV at model sizes: 4096 and 2050 output rows, K = 4096 and 14336 (many loads per lane), 4-bit and 8-bit g64, M = 1 and 3, bf16 x and scales (bf16 outputs: one bf16 step, 2^-7 of max).
TEST(CudaQuantizedMatmul, DecodeLargeShapes) {
  LOOM_REQUIRE_CUDA();
  for (int bits : {4, 8})
    for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{{4096, 4096}, {2050, 14336}}) {
      const QuantSpec q{QuantMode::affine, bits, 64};
      QuantizedArrays p = quantize(weights(n, k, static_cast<uint32_t>(bits + n), Dtype::bf16), q);
      for (int64_t m : {1, 3}) {
        Array x = rand_array({m, k}, static_cast<uint32_t>(m + 90), Dtype::bf16);
        auto [gpu, cpu] = gpu_and_cpu(x, p, true, q);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 0x1p-7)) << quant_spec_str(q) << " N " << n << " K " << k << " M " << m;
      }
    }
}


// quantized_matmuls / quantized_swiglu on the GPU: decode shapes run as one launch of the decode GEMV over
// all products' row groups (up to 3 products, each with its own matrix, output and N; odd N so row groups end
// mid-warp; small totals where the block's 4 warps split each row group, and model-sized ones where they
// do not), against the CPU twin, which runs the products one by one. Every format; f32 and bf16 x and scales;
// M = 1, 3, 8; prefill (M = 33) takes the per-product path. Products as quantized_matmul's decode tests
// (f32 within 1e-5 of max |cpu|, bf16 one output step, 2^-7); the swiglu of two products that may each
// land one bf16 step apart is allowed 2^-6.
TEST(CudaQuantizedMatmul, GroupedProductsMatchCpu) {
  LOOM_REQUIRE_CUDA();
  struct Shape3 {
    std::vector<int64_t> n;
    int64_t k;
  };
  const std::vector<Shape3> shapes = {{{37, 5, 130}, 640}, {{4096, 1024, 1024}, 4096}};
  std::vector<QuantSpec> specs = {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 3, 32},
                                  QuantSpec{QuantMode::affine, 8, 128}, default_quant_spec(QuantMode::mxfp4),
                                  default_quant_spec(QuantMode::nvfp4), default_quant_spec(QuantMode::mxfp8)};
  for (const Shape3& sh : shapes)
    for (const QuantSpec& q : specs)
      for (Dtype dt : {Dtype::f32, Dtype::bf16})
        for (int64_t m : {1, 3, 8, 33}) {
          if (sh.k > 640 && (m == 33 || q.mode != QuantMode::affine || q.bits == 3)) continue;  // size: the common cases
          SCOPED_TRACE(spec_desc(q, dt) + " K " + std::to_string(sh.k) + " N0 " + std::to_string(sh.n[0]) + " M " +
                       std::to_string(m));
          std::vector<QuantizedMatrix> cpu_w, gpu_w;
          for (size_t i = 0; i < sh.n.size(); ++i) {
            QuantizedArrays p = quantize(weights(sh.n[i], sh.k, static_cast<uint32_t>(11 * i + sh.k), dt), q);
            cpu_w.push_back({p.wq, p.scales, p.biases, q, Array()});
            gpu_w.push_back({on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), q, Array()});
          }
          Array x = rand_array({m, sh.k}, static_cast<uint32_t>(m + sh.k), dt);
          const double tol = dt == Dtype::f32 ? 1e-5 : 0x1p-7;
          std::vector<Array> cpu = quantized_matmuls(x, cpu_w), gpu = quantized_matmuls(on_gpu(x), gpu_w);
          for (size_t i = 0; i < cpu.size(); ++i) EXPECT_TRUE(gpu_matches_cpu(gpu[i], cpu[i], tol)) << "product " << i;
          if (sh.n[1] != sh.n[0]) {  // swiglu needs gate and up of one N: the first product twice
            QuantizedArrays p = quantize(weights(sh.n[0], sh.k, 77, dt), q);
            QuantizedMatrix up_c{p.wq, p.scales, p.biases, q, Array()};
            QuantizedMatrix up_g{on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), q, Array()};
            Array sc = quantized_swiglu(x, cpu_w[0], up_c), sg = quantized_swiglu(on_gpu(x), gpu_w[0], up_g);
            EXPECT_TRUE(gpu_matches_cpu(sg, sc, dt == Dtype::f32 ? 1e-5 : 0x1p-6)) << "swiglu";
          }
        }
}

// The swiglu epilogue at a model's MLP size (8192 rows of gate and up, K = 2048, 4-bit g64, bf16), M = 1 and 2.
TEST(CudaQuantizedMatmul, GroupedSwigluModelSize) {
  LOOM_REQUIRE_CUDA();
  const QuantSpec q{QuantMode::affine, 4, 64};
  QuantizedArrays g = quantize(weights(8192, 2048, 5, Dtype::bf16), q), u = quantize(weights(8192, 2048, 6, Dtype::bf16), q);
  for (int64_t m : {1, 2}) {
    Array x = rand_array({m, 2048}, 8, Dtype::bf16);
    Array cpu = quantized_swiglu(x, {g.wq, g.scales, g.biases, q, Array()}, {u.wq, u.scales, u.biases, q, Array()});
    Array gpu = quantized_swiglu(on_gpu(x), {on_gpu(g.wq), on_gpu(g.scales), on_gpu(g.biases), q, Array()},
                                 {on_gpu(u.wq), on_gpu(u.scales), on_gpu(u.biases), q, Array()});
    EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 0x1p-6)) << "M " << m;
  }
}

}  // namespace
}  // namespace loom::test
