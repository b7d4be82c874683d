// quantize / dequantize / quantized_matmul: packing on vectors derived from the format definitions
// (MLX's affine bit stream, E2M1, E4M3, E8M0), error bounds per format, and the matmul kernels
// against their twin (dequantize + matmul) on odd shapes across the decode/prefill threshold.
#include "loom/ops/quantized.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <memory>
#include <random>

#include "loom/common/error.h"
#include "loom/nn/layers.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "tests/nan_max.h"

namespace loom {
namespace {

// These tests prove the exact tier (f32 activations): force it for the whole test binary (the int8 fast
// tier, the CPU default, has tests/quant/qmm_fast_test.cpp).
const ScopedQmmPrecision kExactQmm(QmmPrecision::exact);

std::vector<uint32_t> words(const Array& a) { return a.to_vector<uint32_t>(); }

Array rand_matrix(int64_t r, int64_t c, uint32_t seed, float amp = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-amp, amp);
  std::vector<float> v(r * c);
  for (auto& x : v) x = d(g);
  return Array::from(v, {r, c});
}

// Affine packing for every width. Each case uses one group whose minimum is 0 and maximum is
// n_bins = 2^bits - 1, so MLX's rules give: |min| > |max| is false -> scale = -(max-min)/n_bins = -1,
// edge = max, q0 = rint(edge/scale) = -n_bins != 0 -> scale = edge/q0 = -1 and bias = edge = n_bins;
// every code is q = rint((w - n_bins) / -1) = n_bins - w, and dequantization is exact.
// Words: code j occupies bits [j*bits, (j+1)*bits) of the row's LSB-first stream, words little-endian.
// E.g. 3 bits, w = j % 8: codes 7,6,5,4,3,2,1,0 -> 7 + 6<<3 + 5<<6 + 4<<9 + 3<<12 + 2<<15 + 1<<18
// = 0x053977 per 24 bits, bytes 77 39 05 repeating -> words 0x77053977, 0x39770539, 0x05397705
// (codes 10 and 21 straddle word boundaries). 4 bits, w = j % 16: nibbles F,E,...,8 -> 0x89ABCDEF,
// then 7..0 -> 0x01234567. The other widths were expanded the same way (python big-int shifting).
struct AffineCase {
  int bits, gs;
  std::vector<float> w;
  std::vector<uint32_t> expect;
};

std::vector<float> seq(int n, int mod, float last = -1) {
  std::vector<float> v(n);
  for (int j = 0; j < n; ++j) v[j] = static_cast<float>(j % mod);
  if (last >= 0) v.back() = last;
  return v;
}

TEST(Quantize, AffinePackingEveryWidth) {
  std::vector<AffineCase> cases = {
      {2, 32, seq(32, 4), {0x1B1B1B1Bu, 0x1B1B1B1Bu}},
      {3, 32, seq(32, 8), {0x77053977u, 0x39770539u, 0x05397705u}},
      {4, 32, seq(32, 16), {0x89ABCDEFu, 0x01234567u, 0x89ABCDEFu, 0x01234567u}},
      {5, 32, seq(32, 32), {0x75BE77DFu, 0x3A56D7C6u, 0x35CF8465u, 0xC74254B6u, 0x00443214u}},
      {6, 64, seq(64, 64),
       {0xBBF3DFBFu, 0x5DB7E39Eu, 0xC31CB3D3u, 0xABB2DBAFu, 0x59A7A29Au, 0x8218A392u, 0x9B71D79Fu, 0x55976196u,
        0x41149351u, 0x8B30D38Fu, 0x51872092u, 0x00108310u}},
      {8, 32, seq(32, 32, 255.0f),
       {0xFCFDFEFFu, 0xF8F9FAFBu, 0xF4F5F6F7u, 0xF0F1F2F3u, 0xECEDEEEFu, 0xE8E9EAEBu, 0xE4E5E6E7u, 0x00E1E2E3u}},
  };
  for (auto& c : cases) {
    SCOPED_TRACE("bits " + std::to_string(c.bits));
    int n = static_cast<int>(c.w.size());
    // Two rows: the second is the first again, so row starts stay word-aligned.
    std::vector<float> two(c.w);
    two.insert(two.end(), c.w.begin(), c.w.end());
    Array w = Array::from(two, {2, n});
    QuantSpec spec{QuantMode::affine, c.bits, c.gs};
    auto q = quantize(w, spec);
    std::vector<uint32_t> expect2(c.expect);
    expect2.insert(expect2.end(), c.expect.begin(), c.expect.end());
    EXPECT_EQ(words(q.wq), expect2);
    float nb = static_cast<float>((1 << c.bits) - 1);
    EXPECT_EQ(q.scales.to_float_vector(), std::vector<float>(2, -1.0f));
    EXPECT_EQ(q.biases.to_float_vector(), std::vector<float>(2, nb));
    EXPECT_EQ(dequantize(q.wq, q.scales, q.biases, spec).to_float_vector(), two);
  }
}

TEST(Quantize, AffineNegativeEdgeAndConstantGroup) {
  // Group 1: w = -(j % 16): min -15 has the larger magnitude -> scale = 15/15 = 1, edge = -15,
  // q0 = -15 -> scale = 1, bias = -15, codes w + 15 = 15 - (j % 16): same words as the 4-bit case.
  // Group 2: all 0.5 -> scale = -max(0, 1e-7) = -1e-7, edge 0.5, q0 = rint(-5e6) -> scale = 0.5/q0
  // (negative), bias 0.5, codes rint(0 / scale) = 0, dequantized exactly to 0.5.
  std::vector<float> v;
  for (int j = 0; j < 32; ++j) v.push_back(-static_cast<float>(j % 16));
  for (int j = 0; j < 32; ++j) v.push_back(0.5f);
  auto q = quantize(Array::from(v, {1, 64}), {QuantMode::affine, 4, 32});
  EXPECT_EQ(words(q.wq), (std::vector<uint32_t>{0x89ABCDEFu, 0x01234567u, 0x89ABCDEFu, 0x01234567u, 0, 0, 0, 0}));
  auto s = q.scales.to_float_vector(), b = q.biases.to_float_vector();
  EXPECT_EQ(s[0], 1.0f);
  EXPECT_EQ(b[0], -15.0f);
  EXPECT_LT(s[1], 0.0f);
  EXPECT_EQ(b[1], 0.5f);
  EXPECT_EQ(dequantize(q.wq, q.scales, q.biases, {QuantMode::affine, 4, 32}).to_float_vector(), v);
}

TEST(Quantize, AffineErrorWithinOneStep) {
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int gs : {32, 64, 128}) {
      Array w = rand_matrix(5, 256, bits * 100 + gs);
      QuantSpec spec{QuantMode::affine, bits, gs};
      auto q = quantize(w, spec);
      auto d = dequantize(q.wq, q.scales, q.biases, spec).to_float_vector();
      auto wv = w.to_float_vector(), sv = q.scales.to_float_vector();
      double worst = 0;
      for (size_t i = 0; i < wv.size(); ++i) {
        float step = std::abs(sv[i / gs]);
        worst = nan_max(worst, double(std::abs(d[i] - wv[i]) / step));
      }
      EXPECT_LE(worst, 1.0 + 1e-4) << "bits " << bits << " gs " << gs;
    }
}

