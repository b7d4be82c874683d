// The int8 fast tier of quantized_matmul on the CPU (QmmPrecision::fast, backend/cpu/qmm_int8.h).
//  - Kernel level, against an f64 oracle written from the definition: x quantized per block of 32 with
//    the same f32 steps (d = max|x| / 127, or 32767 for 8-bit weights; id = 1 / d, q = nearest-even of
//    x * id), codes read from the packed words (LSB-first), y = sum_j (scale * code_j + bias) * d * q_j. The integer
//    part is exact in both, so they differ by f32 rounding only (bound derived at expect_oracle).
//  - Kernel level, against the exact tier: the difference is the activation rounding alone (bound derived
//    at expect_near_exact).
//  - Shapes: odd N, K not a multiple of 256 (and K % 64 == 32 at group size 32), group sizes 32/64/128,
//    1..9 rows (decode tiles and their tails) and prefill-sized row counts that cross the kernel's
//    row blocks, 4 and 8 bits, scales of both signs, scales stored as f32/bf16/f16, bf16 activations.
//  - Single rows of the formats the tier takes only for decode (affine 2/3/5/6 bits, mxfp4, nvfp4), against
//    a format-independent oracle built on `dequantize` (check_single_row).
//  - Logits level: quantized fixture models, fast vs exact for a full pass and token-by-token decode:
//    max |a - b| / max |b| < 6e-2 on the dense fixtures (why not the 1e-2: see the test), < 1e-2
//    with 8-bit weights (int16 activations; measured 7e-5 to 1.9e-4), greedy tokens equal wherever the exact top-2
//    margin exceeds twice the observed error.
//  - The switch: set/scoped, parse errors, other formats unaffected; a fresh `loom` process defaults to
//    fast and LOOM_QMM selects the tier.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "loom/io/npy.h"
#include "loom/nn/layers.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"
#include "tests/models/fixture_util.h"
#include "tests/quant/fast_tier_check.h"

