// Fused ops (loom::fast) against their twins in loom::fast::detail, built from primitive ops, on odd and
// non-contiguous shapes, in f32 (tight) and bf16/f16 (one or two ulps of the output dtype).
#include "loom/ops/fast.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "loom/backend/cpu/simd.h"
#include "loom/ops/ops.h"
#include "tests/ops/op_test_util.h"

namespace loom {
namespace {

using test::all_close;
using test::rand_array;
using test::rand_gapped;
using test::rand_swapped;

constexpr double kTolF32 = 1e-5;
constexpr double kTolHalf = 1e-2;

double tol_for(Dtype dt) { return dt == Dtype::f32 ? kTolF32 : kTolHalf; }

const Dtype kDtypes[] = {Dtype::f32, Dtype::bf16, Dtype::f16};

// ---------------------------------------------------------------- norms

// matmuls_t and swiglu_matmul_t are the separate matmuls (and fast::swiglu): on the CPU they run them one
// by one, for one dtype (the grouped kernel call, x flattened to [M, K]), for 3-d inputs, and for mixed
// dtypes (separate calls). The grouped call multiplies the flattened rows at once where matmul multiplies
// per batch entry, so BLAS may sum in another order: within 1e-5 of max |ref| (f32), one bf16 step (2^-7).
TEST(MatmulsT, EqualSeparateCalls) {
  for (Dtype dt : {Dtype::f32, Dtype::bf16})
    for (bool mixed : {false, true}) {
      SCOPED_TRACE(std::string(name(dt)) + (mixed ? " mixed" : ""));
      std::vector<Array> ws{rand_array({40, 64}, 1, dt), rand_array({24, 64}, 2, mixed ? Dtype::f32 : dt),
                            rand_array({8, 64}, 3, dt)};
      Array x = rand_array({2, 3, 64}, 4, dt);
      std::vector<Array> got = matmuls_t(x, ws);
      ASSERT_EQ(got.size(), ws.size());
      for (size_t i = 0; i < ws.size(); ++i) {
        Array want = matmul(x, transpose(ws[i]));
        EXPECT_EQ(got[i].shape(), want.shape());
        EXPECT_EQ(got[i].dtype(), want.dtype());
        EXPECT_TRUE(all_close(got[i], want, got[i].dtype() == Dtype::f32 ? 1e-5 : 0x1p-7)) << "product " << i;
      }
      Array up = rand_array({40, 64}, 5, mixed ? Dtype::f32 : dt);
      Array sw = swiglu_matmul_t(x, ws[0], up);
      EXPECT_TRUE(all_close(sw, fast::swiglu(matmul(x, transpose(ws[0])), matmul(x, transpose(up))),
                            sw.dtype() == Dtype::f32 ? 1e-5 : 0x1p-6));
    }
  // A single weight (nn::Linear's call), and a non-contiguous weight (a gapped view: the group refuses it
  // and the products run as separate matmuls, since a copy may not precede the grouped kernel).
  Array x = rand_array({2, 3, 64}, 6);
  Array w = rand_array({40, 64}, 7), gapped = rand_gapped({24, 64}, 8);
  ASSERT_FALSE(gapped.is_contiguous());
  EXPECT_TRUE(all_close(matmuls_t(x, {w})[0], matmul(x, transpose(w)), 1e-5));
  std::vector<Array> got = matmuls_t(x, {w, gapped});
  EXPECT_TRUE(all_close(got[0], matmul(x, transpose(w)), 1e-5));
  EXPECT_TRUE(all_close(got[1], matmul(x, transpose(gapped)), 0.0));
  EXPECT_TRUE(all_close(swiglu_matmul_t(x, gapped, gapped),
                        fast::swiglu(matmul(x, transpose(gapped)), matmul(x, transpose(gapped))), 0.0));
}

TEST(FastNorm, RmsNormMatchesReference) {
  for (Dtype dt : kDtypes) {
    SCOPED_TRACE(std::string(name(dt)));
    // [3, 5, 7, 13] as a transposed view, and [11, 40] with gapped rows.
    Array x1 = rand_swapped({3, 5, 7, 13}, 1, 1, 2, dt, -2, 2);
    Array x2 = rand_gapped({11, 40}, 2, dt, -3, 3);
    Array w13 = rand_array({13}, 3, dt, 0.5f, 1.5f);
    Array w40 = rand_gapped({40}, 4, dt, 0.5f, 1.5f);  // a strided weight too
    ASSERT_FALSE(x1.is_contiguous());
    ASSERT_FALSE(x2.is_contiguous());
    EXPECT_TRUE(all_close(fast::rms_norm(x1, w13, 1e-5f), fast::detail::rms_norm_reference(x1, w13, 1e-5f), tol_for(dt)));
    EXPECT_TRUE(all_close(fast::rms_norm(x2, w40, 1e-6f), fast::detail::rms_norm_reference(x2, w40, 1e-6f), tol_for(dt)));
    EXPECT_TRUE(all_close(fast::rms_norm(x1, Array(), 1e-5f), fast::detail::rms_norm_reference(x1, Array(), 1e-5f),
                          tol_for(dt)));
    EXPECT_EQ(fast::rms_norm(x1, w13, 1e-5f).dtype(), dt);
  }
}

TEST(FastNorm, AddRmsNormMatchesReference) {
  for (Dtype dt : kDtypes) {
    SCOPED_TRACE(std::string(name(dt)));
    Array x = rand_swapped({3, 5, 7, 24}, 10, 0, 1, dt);
    Array r = rand_gapped({3, 5, 7, 24}, 11, dt);
    Array w = rand_array({24}, 12, dt, 0.5f, 1.5f);
    auto [y, s] = fast::add_rms_norm(x, r, w, 1e-5f);
    auto [yr, sr] = fast::detail::add_rms_norm_reference(x, r, w, 1e-5f);
    EXPECT_TRUE(all_close(s, sr, tol_for(dt))) << "sum";
    EXPECT_TRUE(all_close(y, yr, tol_for(dt))) << "normed";
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_EQ(s.dtype(), dt);
  }
}

// The normed output in another dtype than the sum: the f32 result rounded once, i.e. exactly astype of
// the default output (the models write their compute dtype this way), with the sum unchanged.
TEST(FastNorm, AddRmsNormOutputDtype) {
  Array x = rand_array({4, 40}, 30), r = rand_gapped({4, 40}, 31, Dtype::f32);
  Array w = rand_array({40}, 32, Dtype::f32, 0.5f, 1.5f);
  auto [y32, s32] = fast::add_rms_norm(x, r, w, 1e-6f);
  for (Dtype odt : {Dtype::bf16, Dtype::f16, Dtype::f32}) {
    SCOPED_TRACE(std::string(name(odt)));
    auto [y, s] = fast::add_rms_norm(x, r, w, 1e-6f, odt);
    EXPECT_EQ(y.dtype(), odt);
    EXPECT_EQ(s.dtype(), Dtype::f32);
    EXPECT_EQ(astype(y32, odt).to_float_vector(), y.to_float_vector());
    EXPECT_EQ(s32.to_float_vector(), s.to_float_vector());
  }
  EXPECT_THROW(fast::add_rms_norm(x, r, w, 1e-6f, Dtype::i32), std::exception);
}

TEST(FastNorm, LayerNormMatchesReference) {
  for (Dtype dt : kDtypes) {
    SCOPED_TRACE(std::string(name(dt)));
    Array x = rand_swapped({3, 5, 7, 13}, 20, 0, 2, dt, 1, 3);  // offset mean, so centring matters
    Array w = rand_array({13}, 21, dt, 0.5f, 1.5f);
    Array b = rand_gapped({13}, 22, dt);
    EXPECT_TRUE(all_close(fast::layer_norm(x, w, b, 1e-5f), fast::detail::layer_norm_reference(x, w, b, 1e-5f), tol_for(dt)));
    EXPECT_TRUE(all_close(fast::layer_norm(x, Array(), Array(), 1e-5f),
                          fast::detail::layer_norm_reference(x, Array(), Array(), 1e-5f), tol_for(dt)));
    EXPECT_TRUE(all_close(fast::layer_norm(x, w, Array(), 1e-5f), fast::detail::layer_norm_reference(x, w, Array(), 1e-5f),
                          tol_for(dt)));
  }
}

TEST(FastNorm, RejectsBadWeight) {
  Array x = rand_array({2, 8}, 1);
  EXPECT_THROW(fast::rms_norm(x, rand_array({7}, 2), 1e-5f), std::exception);
  EXPECT_THROW(fast::layer_norm(x, Array(), rand_array({9}, 2), 1e-5f), std::exception);
  EXPECT_THROW(fast::add_rms_norm(x, rand_array({2, 7}, 3), Array(), 1e-5f), std::exception);
}

// ---------------------------------------------------------------- swiglu

TEST(FastSwiglu, MatchesReference) {
  for (Dtype dt : kDtypes) {
    SCOPED_TRACE(std::string(name(dt)));
    Array g = rand_swapped({3, 5, 7, 13}, 30, 1, 3, dt, -6, 6);
    Array u = rand_gapped({3, 5, 7, 13}, 31, dt, -2, 2);
    Array out = fast::swiglu(g, u);
    EXPECT_EQ(out.dtype(), dt);
    EXPECT_TRUE(all_close(out, fast::detail::swiglu_reference(g, u), tol_for(dt)));
  }
  // Large enough to split over the pool (more than one 512-element chunk per task).
  Array g = rand_array({7, 1531}, 32, Dtype::f32, -8, 8), u = rand_array({7, 1531}, 33);
  EXPECT_TRUE(all_close(fast::swiglu(g, u), fast::detail::swiglu_reference(g, u), kTolF32));
}

// ---------------------------------------------------------------- rope

struct RopeCase {
  int dims;
  bool traditional;
  bool explicit_freqs;
  float scale;
  float base;
};

TEST(FastRope, IntOffsetMatchesReference) {
  const RopeCase cases[] = {
      {24, false, false, 1.0f, 10000.0f}, {24, true, false, 1.0f, 10000.0f}, {16, false, false, 0.5f, 500000.0f},
      {16, true, false, 2.0f, 10000.0f},  {10, false, true, 1.0f, 0.0f},     {10, true, true, 0.25f, 0.0f},
  };
  for (Dtype dt : kDtypes) {
    for (const RopeCase& c : cases) {
      for (int64_t D : {24, 40}) {
        if (c.dims > D) continue;
        for (int64_t offset : {0, 13}) {
          SCOPED_TRACE(std::string(name(dt)) + " dims=" + std::to_string(c.dims) + " D=" + std::to_string(D) +
                       " trad=" + std::to_string(c.traditional) + " freqs=" + std::to_string(c.explicit_freqs) +
                       " offset=" + std::to_string(offset));
          RopeSpec spec;
          spec.dims = c.dims;
          spec.traditional = c.traditional;
          spec.scale = c.scale;
          if (c.base > 0) spec.base = c.base;
          if (c.explicit_freqs) spec.freqs = rand_array({c.dims / 2}, 40 + c.dims, Dtype::f32, 1.0f, 50.0f);
          // [B=2, H=3, L=5, D] as the transpose of the model's [B, L, H, D].
          Array x = rand_swapped({2, 3, 5, D}, 41, 1, 2, dt, -2, 2);
          ASSERT_FALSE(x.is_contiguous());
          Array out = fast::rope(x, spec, offset);
          EXPECT_EQ(out.dtype(), dt);
          Array ref = fast::detail::rope_reference(x, spec, full({2}, static_cast<double>(offset), Dtype::i32));
          EXPECT_TRUE(all_close(out, ref, tol_for(dt)));
          // Features past `dims` pass through untouched.
          if (c.dims < D)
            EXPECT_TRUE(all_close(slice_axis(out, -1, c.dims, D), slice_axis(x, -1, c.dims, D), 0.0));
        }
      }
    }
  }
}

TEST(FastRope, PerRowOffsetsMatchReference) {
  for (Dtype dt : kDtypes) {
    for (bool trad : {false, true}) {
      SCOPED_TRACE(std::string(name(dt)) + " trad=" + std::to_string(trad));
      RopeSpec spec;
      spec.dims = 32;
      spec.traditional = trad;
      Array x = rand_gapped({3, 2, 7, 40}, 50, dt, -1, 1);  // partial rotation: dims 32 of 40
      Array offsets = Array::from<int32_t>({0, 5, 19}, {3});
      Array out = fast::rope(x, spec, offsets);
      EXPECT_TRUE(all_close(out, fast::detail::rope_reference(x, spec, offsets), tol_for(dt)));
      // Row b must equal an int-offset rope of that row alone.
      for (int b = 0; b < 3; ++b) {
        Array row = slice_axis(x, 0, b, b + 1);
        Array one = fast::rope(row, spec, static_cast<int64_t>(b == 0 ? 0 : b == 1 ? 5 : 19));
        EXPECT_TRUE(all_close(slice_axis(out, 0, b, b + 1), one, 0.0)) << "row " << b;
      }
    }
  }
  // L = 1 decode with per-row offsets.
  RopeSpec spec;
  spec.dims = 24;
  Array x = rand_swapped({4, 6, 1, 24}, 51, 1, 2);
  Array offsets = Array::from<int32_t>({3, 0, 40, 7}, {4});
  EXPECT_TRUE(all_close(fast::rope(x, spec, offsets), fast::detail::rope_reference(x, spec, offsets), kTolF32));
}

TEST(FastRope, RejectsBadSpec) {
  Array x = rand_array({1, 2, 3, 8}, 1);
  RopeSpec spec;
  spec.dims = 7;
  EXPECT_THROW(fast::rope(x, spec, 0), std::exception);
  spec.dims = 10;
  EXPECT_THROW(fast::rope(x, spec, 0), std::exception);
  spec.dims = 8;
  spec.freqs = rand_array({3}, 2);
  EXPECT_THROW(fast::rope(x, spec, 0), std::exception);
  spec.freqs = Array();
  EXPECT_THROW(fast::rope(x, spec, Array::from<int32_t>({1, 2}, {2})), std::exception);
}

// A copy with its own buffer (the caches below are written in place).
Array clone(const Array& a) {
  Array c = Array::empty(a.shape(), a.dtype(), a.device());
  assign(c, a);
  return c;
}

// rope_kv_write is its unfused steps, fast::rope of q and k and assign_at of the rotated keys and the values,
// bit for bit: q, the written slots, and every other slot of the caches (untouched); a position outside
// the caches writes nothing (q is still rotated). Non-contiguous q/k/v (the model's transposed views),
// GQA, per-row int32/int64 offsets, partial and traditional rotation, explicit freqs, L = 1 and 3.
TEST(FastRopeKvWrite, EqualsRopeThenAssignAt) {
  for (Dtype dt : kDtypes)
    for (bool trad : {false, true})
      for (int64_t L : {1, 3}) {
        RopeSpec spec;
        spec.dims = 16;  // of 24
        spec.traditional = trad;
        if (trad) spec.freqs = rand_array({8}, 60, Dtype::f32, 1.0f, 50.0f);
        Array q = rand_swapped({2, 4, L, 24}, 61, 1, 2, dt, -2, 2);
        Array k = rand_swapped({2, 2, L, 24}, 62, 1, 2, dt, -2, 2);
        Array v = rand_swapped({2, 2, L, 24}, 63, 1, 2, dt, -2, 2);
        ASSERT_EQ(q.is_contiguous(), L == 1);  // a transposed view once L > 1
        Array offsets = Array::from<int32_t>({5, 0}, {2}, L == 1 ? Dtype::i32 : Dtype::i64);
        // A page of 8 positions standing for positions [16, 24): p = position - 16.
        for (int32_t position : {16, 18, static_cast<int32_t>(24 - L), static_cast<int32_t>(25 - L), 15}) {
          SCOPED_TRACE(std::string(name(dt)) + " trad=" + std::to_string(trad) + " L=" + std::to_string(L) +
                       " position=" + std::to_string(position));
          Array kc = rand_array({2, 2, 8, 24}, 64, dt), vc = rand_array({2, 2, 8, 24}, 65, dt);
          Array kc_ref = clone(kc), vc_ref = clone(vc), before = clone(kc);
          Array pos = Array::from<int32_t>({position}, {1});
          Array out = fast::rope_kv_write(q, k, v, spec, offsets, kc, vc, pos, 16);
          Array ref = fast::detail::rope_kv_write_reference(q, k, v, spec, offsets, kc_ref, vc_ref, pos, 16);
          EXPECT_TRUE(all_close(out, ref, 0.0));
          EXPECT_TRUE(all_close(out, fast::rope(q, spec, offsets), 0.0));
          EXPECT_TRUE(all_close(kc, kc_ref, 0.0));
          EXPECT_TRUE(all_close(vc, vc_ref, 0.0));
          const bool inside = position >= 16 && position + L <= 24;
          EXPECT_EQ(all_close(kc, before, 0.0), !inside) << "keys written iff the position is inside the page";
        }
      }
}

TEST(FastRopeKvWrite, RejectsMismatches) {
  RopeSpec spec;
  spec.dims = 8;
  Array q = rand_array({1, 4, 1, 8}, 1), k = rand_array({1, 2, 1, 8}, 2), v = rand_array({1, 2, 1, 8}, 3);
  Array kc = rand_array({1, 2, 4, 8}, 4), vc = rand_array({1, 2, 4, 8}, 5);
  Array offs = Array::from<int32_t>({0}, {1}), pos = Array::from<int32_t>({0}, {1});
  auto fails_with = [](auto&& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "no error, expected: " << text;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  fails_with([&] { fast::rope_kv_write(q, k, v, spec, offs, astype(kc, Dtype::bf16), vc, pos, 0); }, "one dtype");
  fails_with(
      [&] {
        fast::rope_kv_write(q, rand_array({1, 3, 1, 8}, 6), v, spec, offs, kc, vc, pos, 0);
      },
      "Hq % Hkv == 0");
  fails_with(
      [&] {
        fast::rope_kv_write(q, k, v, spec, offs, rand_array({1, 2, 4, 6}, 7), vc, pos, 0);
      },
      "does not hold keys/values");
  fails_with(
      [&] {
        fast::rope_kv_write(q, k, v, spec, Array::from<int32_t>({0, 1}, {2}), kc, vc, pos, 0);
      },
      "per-row offsets");
  fails_with(
      [&] {
        fast::rope_kv_write(q, k, v, spec, offs, kc, vc, Array::from<int32_t>({0, 1}, {2}), 0);
      },
      "position must be one int32");
  spec.dims = 10;
  fails_with([&] { fast::rope_kv_write(q, k, v, spec, offs, kc, vc, pos, 0); }, "at most the head dim");
}

// ---------------------------------------------------------------- attention

struct AttnCase {
  std::string label;
  int64_t B, Hq, Hkv, L, S, D;
  AttentionMode mode = AttentionMode::causal;
  int window = 0, chunk = 0;
  float softcap = 0, scale = 0;
  bool sinks = false;
  int64_t q_offset = -1;
  std::vector<int32_t> q_offsets, kv_start;
  int mask = 0;  // 0 none, 1 additive float [B, 1, L, S], 2 bool [B, Hq, L, S], 3 additive [L, S]
};

std::vector<AttnCase> attention_cases() {
  std::vector<AttnCase> cs;
  auto add = [&](AttnCase c) { cs.push_back(std::move(c)); };
  add({.label = "prefill causal gqa", .B = 2, .Hq = 6, .Hkv = 2, .L = 9, .S = 9, .D = 24});
  add({.label = "prefill causal mha", .B = 1, .Hq = 3, .Hkv = 3, .L = 11, .S = 11, .D = 40});
  // Longer than the CPU prefill kernel's tiles (6 rows x 16 keys, 48-row tasks): rows of one tile see
  // different key counts.
  add({.label = "long prefill causal after a prefix", .B = 2, .Hq = 6, .Hkv = 2, .L = 37, .S = 45, .D = 24});
  add({.label = "long prefill window",
       .B = 1,
       .Hq = 4,
       .Hkv = 2,
       .L = 40,
       .S = 40,
       .D = 40,
       .mode = AttentionMode::window,
       .window = 9});
  add({.label = "decode L=1", .B = 2, .Hq = 6, .Hkv = 2, .L = 1, .S = 17, .D = 40});
  add({.label = "decode L=1 mha", .B = 3, .Hq = 2, .Hkv = 2, .L = 1, .S = 5, .D = 24});
  add({.label = "chunked prefill (L<S, default q_offset)", .B = 2, .Hq = 6, .Hkv = 2, .L = 4, .S = 13, .D = 24});
  add({.label = "explicit q_offset", .B = 2, .Hq = 6, .Hkv = 2, .L = 3, .S = 12, .D = 24, .q_offset = 5});
  add({.label = "mode none", .B = 2, .Hq = 6, .Hkv = 2, .L = 5, .S = 9, .D = 24, .mode = AttentionMode::none});
  add({.label = "window", .B = 2, .Hq = 6, .Hkv = 2, .L = 10, .S = 14, .D = 24, .mode = AttentionMode::window, .window = 3});
  add({.label = "window decode", .B = 1, .Hq = 6, .Hkv = 2, .L = 1, .S = 20, .D = 40, .mode = AttentionMode::window, .window = 7});
  add({.label = "chunk", .B = 2, .Hq = 6, .Hkv = 2, .L = 13, .S = 13, .D = 24, .mode = AttentionMode::chunk, .chunk = 4});
  add({.label = "chunk with left padding", .B = 2, .Hq = 6, .Hkv = 2, .L = 11, .S = 11, .D = 24, .mode = AttentionMode::chunk,
       .chunk = 3, .kv_start = {0, 4}});
  add({.label = "left padding prefill", .B = 3, .Hq = 6, .Hkv = 2, .L = 8, .S = 8, .D = 24, .kv_start = {0, 3, 7}});
  add({.label = "left padding decode", .B = 2, .Hq = 6, .Hkv = 2, .L = 1, .S = 10, .D = 40, .kv_start = {0, 6}});
  add({.label = "per-row q_offsets", .B = 2, .Hq = 6, .Hkv = 2, .L = 3, .S = 12, .D = 24, .q_offsets = {9, 4},
       .kv_start = {0, 2}});
  add({.label = "softcap", .B = 2, .Hq = 6, .Hkv = 2, .L = 7, .S = 7, .D = 24, .softcap = 0.7f, .scale = 2.0f});
  add({.label = "sinks", .B = 2, .Hq = 6, .Hkv = 2, .L = 6, .S = 9, .D = 24, .sinks = true});
  add({.label = "sinks + window + padding", .B = 2, .Hq = 6, .Hkv = 2, .L = 6, .S = 9, .D = 40, .mode = AttentionMode::window,
       .window = 2, .sinks = true, .kv_start = {0, 5}});
  add({.label = "additive mask", .B = 2, .Hq = 6, .Hkv = 2, .L = 5, .S = 8, .D = 24, .mode = AttentionMode::none, .mask = 1});
  add({.label = "additive [L,S] mask + causal", .B = 2, .Hq = 6, .Hkv = 2, .L = 5, .S = 8, .D = 24, .mask = 3});
  add({.label = "bool mask", .B = 2, .Hq = 6, .Hkv = 2, .L = 5, .S = 8, .D = 24, .mode = AttentionMode::none, .mask = 2});
  add({.label = "bool mask + causal + softcap", .B = 2, .Hq = 6, .Hkv = 3, .L = 5, .S = 8, .D = 40, .softcap = 1.5f,
       .mask = 2});
  return cs;
}

struct AttnInputs {
  Array q, k, v, mask;
  AttentionSpec spec;
  AttentionPositions pos;
};

AttnInputs make_attention(const AttnCase& c, Dtype dt, uint32_t seed) {
  AttnInputs in;
  // Model layout: q/k/v are [B, L, H, D] projections transposed to [B, H, L, D] (non-contiguous).
  in.q = rand_swapped({c.B, c.Hq, c.L, c.D}, seed, 1, 2, dt, -2, 2);
  in.k = rand_swapped({c.B, c.Hkv, c.S, c.D}, seed + 1, 1, 2, dt, -2, 2);
  in.v = rand_gapped({c.B, c.Hkv, c.S, c.D}, seed + 2, dt, -1, 1);
  in.spec.mode = c.mode;
  in.spec.window = c.window;
  in.spec.chunk = c.chunk;
  in.spec.softcap = c.softcap;
  in.spec.scale = c.scale;
  if (c.sinks) in.spec.sinks = rand_array({c.Hq}, seed + 3, Dtype::f32, -1, 2);
  in.pos.q_offset = c.q_offset;
  if (!c.q_offsets.empty()) in.pos.q_offsets = Array::from(c.q_offsets, {c.B});
  if (!c.kv_start.empty()) in.pos.kv_start = Array::from(c.kv_start, {c.B});
  if (c.mask == 1 || c.mask == 3) {
    Shape ms = c.mask == 1 ? Shape{c.B, 1, c.L, c.S} : Shape{c.L, c.S};
    std::vector<float> m = rand_array(ms, seed + 4, Dtype::f32, -2, 1).to_float_vector();
    for (size_t i = 0; i < m.size(); i += 5) m[i] = -std::numeric_limits<float>::infinity();
    in.mask = Array::from(m, ms);
  } else if (c.mask == 2) {
    std::vector<float> r = rand_array({c.B, c.Hq, c.L, c.S}, seed + 4, Dtype::f32, 0, 1).to_float_vector();
    std::vector<bool> m(r.size());
    for (size_t i = 0; i < r.size(); ++i) m[i] = r[i] < 0.7f;
    in.mask = Array::from(m, {c.B, c.Hq, c.L, c.S});
  }
  return in;
}

TEST(FastAttention, MatchesReference) {
  uint32_t seed = 100;
  for (const AttnCase& c : attention_cases()) {
    for (Dtype dt : kDtypes) {
      SCOPED_TRACE(c.label + " " + std::string(name(dt)));
      AttnInputs in = make_attention(c, dt, seed += 10);
      Array out = fast::scaled_dot_product_attention(in.q, in.k, in.v, in.spec, in.pos, in.mask);
      Array ref = fast::detail::scaled_dot_product_attention_reference(in.q, in.k, in.v, in.spec, in.pos, in.mask);
      EXPECT_EQ(out.dtype(), dt);
      EXPECT_EQ(out.shape(), (Shape{c.B, c.Hq, c.L, c.D}));
      EXPECT_TRUE(all_close(out, ref, tol_for(dt)));
    }
  }
}

// The reference is not allowed to be trivially equal to the kernel: check that masking modes actually
// change the result and that fully padded rows come out as zeros.
TEST(FastAttention, ModesMatterAndPaddingRowsAreZero) {
  AttnCase c{.label = "x", .B = 2, .Hq = 4, .Hkv = 2, .L = 6, .S = 6, .D = 24, .kv_start = {0, 3}};
  AttnInputs in = make_attention(c, Dtype::f32, 7);
  Array causal = fast::scaled_dot_product_attention(in.q, in.k, in.v, in.spec, in.pos);
  AttentionSpec none = in.spec;
  none.mode = AttentionMode::none;
  Array full_attn = fast::scaled_dot_product_attention(in.q, in.k, in.v, none, in.pos);
  EXPECT_FALSE(all_close(causal, full_attn, 1e-3));
  // Row 1 query positions 0..2 see nothing (all keys before kv_start = 3 are padding).
  Array pad = slice(causal, {1, 0, 0, 0}, {2, 4, 3, 24});
  for (float v : pad.to_float_vector()) ASSERT_EQ(v, 0.0f);
  // The last query of row 0 in causal mode sees every key: equal to mode none there.
  EXPECT_TRUE(all_close(slice(causal, {0, 0, 5, 0}, {1, 4, 6, 24}), slice(full_attn, {0, 0, 5, 0}, {1, 4, 6, 24}), kTolF32));
}

// Left padding may hold anything (a batched cache's unused slots): NaN keys and values before kv_start
// must not reach any output, in prefill (the register-tiled path, 20 rows: several tiles) and decode.
TEST(FastAttention, LeftPaddingNaNNeverLeaks) {
  for (int64_t L : {20, 1}) {
    for (Dtype dt : kDtypes) {
      SCOPED_TRACE("L=" + std::to_string(L) + " " + std::string(name(dt)));
      AttnCase c{.label = "x", .B = 3, .Hq = 4, .Hkv = 2, .L = L, .S = 37, .D = 40, .kv_start = {0, 5, 17}};
      AttnInputs in = make_attention(c, dt, 31);
      auto poison = [&](const Array& a) {  // a's values with NaN in every batch row's padding slots
        std::vector<float> f = contiguous(a).to_float_vector();
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t h = 0; h < c.Hkv; ++h)
            for (int64_t p = 0; p < c.kv_start[b]; ++p)
              for (int64_t d = 0; d < c.D; ++d)
                f[((b * c.Hkv + h) * c.S + p) * c.D + d] = std::numeric_limits<float>::quiet_NaN();
        return Array::from(f, a.shape(), dt);
      };
      Array out = fast::scaled_dot_product_attention(in.q, poison(in.k), poison(in.v), in.spec, in.pos);
      Array ref = fast::detail::scaled_dot_product_attention_reference(in.q, in.k, in.v, in.spec, in.pos, Array());
      EXPECT_TRUE(all_close(out, ref, tol_for(dt)));
      for (float v : out.to_float_vector()) ASSERT_FALSE(std::isnan(v)) << "padding NaN leaked";
    }
  }
}

// Paged form: keys/values in several blocks of different sizes, `length` less than their total; must
// equal the plain form on the first `length` positions of the concatenated keys.
TEST(FastAttention, PagedBlocksMatchConcatenatedReference) {
  struct PagedCase {
    std::string label;
    int64_t B, Hq, Hkv, L, D;
    std::vector<int64_t> blocks;
    int64_t length;
    AttentionMode mode;
    int window;
    std::vector<int32_t> kv_start;
    bool sinks;
  };
  const PagedCase cases[] = {
      {"decode gqa", 2, 6, 2, 1, 24, {5, 3, 8, 4}, 17, AttentionMode::causal, 0, {}, false},
      {"prefill tail", 2, 6, 2, 4, 40, {7, 2, 9}, 15, AttentionMode::causal, 0, {0, 3}, false},
      {"window + sinks", 1, 6, 6, 3, 24, {4, 4, 4, 4}, 14, AttentionMode::window, 5, {}, true},
      {"length ends on a block edge", 2, 6, 2, 2, 24, {6, 5, 7}, 11, AttentionMode::causal, 0, {1, 0}, false},
  };
  uint32_t seed = 900;
  for (const PagedCase& c : cases) {
    for (Dtype dt : kDtypes) {
      SCOPED_TRACE(c.label + " " + std::string(name(dt)));
      fast::KVBlocks kv;
      for (size_t i = 0; i < c.blocks.size(); ++i) {
        int64_t P = c.blocks[i];
        // Alternate contiguous pages and transposed views, as a cache's storage may be either.
        if (i % 2 == 0) {
          kv.keys.push_back(rand_array({c.B, c.Hkv, P, c.D}, seed++, dt, -2, 2));
          kv.values.push_back(rand_array({c.B, c.Hkv, P, c.D}, seed++, dt, -1, 1));
        } else {
          kv.keys.push_back(rand_swapped({c.B, c.Hkv, P, c.D}, seed++, 1, 2, dt, -2, 2));
          kv.values.push_back(rand_gapped({c.B, c.Hkv, P, c.D}, seed++, dt, -1, 1));
        }
      }
      kv.length = c.length;
      Array k = slice_axis(concatenate(kv.keys, 2), 2, 0, c.length);
      Array v = slice_axis(concatenate(kv.values, 2), 2, 0, c.length);
      Array q = rand_swapped({c.B, c.Hq, c.L, c.D}, seed++, 1, 2, dt, -2, 2);
      AttentionSpec spec;
      spec.mode = c.mode;
      spec.window = c.window;
      if (c.sinks) spec.sinks = rand_array({c.Hq}, seed++, Dtype::f32, -1, 1);
      AttentionPositions pos;
      if (!c.kv_start.empty()) pos.kv_start = Array::from(c.kv_start, {c.B});
      Array out = fast::scaled_dot_product_attention(q, kv, spec, pos);
      Array ref = fast::detail::scaled_dot_product_attention_reference(q, k, v, spec, pos, Array());
      EXPECT_TRUE(all_close(out, ref, tol_for(dt)));
      // And the plain form on the concatenated keys agrees too.
      EXPECT_TRUE(all_close(fast::scaled_dot_product_attention(q, k, v, spec, pos), ref, tol_for(dt)));
    }
  }
}

#ifdef LOOM_AVX2
// exp256 (the CPU attention's softmax) against e^x in double, rounded: within 2 ulp over the normal
// range, 0 below it (and for -inf), +inf above it.
TEST(CpuSimd, Exp256MatchesExp) {
  std::vector<float> xs;
  for (float x = -87.3f; x <= 88.7f; x += 0.0037f) xs.push_back(x);
  for (float x : {0.0f, -0.0f, 1e-8f, -1e-8f, 0.5f, -0.5f, 1.0f, -1.0f, 88.72f, -87.33f}) xs.push_back(x);
  int worst = 0;
  for (size_t i = 0; i + 8 <= xs.size(); i += 8) {
    float out[8];
    _mm256_storeu_ps(out, cpu::exp256(_mm256_loadu_ps(xs.data() + i)));
    for (int t = 0; t < 8; ++t) {
      const float want = static_cast<float>(std::exp(static_cast<double>(xs[i + t])));
      int32_t a, b;
      std::memcpy(&a, &out[t], 4);
      std::memcpy(&b, &want, 4);
      worst = std::max(worst, std::abs(a - b));
      ASSERT_LE(std::abs(a - b), 2) << "x " << xs[i + t] << ": " << out[t] << " vs " << want;
    }
  }
  EXPECT_GT(worst, 0);  // a polynomial, not expf itself
  float edge[8];
  _mm256_storeu_ps(edge, cpu::exp256(_mm256_setr_ps(-std::numeric_limits<float>::infinity(), -88.0f, -100.0f, -1e30f,
                                                    89.0f, 1e30f, std::numeric_limits<float>::infinity(), -87.0f)));
  for (int t = 0; t < 4; ++t) EXPECT_EQ(edge[t], 0.0f) << t;
  for (int t = 4; t < 7; ++t) EXPECT_EQ(edge[t], std::numeric_limits<float>::infinity()) << t;
  EXPECT_NEAR(edge[7], std::exp(-87.0), 1e-44);
}
#endif

TEST(FastAttention, RejectsBadArguments) {
  Array q = rand_array({1, 6, 2, 8}, 1), k = rand_array({1, 4, 5, 8}, 2), v = rand_array({1, 4, 5, 8}, 3);
  AttentionSpec spec;
  EXPECT_THROW(fast::scaled_dot_product_attention(q, k, v, spec), std::exception);  // 6 % 4 != 0
  Array k2 = rand_array({1, 2, 5, 8}, 2), v2 = rand_array({1, 2, 5, 8}, 3);
  fast::KVBlocks kv{{k2}, {v2}, 6};
  EXPECT_THROW(fast::scaled_dot_product_attention(q, kv, spec), std::exception);  // length > positions
  spec.mode = AttentionMode::window;
  EXPECT_THROW(fast::scaled_dot_product_attention(q, k2, v2, spec), std::exception);  // window 0
  spec.mode = AttentionMode::causal;
  spec.sinks = rand_array({5}, 4);
  EXPECT_THROW(fast::scaled_dot_product_attention(q, k2, v2, spec), std::exception);
}

}  // namespace
}  // namespace loom
