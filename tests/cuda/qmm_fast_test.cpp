// CUDA parity of quantized_matmul's fast tier (QmmPrecision::fast: int8 activations, dp4a; backend/cuda/
// quantized.cu) against the CPU's fast tier (backend/cpu/qmm_int8.cpp). Both quantize each block of 32
// activations the same way (d = max|x| / 127, q = x / d rounded to nearest even, in f32), so their integer
// sums are identical and the results differ only by f32 summation order: within 1e-5 of max |cpu| for f32
// outputs, one output rounding (2^-7 bf16, 2^-10 f16) for half outputs. Covered: affine 4 and 8 bits,
// groups 32/64/128, K of one group up to 4224 (several rounds per lane, a last partial round), M = 1..8,
// f32/bf16/f16 activations and scales, an all-zero activation block (d = 0) and an outlier; grouped
// products (q/k/v in one launch, the SwiGLU epilogue), gather_qmm's decode pairs, and one-row shapes at
// the extremes of the decode grid; int8 activations stored by the kernel that produced x (add_rms_norm)
// instead of quantized by the product. The f32 cases would fail if either device ran the exact tier instead
// (the tiers differ by ~0.5% of max, not 1e-5), and the single-product test also asserts that the GPU
// result is not within 1e-5 of the exact tier's.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "loom/backend/cuda/act_int8.h"
#include "loom/core/quant.h"
#include "loom/ops/fast.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"
#include "tests/cuda/parity.h"

namespace loom::test {
namespace {

double out_tol(Dtype dt) { return dt == Dtype::f32 ? 1e-5 : (dt == Dtype::bf16 ? 0x1p-7 : 0x1p-10); }

// Activations in [-1, 1) with block 1 of row 0 all zero (d = 0) and one outlier (a block whose other
// values quantize to few levels).
Array activations(int64_t m, int64_t k, uint32_t seed, Dtype dt) {
  std::vector<float> v = rand_array({m, k}, seed).to_float_vector();
  if (k >= 64)
    for (int64_t j = 32; j < 64; ++j) v[j] = 0.0f;
  v[v.size() / 2] = 40.0f;
  return Array::from(v, {m, k}, dt);
}

Array exact_cpu(const Array& x, const QuantizedArrays& p, const QuantSpec& q) {
  ScopedQmmPrecision e(QmmPrecision::exact);
  return quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
}

TEST(CudaQmmFast, DecodeMatchesCpuFastTier) {
  LOOM_REQUIRE_CUDA();
  ScopedQmmPrecision fast(QmmPrecision::fast);
  const std::vector<std::pair<Dtype, Dtype>> dtypes = {
      {Dtype::f32, Dtype::f32}, {Dtype::bf16, Dtype::bf16}, {Dtype::f16, Dtype::f16}, {Dtype::bf16, Dtype::f32}};
  for (int bits : {4, 8})
    for (int gs : {32, 64, 128}) {
      const QuantSpec q{QuantMode::affine, bits, gs};
      for (int64_t k : {int64_t{gs}, int64_t{640}, int64_t{4224}}) {
        if (k % gs) continue;
        for (const auto& [wdt, xdt] : dtypes) {
          QuantizedArrays p =
              quantize(rand_array({37, k}, static_cast<uint32_t>(bits * 31 + gs + k), wdt, -0.2f, 0.3f), q);
          for (int64_t m : {1, 2, 3, 5, 8}) {
            SCOPED_TRACE(quant_spec_str(q) + " K " + std::to_string(k) + ", " + std::string(name(wdt)) + " scales, " +
                         std::string(name(xdt)) + " x, M " + std::to_string(m));
            Array x = activations(m, k, static_cast<uint32_t>(m + 7 * k), xdt);
            Array cpu = quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
            Array gpu = quantized_matmul(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), true, q);
            EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, out_tol(cpu.dtype())));
            if (xdt == Dtype::f32) EXPECT_FALSE(all_close(on_cpu(gpu), exact_cpu(x, p, q), 1e-5)) << "exact tier ran";
          }
        }
      }
    }
}

// q/k/v-like products in one launch (odd N, model-sized K) and a gate/up pair with the SwiGLU epilogue.
TEST(CudaQmmFast, GroupedProductsAndSwiglu) {
  LOOM_REQUIRE_CUDA();
  ScopedQmmPrecision fast(QmmPrecision::fast);
  const std::vector<int64_t> ns = {4096, 1024, 130};
  const int64_t k = 4096;
  for (int bits : {4, 8})
    for (Dtype dt : {Dtype::f32, Dtype::bf16})
      for (int64_t m : {1, 3}) {
        const QuantSpec q{QuantMode::affine, bits, 64};
        SCOPED_TRACE(quant_spec_str(q) + " " + std::string(name(dt)) + " M " + std::to_string(m));
        std::vector<QuantizedMatrix> cw, gw;
        for (size_t i = 0; i < ns.size(); ++i) {
          QuantizedArrays p = quantize(rand_array({ns[i], k}, static_cast<uint32_t>(40 + i), dt, -0.1f, 0.1f), q);
          cw.push_back({p.wq, p.scales, p.biases, q, Array()});
          gw.push_back({on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), q, Array()});
        }
        Array x = activations(m, k, static_cast<uint32_t>(50 + m), dt);
        std::vector<Array> cpu = quantized_matmuls(x, cw), gpu = quantized_matmuls(on_gpu(x), gw);
        for (size_t i = 0; i < cpu.size(); ++i)
          EXPECT_TRUE(gpu_matches_cpu(gpu[i], cpu[i], out_tol(dt))) << "product " << i;
        QuantizedArrays u = quantize(rand_array({4096, k}, 60, dt, -0.1f, 0.1f), q);
        Array sc = quantized_swiglu(x, cw[0], {u.wq, u.scales, u.biases, q, Array()});
        Array sg = quantized_swiglu(on_gpu(x), gw[0], {on_gpu(u.wq), on_gpu(u.scales), on_gpu(u.biases), q, Array()});
        EXPECT_TRUE(gpu_matches_cpu(sg, sc, dt == Dtype::f32 ? 1e-5 : 0x1p-6)) << "swiglu";
      }
}