namespace loom::test {
namespace {

constexpr double kEps = 1.0 / (1 << 24);  // f32 unit roundoff

// w [rows, cols] uniform in [-amp, amp] with a per-row offset so both edges (hence scales of both
// signs: MLX's scale is negative when the minimum has the larger magnitude) occur.
Array rand_w(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    float off = 0.3f * d(g);
    for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = 0.2f * (d(g) + off);
  }
  return Array::from(v, {rows, cols});
}

// x with varied magnitudes per block (so blocks get different d) and a few exact zeros (a zero block).
std::vector<float> rand_x(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(rows * cols);
  for (int64_t i = 0; i < rows * cols; i += 32) {
    float amp = std::exp2(4.0f * d(g));
    bool zero = (i / 32) % 17 == 5;
    for (int64_t j = i; j < i + 32 && j < rows * cols; ++j) v[j] = zero ? 0.0f : amp * d(g);
  }
  return v;
}

uint32_t code_at(const uint32_t* row, int64_t e, int bits) {
  int64_t bit = e * bits;
  uint64_t two = row[bit >> 5];
  if ((bit & 31) + bits > 32) two |= static_cast<uint64_t>(row[(bit >> 5) + 1]) << 32;
  return static_cast<uint32_t>(two >> (bit & 31)) & ((1u << bits) - 1);
}

struct Case {
  int bits;
  int64_t gs, n, k, m;
  Dtype sdt = Dtype::f32, xdt = Dtype::f32;
};

std::string describe(const Case& c) {
  return "bits " + std::to_string(c.bits) + " gs " + std::to_string(c.gs) + " N " + std::to_string(c.n) + " K " +
         std::to_string(c.k) + " M " + std::to_string(c.m) + " scales " + std::string(name(c.sdt)) + " x " +
         std::string(name(c.xdt));
}

// Runs one case: fast tier vs the f64 oracle and vs the exact tier.
// quantized_matmul of the same operands under the fast and the exact tier.
std::pair<Array, Array> both_tiers(const Array& x, const QuantizedArrays& qa, bool transpose, const QuantSpec& spec) {
  Array fast, exact;
  {
    ScopedQmmPrecision p(QmmPrecision::fast);
    fast = quantized_matmul(x, qa.wq, qa.scales, qa.biases, transpose, spec);
  }
  {
    ScopedQmmPrecision p(QmmPrecision::exact);
    exact = quantized_matmul(x, qa.wq, qa.scales, qa.biases, transpose, spec);
  }
  return {fast, exact};
}

void check_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  const QuantSpec spec{QuantMode::affine, c.bits, static_cast<int>(c.gs)};
  auto qa = quantize(astype(rand_w(c.n, c.k, static_cast<uint32_t>(c.n * 7 + c.k + c.bits)), c.sdt), spec);
  std::vector<float> xv = rand_x(c.m, c.k, static_cast<uint32_t>(c.m * 131 + c.gs));
  Array x = astype(Array::from(xv, {c.m, c.k}), c.xdt);
  xv = astype(x, Dtype::f32).to_float_vector();  // the values the kernel sees
  auto [fast, exact] = both_tiers(x, qa, true, spec);
  auto fv = astype(fast, Dtype::f32).to_float_vector(), ev = astype(exact, Dtype::f32).to_float_vector();
  auto sc = astype(qa.scales, Dtype::f32).to_float_vector(), bi = astype(qa.biases, Dtype::f32).to_float_vector();
  Array wq = contiguous(qa.wq);
  const uint32_t* wp = wq.data<uint32_t>();
  const int64_t words = qa.wq.shape(1), groups = c.k / c.gs;
  bool neg = false, pos = false;
  for (float s : sc) neg |= s<0, pos |= s> 0;
  EXPECT_TRUE(neg && pos) << "the case should hold scales of both signs";
  // Whether the output dtype rounds (bf16/f16 outputs when x or scales are half types).
  const bool half_out = c.sdt != Dtype::f32 || c.xdt != Dtype::f32;
  const double out_eps = half_out ? (c.sdt == Dtype::f16 && c.xdt != Dtype::bf16 ? 1.0 / 2048 : 1.0 / 256) : 0.0;
  int bad_oracle = 0, bad_exact = 0;
  std::vector<int> q;
  std::vector<float> d;
  for (int64_t i = 0; i < c.m; ++i) {
    const float* xi = xv.data() + i * c.k;
    quantize_x_ref(xi, c.k, q, d, c.bits == 8 ? 32767.0f : 127.0f);  // (tests/quant/fast_tier_check.h)
    for (int64_t r = 0; r < c.n; ++r) {
      // Oracle (the dequantized w times the dequantized activations d * q) and the magnitudes the
      // bounds need.
      double y = 0, t_abs = 0, rounding = 0, wx_abs = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const double s = sc[r * groups + g], b = bi[r * groups + g];
        double dq_abs = 0;
        for (int64_t j = g * c.gs; j < (g + 1) * c.gs; ++j) {
          const double code = code_at(wp + r * words, j, c.bits), dq = double(d[j / 32]) * q[j];
          y += (s * code + b) * dq;
          t_abs += std::abs(s * code * dq);
          dq_abs += std::abs(dq);
          rounding += double(d[j / 32]) / 2 * std::abs(s * code + b);
          wx_abs += std::abs((s * code + b) * xi[j]);
        }
        t_abs += std::abs(b) * dq_abs;
      }
      const double got = fv[i * c.n + r], ex = ev[i * c.n + r];
      // expect_oracle: the kernel's inner sums are exact integers (|sum| < 2^24, so their conversion is
      // exact too); every term then passes through at most 3 roundings of its own (d * scale, the product
      // with the integer sum; d * sum q for the bias term) and one per addition it takes part in (K/64
      // chunk accumulations per lane, 3 lane reductions, the blocks of a group, `groups` bias terms), so
      // |fast - oracle| <= (K/64 + groups + gs/32 + 8) * eps * T with T the sum of |terms|. A half-type
      // output adds its own rounding of |y|.
      const double tol_oracle =
          (double(c.k) / 64 + groups + double(c.gs) / 32 + 8) * kEps * t_abs + out_eps * std::abs(y) + 1e-30;
      if (std::abs(got - y) > tol_oracle && ++bad_oracle <= 5)
        ADD_FAILURE() << "row " << i << " col " << r << ": fast " << got << " oracle " << y << " tol " << tol_oracle;
      // expect_near_exact: fast - exact = sum_j w_j * (d q_j - x_j) with w the dequantized weights, and
      // |d q_j - x_j| = d |q_j - x_j id| <= d / 2 (nearest rounding; id is 1/d up to 2 roundings, covered
      // by the 1e-6 factor), so |fast - exact| <= sum over blocks of d_b / 2 * sum |w_j|. The exact
      // tier's own f32 error is within 1e-5 of sum |w x| (its twin tests), and tol_oracle covers the fast
      // tier's rounding.
      const double tol_exact = rounding * (1 + 1e-6) + 1e-5 * wx_abs + tol_oracle + out_eps * std::abs(ex);
      if (std::abs(got - ex) > tol_exact && ++bad_exact <= 5)
        ADD_FAILURE() << "row " << i << " col " << r << ": fast " << got << " exact " << ex << " tol " << tol_exact;
    }
  }
  EXPECT_EQ(bad_oracle, 0);
  EXPECT_EQ(bad_exact, 0);
}