TEST(Quantize, Bf16ScalesRoundAndDequantizeInDtype) {
  Array w = astype(rand_matrix(3, 64, 7), Dtype::bf16);
  auto q = quantize(w, {QuantMode::affine, 4, 64});
  EXPECT_EQ(q.scales.dtype(), Dtype::bf16);
  EXPECT_EQ(q.biases.dtype(), Dtype::bf16);
  Array d = dequantize(q.wq, q.scales, q.biases, {QuantMode::affine, 4, 64});
  EXPECT_EQ(d.dtype(), Dtype::bf16);
}

// E4M3 (bias 7, 3 mantissa bits): 1.0 = 2^0 -> exponent 7 -> 0 0111 000 = 0x38; -2 -> 1 1000 000 =
// 0xC0; 448 = 1.75 * 2^8 -> 0 1111 110 = 0x7E (the largest); 1000 saturates to 0x7E; 0.3 = 1.2 *
// 2^-2 -> exponent 5, mantissa 0.2*8 = 1.6 -> 2 -> 0 0101 010 = 0x2A (0.3125); 2^-9 is the smallest
// subnormal 0x01; 2^-6 the smallest normal 0x08; 1.0625 lies halfway between 1.0 (m=0) and 1.125
// (m=1) -> even -> 0x38; 1.1875 halfway between m=1 and m=2 -> even -> 0x3A.
TEST(QuantCodec, E4M3) {
  using namespace quant_codec;
  std::vector<std::pair<float, uint8_t>> enc = {{1.0f, 0x38}, {-2.0f, 0xC0}, {448.0f, 0x7E}, {1000.0f, 0x7E},
                                                {0.3f, 0x2A}, {0x1p-9f, 0x01}, {0x1p-6f, 0x08}, {1.0625f, 0x38},
                                                {1.1875f, 0x3A}, {0.0f, 0x00}};
  for (auto [f, b] : enc) EXPECT_EQ(float_to_e4m3(f), b) << f;
  EXPECT_EQ(e4m3_to_float(0x2A), 0.3125f);
  EXPECT_EQ(e4m3_to_float(0x01), 0x1p-9f);
  EXPECT_EQ(e4m3_to_float(0xC0), -2.0f);
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x7F), 480.0f);  // MLX decodes the NaN pattern through f16 as 480
  // E8M0: byte s is 2^(s-127); 0 gives 2^-127.
  EXPECT_EQ(e8m0_to_float(127), 1.0f);
  EXPECT_EQ(e8m0_to_float(130), 8.0f);
  EXPECT_EQ(e8m0_to_float(0), 0x1p-127f);
}

