// CUDA parity of quantize / dequantize / quantized_matmul (backend/cuda/quantized.cu) against the CPU
// twin, for every affine width (2, 3, 4, 5, 6, 8) and group size (32, 64, 128) and for mxfp4, nvfp4 (with
// and without a global scale) and mxfp8. quantize must be bit-identical (packed words, scales, biases);
// dequantize within 1e-6 of max |cpu| (the same formula and roundings); quantized_matmul within 1e-5 for
// M in {1, 5, 33} (decode kernel for M <= 8 with W.T, f32 panels + cuBLAS otherwise), with W.T and W.
#include "loom/ops/quantized.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "loom/core/quant.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom::test {
namespace {

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
        Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, q, g);
        Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, q, g);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " transpose M " << m;
      }
      // W: wq [K, N] with K = 40 inner rows, N = 128 outputs.
      {
        QuantizedArrays p = quantize(weights(40, 128, seed + 2, Dtype::f32), q, g);
        Array x = rand_array({m, 40}, seed + 3);
        Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, false, q, g);
        Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), false, q, g);
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
      Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
      Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, q);
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 2e-5)) << quant_spec_str(q) << " M " << m;
    }
  // Many output rows: one warp per row group (fewer rows share each group among a block's warps).
  for (const QuantSpec& q : {QuantSpec{QuantMode::affine, 4, 32}, default_quant_spec(QuantMode::nvfp4)})
    for (int64_t m : {1, 3, 6}) {
      QuantizedArrays p = quantize(weights(9000, 256, static_cast<uint32_t>(m + 40), Dtype::f32), q);
      Array x = rand_array({m, 256}, static_cast<uint32_t>(m + 41));
      Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
      Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, q);
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << quant_spec_str(q) << " N 9000 M " << m;
    }
  const QuantSpec nv = default_quant_spec(QuantMode::nvfp4);
  for (int64_t m : {1, 3, 12}) {
    Array g = global_scale_for(nv, true);
    QuantizedArrays p = quantize(weights(21, 272, static_cast<uint32_t>(m + 5), Dtype::f32), nv, g);
    Array x = rand_array({m, 272}, static_cast<uint32_t>(m + 6));
    Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, nv, g);
    Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, nv, g);
    EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, 1e-5)) << "nvfp4 K 272 M " << m;
  }
  // bf16 activations: the op computes in f32 and returns bf16.
  QuantSpec q{QuantMode::affine, 4, 32};
  QuantizedArrays p = quantize(weights(50, 512, 9, Dtype::bf16), q);
  Array x = rand_array({3, 512}, 10, Dtype::bf16);
  Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
  Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, q);
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
        Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
        Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, q);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, cpu.dtype() == Dtype::f32 ? 1e-5 : 1e-2));
      }
}

}  // namespace
}  // namespace loom::test