TEST(QmmFast, DecodeRowsMatchOracleAndExact) {
  for (int bits : {4, 8})
    for (int64_t gs : {32, 64, 128})
      for (int64_t m = 1; m <= 9; ++m) {
        // K: 3 * 128 = 384 (not a multiple of 256); at gs 32 also 352 = 5.5 * 64 (a last block of 32).
        check_case({bits, gs, 13, 384, m});
        if (gs == 32) check_case({bits, gs, 7, 352, m});
      }
}

TEST(QmmFast, PrefillRowsMatchOracleAndExact) {
  // K * 1 byte (4-bit) or 2 bytes (8-bit) per row: 4128 * 2 bytes makes the kernel's L2 row blocks 31
  // rows, so 70 rows cross two block edges; N = 37 splits unevenly across threads and tiles.
  for (int bits : {4, 8})
    for (int64_t gs : {32, 64, 128}) {
      int64_t k = gs == 32 ? 4128 : gs == 64 ? 4160 : 4224;
      check_case({bits, gs, 37, k, 70});
    }
}

TEST(QmmFast, ScaleAndActivationDtypes) {
  for (int bits : {4, 8})
    for (Dtype sdt : {Dtype::bf16, Dtype::f16})
      for (int64_t m : {1, 3, 12}) check_case({bits, 64, 19, 640, m, sdt, Dtype::f32});
  check_case({4, 64, 19, 640, 5, Dtype::f32, Dtype::bf16});
  check_case({8, 32, 19, 640, 2, Dtype::bf16, Dtype::bf16});
}