// mxfp4, one group of 32 with max|w| = 6: scale = 6/6 = 1, e = round(log2 1) = 0 -> byte 127, values
// unchanged. E2M1 codes (bit 3 = sign, magnitudes 0,.5,1,1.5,2,3,4,6): exact values map to their
// code; -0 is nearest to +0 first (code 0); ties go to the lower code as MLX's argmin: 0.25 -> 0,
// 0.75 -> 1 (0.5), 2.5 -> 4 (2.0), 5 -> 6 (4.0), -0.25 -> 0, -5 -> 14 (-4); 1.2 -> 2 (1.0); -1.3 -> 11
// (-1.5). Nibble j of word j/8 holds code j: codes 0..7 -> 0x76543210; 0,9,10..15 -> 0xFEDCBA90;
// 0,1,4,6,0,14,2,11 -> 0xB2E06410; zeros -> 0.
// Group 2: max|w| = 9 -> scale 1.5 -> log2 = 0.585 -> e = 1 -> byte 128; 9/2 = 4.5 -> 4 (code 6,
// the far edge is clipped), -3/2 = -1.5 -> code 11, 1/2 = 0.5 -> code 1.
TEST(Quantize, Mxfp4HandVectors) {
  std::vector<float> g1 = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6,
                           0.25f, 0.75f, 2.5f, 5, -0.25f, -5, 1.2f, -1.3f};
  g1.resize(32, 0.0f);
  std::vector<float> g2(32, 0.0f);
  g2[0] = 9, g2[1] = -3, g2[2] = 1;
  std::vector<float> v(g1);
  v.insert(v.end(), g2.begin(), g2.end());
  QuantSpec spec = default_quant_spec(QuantMode::mxfp4);
  auto q = quantize(Array::from(v, {1, 64}), spec);
  EXPECT_FALSE(q.biases.valid());
  EXPECT_EQ(q.scales.dtype(), Dtype::u8);
  EXPECT_EQ(q.scales.to_vector<uint8_t>(), (std::vector<uint8_t>{127, 128}));
  EXPECT_EQ(words(q.wq), (std::vector<uint32_t>{0x76543210u, 0xFEDCBA90u, 0xB2E06410u, 0, 0x000000B6u | (1u << 8), 0, 0, 0}));
  auto d = dequantize(q.wq, q.scales, Array(), spec, Dtype::f32).to_float_vector();
  EXPECT_EQ(d[7], 6.0f);
  EXPECT_EQ(d[18], 2.0f);
  EXPECT_EQ(d[32], 8.0f);   // 4 * 2
  EXPECT_EQ(d[33], -3.0f);  // -1.5 * 2
  EXPECT_EQ(d[34], 1.0f);
}