// One activation row at the extremes of the decode kernel's grid: more row groups (N = 20001, two rows per
// warp: 10001) than an H100 holds resident warps (~8400), few rows of a down_proj-sized K (N = 130, K =
// 14336: a block's 4 warps split each row group; K = 2112, 66 packs: 2 warps per row group, and 65 row
// groups, so the last block's second pair of warps has no group and exits before the others' barrier),
// and a K of 40960 (activation blocks beyond the other tests' 4224); single products and the SwiGLU
// epilogue.
TEST(CudaQmmFast, OneRowShapes) {
  LOOM_REQUIRE_CUDA();
  ScopedQmmPrecision fast(QmmPrecision::fast);
  struct Shape {
    int64_t n, k;
  };
  for (const Shape& sh : {Shape{20001, 256}, Shape{130, 14336}, Shape{130, 2112}, Shape{37, 40960}})
    for (int bits : {4, 8})
      for (Dtype dt : {Dtype::f32, Dtype::bf16}) {
        const QuantSpec q{QuantMode::affine, bits, 64};
        SCOPED_TRACE(quant_spec_str(q) + " N " + std::to_string(sh.n) + " K " + std::to_string(sh.k) + " " +
                     std::string(name(dt)));
        QuantizedArrays g = quantize(rand_array({sh.n, sh.k}, static_cast<uint32_t>(90 + bits), dt, -0.1f, 0.1f), q);
        QuantizedArrays u = quantize(rand_array({sh.n, sh.k}, static_cast<uint32_t>(91 + bits), dt, -0.1f, 0.1f), q);
        Array x = activations(1, sh.k, static_cast<uint32_t>(92 + sh.k), dt);
        Array cpu = quantized_matmul(x, g.wq, g.scales, g.biases, true, q);
        Array gpu = quantized_matmul(on_gpu(x), on_gpu(g.wq), on_gpu(g.scales), on_gpu(g.biases), true, q);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, out_tol(dt)));
        const QuantizedMatrix cg{g.wq, g.scales, g.biases, q, Array()}, cu{u.wq, u.scales, u.biases, q, Array()};
        const QuantizedMatrix gg{on_gpu(g.wq), on_gpu(g.scales), on_gpu(g.biases), q, Array()};
        const QuantizedMatrix gu{on_gpu(u.wq), on_gpu(u.scales), on_gpu(u.biases), q, Array()};
        EXPECT_TRUE(gpu_matches_cpu(quantized_swiglu(on_gpu(x), gg, gu), quantized_swiglu(x, cg, cu),
                                    dt == Dtype::f32 ? 1e-5 : 0x1p-6))
            << "swiglu";
      }
}

// Bit equality of two GPU results.
::testing::AssertionResult identical(const Array& a, const Array& b) {
  const std::vector<float> va = on_cpu(a).to_float_vector(), vb = on_cpu(b).to_float_vector();
  if (va.size() != vb.size()) return ::testing::AssertionFailure() << va.size() << " vs " << vb.size() << " values";
  for (size_t i = 0; i < va.size(); ++i)
    if (va[i] != vb[i]) return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << " vs " << vb[i];
  return ::testing::AssertionSuccess();
}

// A fresh GPU buffer with a's bytes: nothing was registered for it, so a product quantizes it itself.
Array fresh_copy(const Array& a) { return to_device(on_cpu(a), kGpu); }