// One activation row (decode) for the formats the fast tier takes only there: affine 2/3/5/6 bits, mxfp4,
// nvfp4 (with and without a global scale); and 4/8 bits again through the same check. The oracle here is
// format-independent: the weights as `dequantize` gives them (itself checked against hand-derived
// vectors in quantized_test) times the activations as quantize_x_ref gives them, in f64. The kernel
// computes that sum as sum_g s'_g * sum d q u + b'_g * sum d q, with (u, s', b') = (code, scale, bias)
// for affine and (2v + 12, s / 2, -6 s) for E2M1 values v (qmm_int8.h); every term of either sum is at
// most (|w_j| + 2 |b'_g|) |d q_j| in magnitude, which bounds T in expect_oracle's derivation (one more
// rounding per weight covers dequantize's own f32 rounding of w).
void check_single_row(const QuantSpec& spec, int64_t n, int64_t k, Dtype sdt, float global) {
  SCOPED_TRACE(quant_spec_str(spec) + " N " + std::to_string(n) + " K " + std::to_string(k) + " scales " +
               std::string(name(sdt)) + " global " + std::to_string(global));
  Array gs = global > 0 ? Array::from(std::vector<float>{global}, {1}) : Array();
  auto qa = quantize(astype(rand_w(n, k, static_cast<uint32_t>(n * 5 + k + spec.bits)), sdt), spec, gs);
  std::vector<float> xv = rand_x(1, k, static_cast<uint32_t>(k * 3 + spec.group_size));
  Array x = Array::from(xv, {1, k});
  Array fast, exact;
  {
    ScopedQmmPrecision p(QmmPrecision::fast);
    fast = astype(quantized_matmul(x, qa.wq, qa.scales, qa.biases, true, spec, gs), Dtype::f32);
  }
  {
    ScopedQmmPrecision p(QmmPrecision::exact);
    exact = astype(quantized_matmul(x, qa.wq, qa.scales, qa.biases, true, spec, gs), Dtype::f32);
  }
  const std::vector<float> fv = fast.to_float_vector(), ev = exact.to_float_vector();
  const std::vector<float> wv = dequantize(qa.wq, qa.scales, qa.biases, spec, Dtype::f32, gs).to_float_vector();
  const bool affine = spec.mode == QuantMode::affine;
  const std::vector<float> bi = affine ? astype(qa.biases, Dtype::f32).to_float_vector() : std::vector<float>{};
  const int64_t groups = k / spec.group_size;
  // |b'_g|: affine's bias; for E2M1 6 s with s the group's decoded scale: 2^(e - 127) for mxfp4's E8M0
  // byte, e4m3(byte) * global / (448 * 6) for nvfp4 (e4m3_to_float is checked against
  // hand-derived values in quantized_test).
  const std::vector<uint8_t> sb = affine ? std::vector<uint8_t>{} : contiguous(qa.scales).to_vector<uint8_t>();
  std::vector<double> bmag(n * groups, 0.0);
  for (int64_t i = 0; i < n * groups; ++i) {
    if (affine) {
      bmag[i] = std::abs(bi[i]);
    } else if (spec.mode == QuantMode::mxfp4) {
      bmag[i] = 6.0 * std::ldexp(1.0, int(sb[i]) - 127);
    } else {
      bmag[i] = 6.0 * std::abs(quant_codec::e4m3_to_float(sb[i])) * (global > 0 ? global / (448.0 * 6.0) : 1.0);
    }
  }
  std::vector<int> q;
  std::vector<float> d;
  quantize_x_ref(xv.data(), k, q, d, affine && spec.bits == 8 ? 32767.0f : 127.0f);
  int bad_oracle = 0, bad_exact = 0;
  for (int64_t r = 0; r < n; ++r) {
    double y = 0, t_abs = 0, rounding = 0, wx_abs = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double w = wv[r * k + j], dq = double(d[j / 32]) * q[j];
      y += w * dq;
      t_abs += (std::abs(w) + 2 * bmag[r * groups + j / spec.group_size]) * std::abs(dq);
      rounding += double(d[j / 32]) / 2 * std::abs(w);
      wx_abs += std::abs(w * xv[j]);
    }
    const double tol_oracle = (double(k) / 64 + groups + 2.0 * spec.group_size / 32 + 9) * kEps * t_abs + 1e-30;
    if (std::abs(fv[r] - y) > tol_oracle && ++bad_oracle <= 5)
      ADD_FAILURE() << "col " << r << ": fast " << fv[r] << " oracle " << y << " tol " << tol_oracle;
    const double tol_exact = rounding * (1 + 1e-6) + 1e-5 * wx_abs + tol_oracle;
    if (std::abs(fv[r] - ev[r]) > tol_exact && ++bad_exact <= 5)
      ADD_FAILURE() << "col " << r << ": fast " << fv[r] << " exact " << ev[r] << " tol " << tol_exact;
  }
  EXPECT_EQ(bad_oracle, 0);
  EXPECT_EQ(bad_exact, 0);
}

TEST(QmmFast, SingleRowFormatsMatchOracleAndExact) {
  // K = 384 (6 steps of 64: the two accumulators) and 352 (5.5 steps: an odd step and a last block of 32);
  // N = 13 rows, so the last row's packed words end the buffer (the unpacking must not read past it).
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int gs : {32, 64, 128})
      for (Dtype sdt : {Dtype::f32, Dtype::bf16, Dtype::f16}) {
        check_single_row({QuantMode::affine, bits, gs}, 13, 384, sdt, 0.0f);
        if (gs == 32) check_single_row({QuantMode::affine, bits, gs}, 13, 352, sdt, 0.0f);
      }
  for (int64_t k : {384, 352, 2080}) {
    check_single_row(default_quant_spec(QuantMode::mxfp4), 13, k, Dtype::f32, 0.0f);
    check_single_row(default_quant_spec(QuantMode::nvfp4), 13, k, Dtype::f32, 0.0f);
    check_single_row(default_quant_spec(QuantMode::nvfp4), 13, k, Dtype::f32, 3.5f);
  }
}