// nvfp4, groups of 16. Group 1 max|w| = 6 -> scale 1 -> E4M3 0x38; values unchanged: 6 -> 7,
// -0.5 -> 9, 3 -> 5. Group 2 max|w| = 1.8 -> 1.8/6 = 0.3 -> E4M3 0x2A (0.3125); 1.8/0.3125 = 5.76
// -> 6 (code 7); -0.625/0.3125 = -2 -> code 12; 0.15/0.3125 = 0.48 -> 0.5 (code 1).
// Words: group 1 codes 7,9,5,0,... -> 0x00000597; group 2 codes 7,12,1,0... -> 0x000001C7.
TEST(Quantize, Nvfp4HandVectors) {
  std::vector<float> v(32, 0.0f);
  v[0] = 6, v[1] = -0.5f, v[2] = 3;
  v[16] = 1.8f, v[17] = -0.625f, v[18] = 0.15f;
  QuantSpec spec = default_quant_spec(QuantMode::nvfp4);
  auto q = quantize(Array::from(v, {1, 32}), spec);
  EXPECT_EQ(q.scales.to_vector<uint8_t>(), (std::vector<uint8_t>{0x38, 0x2A}));
  EXPECT_EQ(words(q.wq), (std::vector<uint32_t>{0x00000597u, 0, 0x000001C7u, 0}));
  auto d = dequantize(q.wq, q.scales, Array(), spec, Dtype::f32).to_float_vector();
  EXPECT_EQ(d[16], 6 * 0.3125f);
  EXPECT_EQ(d[17], -2 * 0.3125f);
}

// mxfp8: max|w| = 448 -> scale 1 -> byte 127; codes are E4M3 bytes (see QuantCodec.E4M3), byte j
// of the stream = element j: [1, -2, 448, 0.3] -> word 0x2A7EC038; [2^-9, 2^-6, 0, 0] -> 0x00000801.
TEST(Quantize, Mxfp8HandVectors) {
  std::vector<float> v(32, 0.0f);
  v[0] = 1, v[1] = -2, v[2] = 448, v[3] = 0.3f, v[4] = 0x1p-9f, v[5] = 0x1p-6f;
  QuantSpec spec = default_quant_spec(QuantMode::mxfp8);
  auto q = quantize(Array::from(v, {1, 32}), spec);
  EXPECT_EQ(q.scales.to_vector<uint8_t>(), (std::vector<uint8_t>{127}));
  auto wv = words(q.wq);
  ASSERT_EQ(wv.size(), 8u);
  EXPECT_EQ(wv[0], 0x2A7EC038u);
  EXPECT_EQ(wv[1], 0x00000801u);
}

TEST(Quantize, FpErrorBounds) {
  Array w = rand_matrix(4, 256, 11, 3.0f);
  auto wv = w.to_float_vector();
  for (QuantMode m : {QuantMode::mxfp4, QuantMode::nvfp4, QuantMode::mxfp8}) {
    QuantSpec spec = default_quant_spec(m);
    auto q = quantize(w, spec);
    auto d = dequantize(q.wq, q.scales, Array(), spec, Dtype::f32).to_float_vector();
    auto sb = q.scales.to_vector<uint8_t>();
    for (size_t i = 0; i < wv.size(); ++i) {
      uint8_t s = sb[i / spec.group_size];
      float scale = m == QuantMode::nvfp4 ? quant_codec::e4m3_to_float(s) : quant_codec::e8m0_to_float(s);
      float err = std::abs(d[i] - wv[i]);
      // E2M1 grid gaps are at most 2 scale units; mx scales round log2 so up to 6*sqrt(2) may be
      // clipped to 6 (<= 2.5 units); nvfp4's E4M3 scale is within 1/16, so the gap bound (1) rules.
      // E4M3 keeps 3 mantissa bits (relative 1/16) and clips above 448 scale units.
      float bound = m == QuantMode::mxfp4 ? 2.5f * scale
                    : m == QuantMode::nvfp4 ? 1.0f * scale
                                            : std::abs(wv[i]) / 16 + std::max(0.0f, std::abs(wv[i]) - 448 * scale) + 0x1p-9f * scale;
      ASSERT_LE(err, bound * (1 + 1e-6f)) << quant_mode_name(m) << " element " << i << " w " << wv[i];
    }
  }
}

TEST(Quantize, RejectsBadArguments) {
  Array w = rand_matrix(2, 64, 1);
  EXPECT_THROW(quantize(w, {QuantMode::affine, 7, 64}), Error);
  EXPECT_THROW(quantize(w, {QuantMode::affine, 4, 16}), Error);
  EXPECT_THROW(quantize(w, {QuantMode::mxfp4, 4, 64}), Error);
  EXPECT_THROW(quantize(rand_matrix(2, 48, 1), {QuantMode::affine, 4, 32}), Error);
  auto q = quantize(w, {QuantMode::affine, 4, 32});
  EXPECT_THROW(dequantize(q.wq, q.scales, Array(), {QuantMode::affine, 4, 32}), Error);  // missing biases
  EXPECT_THROW(dequantize(q.wq, q.scales, q.biases, {QuantMode::affine, 4, 64}), Error);  // scales shape
  EXPECT_THROW(quantized_matmul(rand_matrix(1, 32, 2), q.wq, q.scales, q.biases, true, {QuantMode::affine, 4, 32}), Error);
}