// add_rms_norm stores the fast tier's int8 activations of its decode rows (backend/cuda/act_int8.cuh); the
// products that read that output use them (counted by act_int8::hits) and give the bits of the same product
// over a fresh copy of the output, which quantize_x_kernel quantizes. A write into the output afterwards (assign:
// copy_into) drops the codes. The comparisons would fail if the stored codes differed from quantize_x_kernel's in any
// code or scale (a code off by one changes an f32 output), or if a product read codes of older contents.
TEST(CudaQmmFast, NormStoresTheActivationCodes) {
  LOOM_REQUIRE_CUDA();
  ScopedQmmPrecision fast(QmmPrecision::fast);
  // Row widths for each elements-per-thread of the norm's decode launch (2, 4, 8), and 192, where slot 1
  // of two of a row's four warps lies past its end.
  for (int64_t k : {192, 2048, 4096, 8192})
    for (int bits : {4, 8})
      for (Dtype dt : {Dtype::f32, Dtype::bf16}) {
        const QuantSpec q{QuantMode::affine, bits, 64};
        SCOPED_TRACE(quant_spec_str(q) + " " + std::string(name(dt)) + " K " + std::to_string(k));
        QuantizedArrays w = quantize(rand_array({96, k}, static_cast<uint32_t>(60 + bits), dt, -0.1f, 0.1f), q);
        QuantizedArrays g = quantize(rand_array({40, k}, static_cast<uint32_t>(61 + bits), dt, -0.1f, 0.1f), q);
        QuantizedArrays u = quantize(rand_array({40, k}, static_cast<uint32_t>(62 + bits), dt, -0.1f, 0.1f), q);
        const QuantizedMatrix gg{on_gpu(g.wq), on_gpu(g.scales), on_gpu(g.biases), q, Array()};
        const QuantizedMatrix gu{on_gpu(u.wq), on_gpu(u.scales), on_gpu(u.biases), q, Array()};
        const Array wq = on_gpu(w.wq), ws = on_gpu(w.scales), wb = on_gpu(w.biases);
        auto product = [&](const Array& x) { return quantized_matmul(x, wq, ws, wb, true, q); };
        product(on_gpu(rand_array({1, k}, 63, dt)));  // a fast-tier product asks for this layout
        for (int64_t m : {1, 3, 8}) {
          SCOPED_TRACE("rows " + std::to_string(m));
          const Array x = on_gpu(activations(m, k, static_cast<uint32_t>(64 + m), dt));
          const Array r = on_gpu(rand_array({m, k}, static_cast<uint32_t>(65 + m), Dtype::f32, -2.0f, 2.0f));
          const Array nw = on_gpu(rand_array({k}, 66, dt, 0.5f, 1.5f));
          auto [normed, sum] = fast::add_rms_norm(x, r, nw, 1e-5f, dt);
          int64_t h = cuda::act_int8::hits();
          const Array y = product(normed);
          EXPECT_EQ(cuda::act_int8::hits(), h + 1) << "the product did not use add_rms_norm's codes";
          EXPECT_TRUE(identical(y, product(fresh_copy(normed))));
          h = cuda::act_int8::hits();
          EXPECT_TRUE(identical(quantized_swiglu(normed, gg, gu), quantized_swiglu(fresh_copy(normed), gg, gu)))
              << "swiglu";
          // (bf16 x: one grouped launch; f32 x has no grouped SwiGLU kernel: two products, then swiglu.)
          EXPECT_EQ(cuda::act_int8::hits(), h + (dt == Dtype::f32 ? 2 : 1))
              << "the SwiGLU products did not use the codes";
          // New contents: the codes are dropped, the product quantizes what is there now.
          const Array other = on_gpu(rand_array({m, k}, static_cast<uint32_t>(67 + m), dt));
          assign(normed, other);
          h = cuda::act_int8::hits();
          EXPECT_TRUE(identical(product(normed), product(fresh_copy(other)))) << "after assign";
          EXPECT_EQ(cuda::act_int8::hits(), h) << "codes of overwritten contents were used";
        }
      }
}

// gather_qmm's decode: top-8 experts of one token, and pairs of M rows picked by lhs.
TEST(CudaQmmFast, GatherQmmPairs) {
  LOOM_REQUIRE_CUDA();
  ScopedQmmPrecision fast(QmmPrecision::fast);
  Array w = rand_array({6, 99, 2048}, 80);
  Array top8 = Array::from(std::vector<int32_t>{5, 1, 5, 0, 2, 1, 5, 3}, {1, 8});
  Array lhs = Array::from(std::vector<int32_t>{0, 0, 1, 1, 2, 2, 1, 0}, {8});
  Array rhs = Array::from(std::vector<int32_t>{4, 4, 0, 2, 4, 1, 0, 3}, {8});
  for (int bits : {4, 8})
    for (Dtype xdt : {Dtype::f32, Dtype::bf16}) {
      const QuantSpec spec{QuantMode::affine, bits, 64};
      QuantizedArrays p = quantize(w, spec);
      auto both = [&](const Array& x, const Array& l, const Array& r) {
        Array cpu = gather_qmm(x, p.wq, p.scales, p.biases, l, r, true, spec);
        Array gpu =
            gather_qmm(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), on_gpu(l), on_gpu(r), true, spec);
        return gpu_matches_cpu(gpu, cpu, out_tol(xdt));
      };
      EXPECT_TRUE(both(rand_array({1, 1, 1, 2048}, 81, xdt), {}, top8))
          << quant_spec_str(spec) << " top-8 " << name(xdt);
      for (int64_t m : {2, 4})
        EXPECT_TRUE(both(rand_array({3, m, 2048}, static_cast<uint32_t>(82 + m), xdt), lhs, rhs))
            << quant_spec_str(spec) << " M " << m << " " << name(xdt);
    }
}

}  // namespace
}  // namespace loom::test