TEST(QmmFast, SingleRowFormatsTakeTheFastTier) {
  // The fast tier really runs for them (differs from the exact tier somewhere), and with two rows they
  // stay exact (bit-identical).
  for (QuantSpec spec : {QuantSpec{QuantMode::affine, 3, 64}, QuantSpec{QuantMode::affine, 6, 32},
                         default_quant_spec(QuantMode::mxfp4), default_quant_spec(QuantMode::nvfp4)}) {
    SCOPED_TRACE(quant_spec_str(spec));
    auto qa = quantize(rand_w(9, 256, 3), spec);
    auto [a1, b1] = both_tiers(Array::from(rand_x(1, 256, 4), {1, 256}), qa, true, spec);
    EXPECT_NE(a1.to_float_vector(), b1.to_float_vector());
    auto [a2, b2] = both_tiers(Array::from(rand_x(2, 256, 4), {2, 256}), qa, true, spec);
    EXPECT_EQ(a2.to_float_vector(), b2.to_float_vector());
  }
}

// gather_qmm under the fast tier (one batched pass over every selected expert) equals, bit for bit, the
// per-expert form written here from public ops: each expert's pairs' x rows stacked in pair order, one
// quantized_matmul on that expert's slice, rows scattered back. Decode pairs (one row each; a token's
// pairs share its row), pairs of several rows, many pairs per expert, bf16 activations; formats the tier
// takes at any row count (4/8-bit) and only for single rows (3-bit, mxfp4: experts with more rows stay
// exact in both forms).
TEST(QmmFast, GatherQmmEqualsPerExpertProducts) {
  ScopedQmmPrecision fast(QmmPrecision::fast);
  const int64_t E = 6, N = 40, K = 256;
  auto per_expert = [&](const Array& x, const QuantizedArrays& q, const std::vector<int32_t>& lhs,
                        const std::vector<int32_t>& rhs, const QuantSpec& spec) {
    const int64_t M = x.shape(1), P = static_cast<int64_t>(rhs.size());
    std::vector<Array> rows(P);
    for (int32_t e = 0; e < E; ++e) {
      std::vector<Array> xs;
      std::vector<int64_t> ps;
      for (int64_t p = 0; p < P; ++p)
        if (rhs[p] == e) xs.push_back(reshape(slice_axis(x, 0, lhs[p], lhs[p] + 1), {M, K})), ps.push_back(p);
      if (xs.empty()) continue;
      auto expert = [&](const Array& a) {
        return contiguous(reshape(slice_axis(a, 0, e, e + 1), {a.shape(1), a.shape(2)}));
      };
      Array y = quantized_matmul(concatenate(xs, 0), expert(q.wq), expert(q.scales),
                                 q.biases.valid() ? expert(q.biases) : Array(), true, spec);
      for (size_t i = 0; i < ps.size(); ++i)
        rows[ps[i]] =
            reshape(slice_axis(y, 0, static_cast<int64_t>(i) * M, static_cast<int64_t>(i + 1) * M), {1, M, N});
    }
    return concatenate(rows, 0);
  };
  const Array w = reshape(rand_w(E * N, K, 11), {E, N, K});
  for (QuantSpec spec : {QuantSpec{QuantMode::affine, 4, 64}, QuantSpec{QuantMode::affine, 8, 32},
                         QuantSpec{QuantMode::affine, 3, 64}, default_quant_spec(QuantMode::mxfp4)}) {
    QuantizedArrays q = quantize(w, spec);
    struct Shape3 {
      const char* what;
      int64_t xrows, M;
      std::vector<int32_t> lhs, rhs;
    };
    std::vector<int32_t> many_l(70), many_r(70), sorted_r(70);
    for (int i = 0; i < 70; ++i) many_l[i] = i, many_r[i] = (i * 7) % 5, sorted_r[i] = i * 5 / 70;
    for (const Shape3& c :
         {Shape3{"decode: 3 tokens x 3 experts", 3, 1, {0, 0, 0, 1, 1, 1, 2, 2, 2}, {4, 1, 0, 1, 5, 2, 0, 4, 1}},
          Shape3{"pairs of 3 rows", 4, 3, {3, 0, 3, 1, 2, 2}, {1, 1, 4, 1, 0, 1}},
          Shape3{"70 pairs over 5 experts", 70, 1, many_l, many_r},
          // sorted tokens: each expert's rows of x and of the result are consecutive (in place)
          Shape3{"70 sorted pairs", 70, 1, many_l, sorted_r}})
      for (Dtype dt : {Dtype::f32, Dtype::bf16}) {
        SCOPED_TRACE(quant_spec_str(spec) + " " + c.what + " " + std::string(name(dt)));
        Array x = astype(Array::from(rand_x(c.xrows * c.M, K, 21), {c.xrows, c.M, K}), dt);
        const int64_t P = static_cast<int64_t>(c.rhs.size());
        Array got =
            gather_qmm(x, q.wq, q.scales, q.biases, Array::from(c.lhs, {P}), Array::from(c.rhs, {P}), true, spec);
        Array want = per_expert(x, q, c.lhs, c.rhs, spec);
        ASSERT_EQ(got.shape(), (Shape{P, c.M, N}));
        EXPECT_EQ(got.dtype(), want.dtype());
        EXPECT_EQ(astype(got, Dtype::f32).to_float_vector(), astype(want, Dtype::f32).to_float_vector());
      }
  }
}