// Kernels vs twin on odd shapes: M crosses the decode (<= 8 rows) / prefill threshold, N is odd, K
// spans several groups; every format and affine width.
TEST(QuantizedMatmul, MatchesTwin) {
  std::vector<QuantSpec> specs;
  for (int b : {2, 3, 4, 5, 6, 8}) specs.push_back({QuantMode::affine, b, b == 3 ? 32 : (b == 6 ? 128 : 64)});
  specs.push_back({QuantMode::affine, 4, 32});
  specs.push_back({QuantMode::affine, 8, 128});
  for (QuantMode m : {QuantMode::mxfp4, QuantMode::nvfp4, QuantMode::mxfp8}) specs.push_back(default_quant_spec(m));
  for (const auto& spec : specs)
    for (int64_t M : {1, 3, 5, 8, 9, 33})
      for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{7, 384}, {67, 128}, {129, 640}}) {
        if (K % spec.group_size) continue;
        Array w = rand_matrix(N, K, static_cast<uint32_t>(N * 7 + K));
        Array x = rand_matrix(M, K, static_cast<uint32_t>(M + 3));
        auto q = quantize(w, spec);
        for (bool t : {true, false}) {
          Array wq = q.wq, sc = q.scales, bi = q.biases;
          Array xx = t ? x : rand_matrix(M, N, 5);
          Array got = quantized_matmul(xx, wq, sc, bi, t, spec);
          Array ref = detail::quantized_matmul_reference(xx, wq, sc, bi, t, spec);
          auto g = got.to_float_vector(), r = ref.to_float_vector();
          ASSERT_EQ(g.size(), r.size());
          double md = 0, mr = 0;
          for (size_t i = 0; i < g.size(); ++i) {
            md = nan_max(md, std::abs(double(g[i]) - double(r[i])));
            mr = std::max(mr, double(std::abs(r[i])));
          }
          EXPECT_LE(md, 1e-5 * std::max(1.0, mr)) << quant_spec_str(spec) << " M " << M << " N " << N << " K " << K
                                                  << " transpose " << t;
        }
      }
}

TEST(QuantizedMatmul, TwinMatchesDenseMatmulOnExactWeights) {
  // The 4-bit hand case dequantizes exactly (see AffinePackingEveryWidth), so x @ W.T with the
  // integer matrix W = j % 16 is known without loom: row sums of x weighted by the pattern.
  std::vector<float> w;
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 32; ++j) w.push_back(static_cast<float>(j % 16));
  auto q = quantize(Array::from(w, {3, 32}), {QuantMode::affine, 4, 32});
  std::vector<float> xv(32, 1.0f);
  Array y = quantized_matmul(Array::from(xv, {1, 32}), q.wq, q.scales, q.biases, true, {QuantMode::affine, 4, 32});
  // sum_j (j % 16) over 32 elements = 2 * 120 = 240
  EXPECT_EQ(y.to_float_vector(), std::vector<float>(3, 240.0f));
}


// Bits of an array as uint32 (floats through their f32 bits: exact for bf16/f16 too).
std::vector<uint32_t> float_bits(const Array& a) {
  std::vector<uint32_t> out;
  for (float f : a.to_float_vector()) out.push_back(std::bit_cast<uint32_t>(f));
  return out;
}

QuantizedMatrix qmatrix(int64_t rows, int64_t k, uint32_t seed, const QuantSpec& q, Dtype dt = Dtype::f32) {
  QuantizedArrays p = quantize(astype(rand_matrix(rows, k, seed), dt), q);
  return {p.wq, p.scales, p.biases, q, Array()};
}

