// CUDA parity of quantized_matmul's fast tier (QmmPrecision::fast: int8 activations, dp4a; backend/cuda/
// quantized.cu). 4-bit weights: against the CPU's fast tier (backend/cpu/qmm_int8.cpp). Both quantize each
// block of 32 activations the same way (d = max|x| / 127, q = x / d rounded to nearest even, in f32), so
// their integer sums are identical and the results differ only by f32 summation order. 8-bit weights: the
// CPU's tier quantizes activations to int16 there (free on AVX2, whose 8-bit products widen to int16
// anyway), the GPU's keeps int8 (int16 with dp2a measured 8% slower decode on the H100: Llama-3.1-8B-shaped
// 8-bit tg128 270 -> 249 t/s, 1B 1176 -> 1084), so the reference is the tier's definition with int8 codes
// in f64 (fast_tier_product, on `dequantize`'s weights). Either way within 1e-5 of max |reference| for f32
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
#include "tests/quant/fast_tier_check.h"

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

// The reference of the GPU's fast-tier product x [., K] @ w.T (see the file comment), in x's dtype.
Array fast_ref(const Array& x, const QuantizedArrays& p, const QuantSpec& q) {
  if (q.bits != 8) return quantized_matmul(x, p.wq, p.scales, p.biases, true, q);
  const int64_t k = x.shape(-1);
  const Array w = dequantize(p.wq, p.scales, p.biases, q, Dtype::f32);
  return astype(fast_tier_product(x, reshape(w, {w.size() / k, k}), 127.0f), x.dtype());
}

// fast::swiglu of the two references, each rounded to x's dtype first (as quantized_swiglu rounds them).
Array swiglu_ref(const Array& x, const QuantizedArrays& g, const QuantizedArrays& u, const QuantSpec& q) {
  return fast::swiglu(fast_ref(x, g, q), fast_ref(x, u, q));
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
            Array cpu = fast_ref(x, p, q);
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
        std::vector<QuantizedArrays> ps;
        std::vector<QuantizedMatrix> gw;
        for (size_t i = 0; i < ns.size(); ++i) {
          ps.push_back(quantize(rand_array({ns[i], k}, static_cast<uint32_t>(40 + i), dt, -0.1f, 0.1f), q));
          gw.push_back({on_gpu(ps[i].wq), on_gpu(ps[i].scales), on_gpu(ps[i].biases), q, Array()});
        }
        Array x = activations(m, k, static_cast<uint32_t>(50 + m), dt);
        std::vector<Array> gpu = quantized_matmuls(on_gpu(x), gw);
        for (size_t i = 0; i < ps.size(); ++i)
          EXPECT_TRUE(gpu_matches_cpu(gpu[i], fast_ref(x, ps[i], q), out_tol(dt))) << "product " << i;
        QuantizedArrays u = quantize(rand_array({4096, k}, 60, dt, -0.1f, 0.1f), q);
        Array sc = swiglu_ref(x, ps[0], u, q);
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
        Array gpu = quantized_matmul(on_gpu(x), on_gpu(g.wq), on_gpu(g.scales), on_gpu(g.biases), true, q);
        EXPECT_TRUE(gpu_matches_cpu(gpu, fast_ref(x, g, q), out_tol(dt)));
        const QuantizedMatrix gg{on_gpu(g.wq), on_gpu(g.scales), on_gpu(g.biases), q, Array()};
        const QuantizedMatrix gu{on_gpu(u.wq), on_gpu(u.scales), on_gpu(u.biases), q, Array()};
        EXPECT_TRUE(gpu_matches_cpu(quantized_swiglu(on_gpu(x), gg, gu), swiglu_ref(x, g, u, q),
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
        Array gpu =
            gather_qmm(on_gpu(x), on_gpu(p.wq), on_gpu(p.scales), on_gpu(p.biases), on_gpu(l), on_gpu(r), true, spec);
        Array cpu;
        if (bits == 8) {  // pair by pair: x's rows of block l[p] (block 0 without l) times expert r[p]
          const std::vector<int32_t> rv = r.to_vector<int32_t>(),
                                     lv = l.valid() ? l.to_vector<int32_t>() : std::vector<int32_t>();
          const int64_t k = x.shape(-1), m = x.shape(-2), n = p.wq.shape(1);
          auto row = [](const Array& a, int64_t j) {  // a[j] of a stack, contiguous
            Shape sh(a.shape().begin() + 1, a.shape().end());
            return reshape(contiguous(slice_axis(a, 0, j, j + 1)), sh);
          };
          std::vector<float> out;
          for (size_t i = 0; i < rv.size(); ++i) {
            const int64_t b = lv.empty() ? 0 : lv[i];
            const QuantizedArrays e{row(p.wq, rv[i]), row(p.scales, rv[i]), row(p.biases, rv[i])};
            const std::vector<float> y =
                fast_ref(row(reshape(x, {x.size() / (m * k), m, k}), b), e, spec).to_float_vector();
            out.insert(out.end(), y.begin(), y.end());
          }
          cpu = Array::from(out, gpu.shape(), gpu.dtype());  // (f32 weights: f32 out)
        } else {
          cpu = gather_qmm(x, p.wq, p.scales, p.biases, l, r, true, spec);
        }
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