TEST(QmmFast, OtherFormatsStayExact) {
  // With more than one row, 3-bit affine and mxfp4 are outside the fast tier, as is transpose=false:
  // bit-identical to the exact tier.
  for (QuantSpec spec : {QuantSpec{QuantMode::affine, 3, 32}, default_quant_spec(QuantMode::mxfp4)}) {
    auto qa = quantize(rand_w(9, 256, 3), spec);
    auto [a, b] = both_tiers(Array::from(rand_x(3, 256, 4), {3, 256}), qa, true, spec);
    EXPECT_EQ(a.to_float_vector(), b.to_float_vector()) << quant_spec_str(spec);
  }
  QuantSpec spec{QuantMode::affine, 4, 32};
  auto qa = quantize(rand_w(64, 96, 5), spec);  // W [64, 96]: x [2, 64] @ W
  auto [a, b] = both_tiers(Array::from(rand_x(2, 64, 6), {2, 64}), qa, false, spec);
  EXPECT_EQ(a.to_float_vector(), b.to_float_vector());
}

TEST(QmmFast, Switch) {
  {
    ScopedQmmPrecision p(QmmPrecision::fast);
    EXPECT_EQ(qmm_precision(), QmmPrecision::fast);
    {
      ScopedQmmPrecision e(QmmPrecision::exact);
      EXPECT_EQ(qmm_precision(), QmmPrecision::exact);
    }
    EXPECT_EQ(qmm_precision(), QmmPrecision::fast);
  }
  EXPECT_EQ(parse_qmm_precision("exact", "--qmm"), QmmPrecision::exact);
  EXPECT_EQ(parse_qmm_precision("fast", "--qmm"), QmmPrecision::fast);
  try {
    parse_qmm_precision("int8", "--qmm");
    ADD_FAILURE() << "'int8' should be rejected";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("--qmm must be exact or fast, got 'int8'"), std::string::npos) << e.what();
  }
}

TEST(QmmFast, ProcessDefaultIsFastAndLoomQmmSelects) {
  // Fresh `loom logits` processes on a 4-bit g32 copy of the llama fixture: without LOOM_QMM the fast
  // tier runs (logits equal LOOM_QMM=fast's bit for bit and differ from LOOM_QMM=exact's); a bad value
  // is a one-line error.
  namespace fs = std::filesystem;
  fs::path dir = fs::path(LOOM_BINARY_DIR) / ("qmm_fast_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  CliResult c = run_loom("convert --hf-path " + fixture_dir("llama") + " --mlx-path " + (dir / "m").string() +
                         " -q --q-bits 4 --q-group-size 32");
  ASSERT_EQ(c.status, 0) << c.output;
  auto logits = [&](const std::string& env, const std::string& name) {
    std::string out = (dir / (name + ".npy")).string();
    CliResult r = run_loom("logits --model " + (dir / "m").string() + " --tokens 1,5,9,13,2,7 --out " + out, env);
    EXPECT_EQ(r.status, 0) << r.output;
    return io::load_npy(out).to_float_vector();
  };
  auto def = logits("env -u LOOM_QMM", "default"), fast = logits("LOOM_QMM=fast", "fast"),
       exact = logits("LOOM_QMM=exact", "exact");
  EXPECT_EQ(def, fast);
  EXPECT_NE(def, exact);
  CliResult bad = run_loom("logits --model " + (dir / "m").string() + " --tokens 1,2 --out " + (dir / "bad.npy").string(),
                           "LOOM_QMM=int4");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("LOOM_QMM must be exact or fast, got 'int4'"), std::string::npos) << bad.output;
  fs::remove_all(dir);
}