// quantized_matmuls and quantized_swiglu are the separate calls: on the CPU they run them one by one, so
// the results are bit-identical, in both precision tiers, for one format (the grouped kernel call) and for
// mixed formats (one call per product).
TEST(QuantizedMatmuls, EqualSeparateCalls) {
  // One format (the fast tier's grouped pass, its SwiGLU epilogue with f32 outputs) at 4 and 8 bits, and
  // mixed formats (one by one); one activation row (the decode GEMV) and three (the tiles).
  const QuantSpec q4{QuantMode::affine, 4, 64}, q8{QuantMode::affine, 8, 32};
  for (QmmPrecision tier : {QmmPrecision::exact, QmmPrecision::fast})
    for (Dtype dt : {Dtype::f32, Dtype::bf16})
      for (int formats = 0; formats < 3; ++formats)
        for (int64_t m : {1, 3}) {
          const QuantSpec first = formats == 1 ? q8 : q4, second = formats == 0 ? q4 : q8;
          SCOPED_TRACE(std::string(name(dt)) + (formats == 2 ? " mixed formats" : " one format") + " bits " +
                       std::to_string(first.bits) + " rows " + std::to_string(m) +
                       (tier == QmmPrecision::fast ? " fast tier" : " exact tier"));
          ScopedQmmPrecision p(tier);
          std::vector<QuantizedMatrix> ws{qmatrix(40, 128, 1, first, dt), qmatrix(24, 128, 2, second, dt),
                                          qmatrix(8, 128, 3, first, dt)};
          Array x = astype(rand_matrix(m, 128, 4), dt);
          std::vector<Array> got = quantized_matmuls(x, ws);
          ASSERT_EQ(got.size(), 3u);
          for (size_t i = 0; i < ws.size(); ++i) {
            Array want = quantized_matmul(x, ws[i].wq, ws[i].scales, ws[i].biases, true, ws[i].spec);
            EXPECT_EQ(got[i].shape(), want.shape());
            EXPECT_EQ(got[i].dtype(), want.dtype());
            EXPECT_EQ(float_bits(got[i]), float_bits(want)) << "product " << i;
          }
          QuantizedMatrix up = qmatrix(40, 128, 5, second, dt);
          Array sw = quantized_swiglu(x, ws[0], up);
          Array want = fast::swiglu(quantized_matmul(x, ws[0].wq, ws[0].scales, ws[0].biases, true, first),
                                    quantized_matmul(x, up.wq, up.scales, up.biases, true, second));
          EXPECT_EQ(float_bits(sw), float_bits(want));
        }
}

TEST(QuantizedMatmuls, RejectsMismatchedInputs) {
  const QuantSpec q{QuantMode::affine, 4, 64};
  Array x = rand_matrix(2, 128, 1);
  try {
    quantized_matmuls(x, {qmatrix(8, 128, 1, q), qmatrix(8, 64, 2, q)});
    FAIL() << "expected an error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("does not match the expanded quantized matrix (64, 8)"), std::string::npos)
        << e.what();
  }
  try {
    quantized_swiglu(x, qmatrix(8, 128, 1, q), qmatrix(16, 128, 2, q));
    FAIL() << "expected an error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("[quantized_swiglu] gate [2, 8] and up [2, 16] products differ in shape"), std::string::npos) << e.what();
  }
}

// nn::linears and nn::swiglu_linears equal the layers called one by one (bit for bit on the CPU) for every mix the
// model code can hand them: all quantized, all dense, quantized and dense together (a quantization predicate that
// skipped a projection: two groups, or a group and a single call), with and without biases (added after the group).
TEST(QuantizedMatmuls, LinearLayersEqualSeparateCalls) {
  auto layer = [](int64_t out, uint32_t seed, bool quantized, bool bias) {
    auto l = std::make_unique<nn::Linear>(64, out, bias);
    l->weight = rand_matrix(out, 64, seed);
    if (bias) l->bias = reshape(rand_matrix(1, out, seed + 100), {out});
    if (quantized) l->to_quantized(QuantSpec{QuantMode::affine, 4, 32});
    return l;
  };
  Array x = rand_matrix(3, 64, 7);
  for (int mix = 0; mix < 8; ++mix)  // bit i: projection i quantized
    for (bool bias : {false, true}) {
      SCOPED_TRACE("mix " + std::to_string(mix) + (bias ? " with biases" : ""));
      auto q = layer(40, 1, mix & 1, bias), k = layer(24, 2, mix & 2, bias), v = layer(24, 3, mix & 4, bias);
      std::vector<Array> got = nn::linears(x, {q.get(), k.get(), v.get()});
      ASSERT_EQ(got.size(), 3u);
      EXPECT_EQ(float_bits(got[0]), float_bits((*q)(x)));
      EXPECT_EQ(float_bits(got[1]), float_bits((*k)(x)));
      EXPECT_EQ(float_bits(got[2]), float_bits((*v)(x)));
      auto gate = layer(40, 4, mix & 1, bias), up = layer(40, 5, mix & 2, bias);
      EXPECT_EQ(float_bits(nn::swiglu_linears(x, *gate, *up)), float_bits(fast::swiglu((*gate)(x), (*up)(x))));
    }
}

}  // namespace
}  // namespace loom