// ---- logits level

Array run_full(models::LanguageModel& m, const std::vector<int32_t>& ids) {
  models::Cache c = m.make_cache();
  Array l = m.forward(tokens_array(ids), c, models::LogitsMode::all);
  return reshape(l, {l.shape(1), l.shape(2)});
}

nn::QuantPredicate all_with(const QuantSpec& spec) {
  return [spec](const std::string&, nn::Quantizable& l) -> std::optional<QuantSpec> {
    if (l.quant_axis_size() % spec.group_size) return std::nullopt;
    return spec;
  };
}

TEST(QmmFast, QuantizedFixturesFastCloseToExact) {
  // Dense fixtures and MoE fixtures (gather_qmm runs the same kernel per expert). Their hidden size is
  // 32, so group size 32 quantizes every projection with a multiple-of-32 input; at 64 only the dense
  // models' down_proj (input 64) is quantized, which llama checks.
  //
  // The bound: one quantized matmul's relative error is about d / sqrt(12) / rms(x) per input value,
  // with d = max|x| / 127 over a block of 32 (max|x| is 2-5 rms here, heavier-tailed after SiLU * up):
  // 0.5-1% (0.5% measured on Gaussian data at K = 32 and K = 2048 alike). The 2-layer fixtures chain 9
  // quantized matmuls between the embedding and the logits, and the max over 12 x 128 logits is about
  // 3x the rms: 2-5% (observed 1.8-4.6%). So the 1e-2 holds for no int8-per-32 scheme on these
  // 32-wide models (llama.cpp's Q8_0 activations included); 6e-2 is asserted for the dense models. 8-bit
  // weights take int16 activations (d = max|x| / 32767: ~258x smaller steps), which meet 1e-2 with room
  // (observed 7e-5 to 1.9e-4); 1e-2 is asserted there. MoE
  // routing decides discontinuously (a near-tie between experts can flip, observed once at 0.26), so
  // the MoE fixtures get the margin-based greedy check only.
  struct Fixture {
    const char* name;
    bool moe;
  };
  for (const Fixture& f : {Fixture{"llama", false}, Fixture{"qwen3", false}, Fixture{"qwen2", false},
                           Fixture{"mixtral", true}, Fixture{"qwen3_moe", true}}) {
    Reference ref = load_reference(f.name);
    std::vector<QuantSpec> specs{{QuantMode::affine, 4, 32}, {QuantMode::affine, 8, 32}};
    if (std::string(f.name) == "llama") specs.push_back({QuantMode::affine, 4, 64});
    if (!f.moe) {  // formats the fast tier takes for single rows only: token by token differs from exact
      specs.push_back({QuantMode::affine, 3, 32});
      specs.push_back(default_quant_spec(QuantMode::mxfp4));
    }
    for (const QuantSpec& spec : specs) {
      const std::string what = std::string(f.name) + " " + quant_spec_str(spec);
      auto q = models::load_model(fixture_dir(f.name));
      models::quantize_model(*q.model, spec);
      for (const auto& prompt : ref.prompts) {
        Array exact_full, fast_full, fast_steps;
        {
          ScopedQmmPrecision p(QmmPrecision::exact);
          exact_full = run_full(*q.model, prompt);
        }
        {
          ScopedQmmPrecision p(QmmPrecision::fast);
          fast_full = run_full(*q.model, prompt);
          fast_steps = run_chunked(*q.model, prompt, 1);  // one row per call: the decode GEMV
        }
        const double bound = f.moe ? 0.0 : spec.mode == QuantMode::affine && spec.bits == 8 ? 1e-2 : 6e-2;
        const bool prefill_fast = spec.mode == QuantMode::affine && (spec.bits == 4 || spec.bits == 8);
        expect_fast_logits_close(fast_full, exact_full, bound, what + " full pass", prefill_fast);
        expect_fast_logits_close(reshape(fast_steps, exact_full.shape()), exact_full, bound, what + " token by token");
      }
    }
  }
}

}  // namespace
}  // namespace loom::test
