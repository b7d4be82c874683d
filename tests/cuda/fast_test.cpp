// CUDA parity of the fused ops (loom::fast): rms_norm, add_rms_norm, layer_norm, rope (int and per-row
// offsets), swiglu and scaled_dot_product_attention (plain arrays and paged KVBlocks) on the GPU
// against the CPU twins on the same views (non-contiguous where the model's layout is), in f32, bf16
// and f16. Shapes cross the CUDA kernels' dispatch points: warp vs block rows in the norms, decode vs
// prefill tiles, the tensor-core prefill path (bf16/f16, aligned rows), split-K with its combine pass,
// head dims 64/80/96/128/192/256, block edges inside tiles.
#include "loom/ops/fast.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom {
namespace {

using test::gpu_matches_cpu;
using test::on_gpu;
using test::rand_array;
using test::rand_gapped;
using test::rand_swapped;

constexpr double kTolF32 = 1e-5;
constexpr double kTolAttnF32 = 2e-5;
constexpr double kTolHalf = 1e-2;

double tol_for(Dtype dt) { return dt == Dtype::f32 ? kTolF32 : kTolHalf; }
double attn_tol_for(Dtype dt) { return dt == Dtype::f32 ? kTolAttnF32 : kTolHalf; }

const Dtype kDtypes[] = {Dtype::f32, Dtype::bf16, Dtype::f16};

// A 1-D array of n values whose elements sit `step` apart (a column of a wider matrix).
Array rand_strided_vector(int64_t n, int64_t step, uint32_t seed, Dtype dt, float lo, float hi) {
  Array m = rand_array({n, step}, seed, dt, lo, hi);
  return squeeze(slice_axis(m, 1, 0, 1), 1);
}

// ---------------------------------------------------------------- norms

TEST(CudaFastNorm, RmsNormMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    // Narrow rows (a warp each), rows of 1000 (a warp, many strides), and wide rows (a block each).
    struct Case {
      Array x;
      int64_t d;
    };
    Case cases[] = {
        {rand_swapped({3, 5, 7, 13}, 1, 1, 2, dt, -2, 2), 13},
        {rand_gapped({11, 40}, 2, dt, -3, 3), 40},
        {rand_gapped({2, 9, 1000}, 3, dt, -3, 3), 1000},
        {rand_swapped({4, 3, 4096}, 4, 0, 1, dt, -2, 2), 4096},
        {rand_array({2, 5000}, 5, dt, -1, 1), 5000},
        // Rows wider than a block holds in registers (8192): walked in chunks and read twice.
        {rand_array({3, 12345}, 8, dt, -1, 1), 12345},
        // As many rows as multiprocessors or more: 8 elements per thread (fewer rows take 2 or 4).
        {rand_gapped({150, 1000}, 9, dt, -3, 3), 1000},
        {rand_array({140, 4096}, 16, dt, -1, 1), 4096},
    };
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(name(dt)) + " " + shape_str(c.x.shape()));
      Array w = rand_array({c.d}, 6, dt, 0.5f, 1.5f);
      Array w32 = rand_array({c.d}, 7, Dtype::f32, 0.5f, 1.5f);  // an f32 weight on a half input
      for (const Array& wt : {w, w32, Array()}) {
        Array cpu = fast::rms_norm(c.x, wt, 1e-5f);
        Array gpu = fast::rms_norm(on_gpu(c.x), on_gpu(wt), 1e-5f);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, tol_for(dt)));
      }
    }
  }
}

TEST(CudaFastNorm, AddRmsNormMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    // 9000: more than one chunk of a row. 1024 and 5120: decode rows split over d / 256 blocks each.
    for (int64_t d : {24, 896, 1024, 2048, 4096, 5120, 9000}) {
      SCOPED_TRACE(std::string(name(dt)) + " d=" + std::to_string(d));
      // 105 rows (fewer than an H100's 132 multiprocessors: 2 or 4 elements per thread, or the split
      // kernel where d is a multiple of 256), 140 at d = 2048 and 4096 (8 per thread).
      const int64_t b = d == 2048 || d == 4096 ? 4 : 3;
      Array x = rand_swapped({b, 5, 7, d}, 10, 0, 1, dt);
      Array r = rand_gapped({b, 5, 7, d}, 11, dt);
      Array w = rand_array({d}, 12, dt, 0.5f, 1.5f);
      for (const Array& wt : {w, Array()}) {
        auto [y, s] = fast::add_rms_norm(x, r, wt, 1e-5f);
        auto [gy, gs] = fast::add_rms_norm(on_gpu(x), on_gpu(r), on_gpu(wt), 1e-5f);
        // The sum is rounded to the output dtype on both devices: it must agree exactly.
        EXPECT_TRUE(gpu_matches_cpu(gs, s, 0.0)) << "sum";
        EXPECT_TRUE(gpu_matches_cpu(gy, y, tol_for(dt))) << "normed";
      }
    }
    // Mixed dtypes: a half input with an f32 residual promotes to f32.
    SCOPED_TRACE(std::string(name(dt)) + " + f32 residual");
    Array x = rand_array({6, 130}, 13, dt), r = rand_gapped({6, 130}, 14, Dtype::f32);
    Array w = rand_array({130}, 15, dt, 0.5f, 1.5f);
    auto [y, s] = fast::add_rms_norm(x, r, w, 1e-6f);
    auto [gy, gs] = fast::add_rms_norm(on_gpu(x), on_gpu(r), on_gpu(w), 1e-6f);
    EXPECT_EQ(gy.dtype(), Dtype::f32);
    EXPECT_TRUE(gpu_matches_cpu(gs, s, 0.0));
    EXPECT_TRUE(gpu_matches_cpu(gy, y, kTolF32));
  }
}

// The normed output written in another dtype than the f32 sum (what the decoder body asks for).
TEST(CudaFastNorm, AddRmsNormOutputDtypeMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (int64_t d : {64, 4096, 9000}) {
    Array x = rand_array({3, d}, 40, Dtype::bf16), r = rand_gapped({3, d}, 41, Dtype::f32);
    Array w = rand_array({d}, 42, Dtype::bf16, 0.5f, 1.5f);
    for (Dtype odt : {Dtype::bf16, Dtype::f16}) {
      SCOPED_TRACE(std::string(name(odt)) + " d=" + std::to_string(d));
      auto [y, s] = fast::add_rms_norm(x, r, w, 1e-6f, odt);
      auto [gy, gs] = fast::add_rms_norm(on_gpu(x), on_gpu(r), on_gpu(w), 1e-6f, odt);
      EXPECT_EQ(gy.dtype(), odt);
      EXPECT_EQ(gs.dtype(), Dtype::f32);
      EXPECT_TRUE(gpu_matches_cpu(gs, s, 0.0));
      EXPECT_TRUE(gpu_matches_cpu(gy, y, kTolHalf));
    }
  }
}

TEST(CudaFastNorm, LayerNormMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (int64_t d : {13, 768, 3000, 8500}) {  // 8500: more than one chunk of a row
      SCOPED_TRACE(std::string(name(dt)) + " d=" + std::to_string(d));
      Array x = rand_swapped({3, 5, 7, d}, 20, 0, 2, dt, 1, 3);  // offset mean, so centring matters
      Array w = rand_array({d}, 21, dt, 0.5f, 1.5f);
      Array b = rand_strided_vector(d, 3, 22, dt, -1, 1);  // the op passes weight/bias views as given
      ASSERT_FALSE(b.is_contiguous());
      const Array ws[] = {w, w, Array(), Array()};
      const Array bs[] = {b, Array(), b, Array()};
      for (int i = 0; i < 4; ++i) {
        Array cpu = fast::layer_norm(x, ws[i], bs[i], 1e-5f);
        Array gpu = fast::layer_norm(on_gpu(x), on_gpu(ws[i]), on_gpu(bs[i]), 1e-5f);
        EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, tol_for(dt))) << "weight " << ws[i].valid() << " bias " << bs[i].valid();
      }
    }
  }
}

// ---------------------------------------------------------------- swiglu

TEST(CudaFastSwiglu, MatchesCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    SCOPED_TRACE(std::string(name(dt)));
    Array g = rand_swapped({3, 5, 7, 13}, 30, 1, 3, dt, -6, 6);
    Array u = rand_gapped({3, 5, 7, 13}, 31, dt, -2, 2);
    EXPECT_TRUE(gpu_matches_cpu(fast::swiglu(on_gpu(g), on_gpu(u)), fast::swiglu(g, u), tol_for(dt)));
    Array g2 = rand_array({7, 11008}, 32, dt, -8, 8), u2 = rand_array({7, 11008}, 33, dt);
    EXPECT_TRUE(gpu_matches_cpu(fast::swiglu(on_gpu(g2), on_gpu(u2)), fast::swiglu(g2, u2), tol_for(dt)));
  }
}

// ---------------------------------------------------------------- rope

RopeSpec gpu_spec(const RopeSpec& s) {
  RopeSpec g = s;
  g.freqs = on_gpu(s.freqs);
  return g;
}

TEST(CudaFastRope, IntOffsetMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  struct Case {
    int dims;
    bool traditional;
    bool explicit_freqs;
    float scale;
    float base;
  };
  const Case cases[] = {
      {64, false, false, 1.0f, 10000.0f},    {64, true, false, 1.0f, 10000.0f}, {32, false, false, 0.5f, 500000.0f},
      {32, true, false, 2.0f, 10000.0f},     {24, false, true, 1.0f, 0.0f},     {24, true, true, 0.25f, 0.0f},
      {128, false, false, 1.0f, 1000000.0f},
  };
  for (Dtype dt : kDtypes) {
    for (const Case& c : cases) {
      for (int64_t D : {64, 80, 128}) {
        if (c.dims > D) continue;
        for (int64_t offset : {0, 13, 40000}) {
          SCOPED_TRACE(std::string(name(dt)) + " dims=" + std::to_string(c.dims) + " D=" + std::to_string(D) +
                       " trad=" + std::to_string(c.traditional) + " freqs=" + std::to_string(c.explicit_freqs) +
                       " offset=" + std::to_string(offset));
          RopeSpec spec;
          spec.dims = c.dims;
          spec.traditional = c.traditional;
          spec.scale = c.scale;
          if (c.base > 0) spec.base = c.base;
          if (c.explicit_freqs) spec.freqs = rand_array({c.dims / 2}, 40 + c.dims, Dtype::f32, 1.0f, 50.0f);
          // [B=2, H=3, L=7, D] as the transpose of the model's [B, L, H, D].
          Array x = rand_swapped({2, 3, 7, D}, 41, 1, 2, dt, -2, 2);
          Array cpu = fast::rope(x, spec, offset);
          Array gpu = fast::rope(on_gpu(x), gpu_spec(spec), offset);
          EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, tol_for(dt)));
          if (c.dims < D) {  // features past `dims` pass through bit for bit
            EXPECT_TRUE(gpu_matches_cpu(slice_axis(gpu, -1, c.dims, D), slice_axis(cpu, -1, c.dims, D), 0.0));
          }
        }
      }
    }
  }
}

TEST(CudaFastRope, PerRowOffsetsMatchCpu) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : kDtypes) {
    for (bool trad : {false, true}) {
      for (Dtype idt : {Dtype::i32, Dtype::i64}) {
        SCOPED_TRACE(std::string(name(dt)) + " trad=" + std::to_string(trad) + " " + std::string(name(idt)));
        RopeSpec spec;
        spec.dims = 64;
        spec.traditional = trad;
        Array x = rand_gapped({3, 4, 7, 80}, 50, dt, -1, 1);  // partial rotation: dims 64 of 80
        Array offsets = Array::from<int32_t>({0, 5, 1900}, {3}, idt);
        Array gpu = fast::rope(on_gpu(x), spec, on_gpu(offsets));
        EXPECT_TRUE(gpu_matches_cpu(gpu, fast::rope(x, spec, offsets), tol_for(dt)));
        // Row b equals an int-offset rope of that row alone, on the GPU too (same angles, same bits).
        const int64_t offs[] = {0, 5, 1900};
        for (int b = 0; b < 3; ++b) {
          Array one = fast::rope(on_gpu(slice_axis(x, 0, b, b + 1)), spec, offs[b]);
          EXPECT_TRUE(gpu_matches_cpu(slice_axis(gpu, 0, b, b + 1), test::on_cpu(one), 0.0)) << "row " << b;
        }
      }
    }
  }
  // L = 1 decode with per-row offsets and explicit freqs.
  RopeSpec spec;
  spec.dims = 128;
  spec.freqs = rand_array({64}, 52, Dtype::f32, 1.0f, 5000.0f);
  Array x = rand_swapped({4, 8, 1, 128}, 51, 1, 2);
  Array offsets = Array::from<int32_t>({3, 0, 4000, 7}, {4});
  EXPECT_TRUE(
      gpu_matches_cpu(fast::rope(on_gpu(x), gpu_spec(spec), on_gpu(offsets)), fast::rope(x, spec, offsets), kTolF32));
}

// rope_kv_write's one CUDA launch: q and the written cache slots equal the GPU's unfused steps (fast::rope,
// assign_at) bit for bit, so a captured step and a plain one agree exactly, and the CPU twin within the
// rope tolerance; nothing is written for a position outside the page. Model shapes (GQA 32/8 at head dim
// 128, 4 query heads per KV head) and a partial rotation with explicit freqs; B = 2 with per-row offsets.
TEST(CudaFastRopeKvWrite, EqualsUnfusedStepsAndCpu) {
  LOOM_REQUIRE_CUDA();
  struct Case {
    int64_t hq, hkv, d;
    int dims;
    bool traditional, freqs;
  };
  const Case cases[] = {{32, 8, 128, 128, false, false}, {8, 2, 80, 64, true, true}, {4, 4, 64, 64, false, true}};
  auto clone = [](const Array& a) {
    Array c = Array::empty(a.shape(), a.dtype(), a.device());
    assign(c, a);
    return c;
  };
  for (Dtype dt : kDtypes)
    for (const Case& c : cases)
      for (int64_t L : {1, 2})
        for (int32_t position : {256, 300, static_cast<int32_t>(512 - L), 512, 255}) {
          SCOPED_TRACE(std::string(name(dt)) + " hq=" + std::to_string(c.hq) + " d=" + std::to_string(c.d) +
                       " L=" + std::to_string(L) + " position=" + std::to_string(position));
          RopeSpec spec;
          spec.dims = c.dims;
          spec.traditional = c.traditional;
          if (c.freqs) spec.freqs = rand_array({c.dims / 2}, 70, Dtype::f32, 1.0f, 5000.0f);
          Array q = rand_swapped({2, c.hq, L, c.d}, 71, 1, 2, dt, -2, 2);
          Array k = rand_swapped({2, c.hkv, L, c.d}, 72, 1, 2, dt, -2, 2);
          Array v = rand_swapped({2, c.hkv, L, c.d}, 73, 1, 2, dt, -2, 2);
          Array offsets = Array::from<int32_t>({300, 41}, {2});
          Array pos = Array::from<int32_t>({position}, {1});
          // A page of 256 positions standing for [256, 512).
          Array kc = rand_array({2, c.hkv, 256, c.d}, 74, dt), vc = rand_array({2, c.hkv, 256, c.d}, 75, dt);
          Array gk = on_gpu(kc), gv = on_gpu(vc), uk = on_gpu(kc), uv = on_gpu(vc);
          Array gq = fast::rope_kv_write(on_gpu(q), on_gpu(k), on_gpu(v), gpu_spec(spec), on_gpu(offsets), gk, gv,
                                         on_gpu(pos), 256);
          Array uq = fast::detail::rope_kv_write_reference(on_gpu(q), on_gpu(k), on_gpu(v), gpu_spec(spec),
                                                           on_gpu(offsets), uk, uv, on_gpu(pos), 256);
          EXPECT_TRUE(gpu_matches_cpu(gq, test::on_cpu(uq), 0.0));
          EXPECT_TRUE(gpu_matches_cpu(gk, test::on_cpu(uk), 0.0));
          EXPECT_TRUE(gpu_matches_cpu(gv, test::on_cpu(uv), 0.0));
          Array ck = clone(kc), cv = clone(vc);
          Array cq = fast::rope_kv_write(q, k, v, spec, offsets, ck, cv, pos, 256);
          EXPECT_TRUE(gpu_matches_cpu(gq, cq, tol_for(dt)));
          EXPECT_TRUE(gpu_matches_cpu(gk, ck, tol_for(dt)));
          EXPECT_TRUE(gpu_matches_cpu(gv, cv, 0.0));
          const bool inside = position >= 256 && position + L <= 512;
          EXPECT_EQ(static_cast<bool>(gpu_matches_cpu(gk, kc, 0.0)), !inside)
              << "keys written iff the position is inside the page";
        }
}

// ---------------------------------------------------------------- attention

struct AttnCase {
  std::string label;
  int64_t B, Hq, Hkv, L, S, D;
  int64_t Dv = 0;    // 0: D
  int64_t page = 0;  // 0: plain [B, H, S, D] arrays; else KVBlocks of `page` positions, the last partly used
  AttentionMode mode = AttentionMode::causal;
  int window = 0, chunk = 0;
  float softcap = 0, scale = 0;
  bool sinks = false;
  int64_t q_offset = -1;
  std::vector<int32_t> q_offsets = {}, kv_start = {};
  bool index64 = false;  // q_offsets / kv_start as int64
  int mask = 0;          // 0 none, 1 additive f32 [B, 1, L, S], 2 bool [B, Hq, L, S], 3 additive [L, S] in q's dtype
  bool nan_padding = false;  // keys/values before kv_start hold NaN (never visible: must not leak)
  bool aligned = false;      // values transposed instead of gapped: every K/V row 16-byte aligned
};

std::vector<AttnCase> gpu_attention_cases() {
  std::vector<AttnCase> cs;
  auto add = [&](AttnCase c) { cs.push_back(std::move(c)); };
  // Decode (G * L small): split-K with its combine pass on long contexts, one pass on short ones.
  add({.label = "decode gqa paged 2000", .B = 1, .Hq = 8, .Hkv = 2, .L = 1, .S = 2000, .D = 128, .page = 256});
  add({.label = "decode mha plain 300", .B = 3, .Hq = 4, .Hkv = 4, .L = 1, .S = 300, .D = 64});
  add({.label = "decode D=80 G=8 window",
       .B = 2,
       .Hq = 8,
       .Hkv = 1,
       .L = 1,
       .S = 1500,
       .D = 80,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 700});
  add({.label = "decode short window",
       .B = 2,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 1100,
       .D = 64,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 37});
  add({.label = "decode sinks + softcap split",
       .B = 1,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 1900,
       .D = 128,
       .page = 256,
       .softcap = 30.0f,
       .sinks = true});
  add({.label = "decode left padding",
       .B = 3,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 1300,
       .D = 128,
       .page = 256,
       .kv_start = {0, 517, 1299}});
  add({.label = "decode bool mask split",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 1,
       .S = 1000,
       .D = 64,
       .page = 256,
       .mask = 2});
  add({.label = "decode L=2 speculative", .B = 2, .Hq = 8, .Hkv = 2, .L = 2, .S = 900, .D = 128, .page = 256});
  add({.label = "decode D=256", .B = 1, .Hq = 8, .Hkv = 1, .L = 1, .S = 1200, .D = 256, .page = 256});
  add({.label = "decode D=192 Dv=128", .B = 2, .Hq = 4, .Hkv = 4, .L = 1, .S = 700, .D = 192, .Dv = 128, .page = 256});
  // Prefill (64-row tiles; split when few CTAs meet a long key range).
  add({.label = "prefill causal gqa 300", .B = 2, .Hq = 8, .Hkv = 2, .L = 300, .S = 300, .D = 128});
  add({.label = "prefill tail paged", .B = 1, .Hq = 8, .Hkv = 2, .L = 300, .S = 1800, .D = 128, .page = 256});
  add({.label = "prefill L=7 D=80", .B = 2, .Hq = 6, .Hkv = 2, .L = 7, .S = 777, .D = 80, .page = 256});
  add({.label = "prefill mha D=64", .B = 1, .Hq = 4, .Hkv = 4, .L = 300, .S = 300, .D = 64});
  add({.label = "prefill chunk",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 300,
       .S = 700,
       .D = 64,
       .page = 256,
       .mode = AttentionMode::chunk,
       .chunk = 128});
  add({.label = "prefill chunk + padding",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 300,
       .S = 300,
       .D = 64,
       .mode = AttentionMode::chunk,
       .chunk = 100,
       .kv_start = {0, 33}});
  add({.label = "prefill window",
       .B = 1,
       .Hq = 4,
       .Hkv = 1,
       .L = 300,
       .S = 1000,
       .D = 64,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 200});
  add({.label = "prefill mode none",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 7,
       .S = 600,
       .D = 128,
       .mode = AttentionMode::none});
  add({.label = "prefill left padding + q_offsets",
       .B = 3,
       .Hq = 8,
       .Hkv = 2,
       .L = 7,
       .S = 900,
       .D = 128,
       .page = 256,
       .q_offsets = {893, 500, 10},
       .kv_start = {0, 300, 5}});
  add({.label = "prefill int64 positions",
       .B = 2,
       .Hq = 8,
       .Hkv = 2,
       .L = 20,
       .S = 520,
       .D = 64,
       .page = 256,
       .q_offsets = {500, 200},
       .kv_start = {3, 150},
       .index64 = true});
  add({.label = "fully padded rows (zeros)", .B = 2, .Hq = 4, .Hkv = 2, .L = 7, .S = 7, .D = 64, .kv_start = {0, 5}});
  add({.label = "fully padded rows + sinks",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 7,
       .S = 7,
       .D = 64,
       .sinks = true,
       .kv_start = {0, 5}});
  add({.label = "NaN in padding slots",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 5,
       .S = 600,
       .D = 64,
       .page = 256,
       .kv_start = {0, 260},
       .nan_padding = true});
  add({.label = "NaN in padding slots decode",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 1,
       .S = 600,
       .D = 64,
       .page = 256,
       .kv_start = {100, 260},
       .nan_padding = true});
  add({.label = "prefill sinks + window",
       .B = 2,
       .Hq = 8,
       .Hkv = 2,
       .L = 64,
       .S = 400,
       .D = 128,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 50,
       .sinks = true});
  add({.label = "prefill softcap + scale",
       .B = 2,
       .Hq = 6,
       .Hkv = 3,
       .L = 40,
       .S = 40,
       .D = 64,
       .softcap = 0.7f,
       .scale = 2.0f});
  add({.label = "explicit q_offset", .B = 2, .Hq = 4, .Hkv = 2, .L = 30, .S = 500, .D = 64, .q_offset = 200});
  add({.label = "float mask [B,1,L,S] + none",
       .B = 2,
       .Hq = 4,
       .Hkv = 2,
       .L = 7,
       .S = 600,
       .D = 64,
       .page = 256,
       .mode = AttentionMode::none,
       .mask = 1});
  add({.label = "additive [L,S] mask + causal", .B = 2, .Hq = 4, .Hkv = 2, .L = 300, .S = 300, .D = 64, .mask = 3});
  add({.label = "bool mask + causal + softcap",
       .B = 2,
       .Hq = 6,
       .Hkv = 3,
       .L = 30,
       .S = 530,
       .D = 128,
       .page = 256,
       .softcap = 1.5f,
       .mask = 2});
  add({.label = "prefill D=256", .B = 1, .Hq = 4, .Hkv = 2, .L = 100, .S = 600, .D = 256, .page = 256});
  add({.label = "prefill D=192 Dv=128", .B = 1, .Hq = 4, .Hkv = 4, .L = 70, .S = 70, .D = 192, .Dv = 128});
  add({.label = "kv_len 0 rows see nothing", .B = 1, .Hq = 4, .Hkv = 2, .L = 3, .S = 0, .D = 64});
  return cs;
}

struct AttnInputs {
  Array q, k, v, mask;  // k/v plain (page == 0)
  fast::KVBlocks kv;    // paged (page > 0)
  AttentionSpec spec;
  AttentionPositions pos;
};

Array nan_before(const Array& a, int64_t axis2_end, int64_t b) {
  // a [B, H, P, D] on the CPU: a copy whose batch row b has NaN at positions [0, axis2_end).
  std::vector<float> v = a.to_float_vector();
  const Shape& s = a.shape();
  for (int64_t h = 0; h < s[1]; ++h)
    for (int64_t p = 0; p < std::min(axis2_end, s[2]); ++p)
      for (int64_t d = 0; d < s[3]; ++d)
        v[((b * s[1] + h) * s[2] + p) * s[3] + d] = std::numeric_limits<float>::quiet_NaN();
  return Array::from(v, s, a.dtype());
}

AttnInputs make_inputs(const AttnCase& c, Dtype dt, uint32_t seed) {
  AttnInputs in;
  const int64_t Dv = c.Dv ? c.Dv : c.D;
  in.q = rand_swapped({c.B, c.Hq, c.L, c.D}, seed, 1, 2, dt, -2, 2);  // [B, L, H, D] projections, transposed
  auto keys = [&](int64_t P, uint32_t s, bool alt) {
    return alt ? rand_swapped({c.B, c.Hkv, P, c.D}, s, 1, 2, dt, -2, 2)
               : rand_array({c.B, c.Hkv, P, c.D}, s, dt, -2, 2);
  };
  auto values = [&](int64_t P, uint32_t s, bool alt) {
    if (alt && c.aligned) return rand_swapped({c.B, c.Hkv, P, Dv}, s, 1, 2, dt, -1, 1);
    return alt ? rand_gapped({c.B, c.Hkv, P, Dv}, s, dt, -1, 1) : rand_array({c.B, c.Hkv, P, Dv}, s, dt, -1, 1);
  };
  if (c.page == 0) {
    in.k = keys(c.S, seed + 1, true);
    in.v = values(c.S, seed + 2, true);
  } else {
    // Pages alternate contiguous storage and transposed/gapped views; the last is only partly used,
    // and one more unused page follows.
    int64_t n = (c.S + c.page - 1) / c.page + 1;
    for (int64_t i = 0; i < n; ++i) {
      in.kv.keys.push_back(keys(c.page, seed + 10 + 2 * static_cast<uint32_t>(i), i % 2 == 1));
      in.kv.values.push_back(values(c.page, seed + 11 + 2 * static_cast<uint32_t>(i), i % 2 == 1));
    }
    in.kv.length = c.S;
  }
  if (c.nan_padding) {
    for (int64_t b = 0; b < c.B; ++b) {
      int64_t pad = c.kv_start[b];
      for (size_t i = 0; i < in.kv.keys.size(); ++i) {
        int64_t first = static_cast<int64_t>(i) * c.page;
        if (pad <= first) break;
        in.kv.keys[i] = nan_before(in.kv.keys[i], pad - first, b);
        in.kv.values[i] = nan_before(in.kv.values[i], pad - first, b);
      }
    }
  }
  in.spec.mode = c.mode;
  in.spec.window = c.window;
  in.spec.chunk = c.chunk;
  in.spec.softcap = c.softcap;
  in.spec.scale = c.scale;
  if (c.sinks) in.spec.sinks = rand_array({c.Hq}, seed + 3, Dtype::f32, -1, 2);
  in.pos.q_offset = c.q_offset;
  Dtype idt = c.index64 ? Dtype::i64 : Dtype::i32;
  if (!c.q_offsets.empty()) in.pos.q_offsets = Array::from(c.q_offsets, {c.B}, idt);
  if (!c.kv_start.empty()) in.pos.kv_start = Array::from(c.kv_start, {c.B}, idt);
  if (c.mask == 1 || c.mask == 3) {
    Shape ms = c.mask == 1 ? Shape{c.B, 1, c.L, c.S} : Shape{c.L, c.S};
    std::vector<float> m = rand_array(ms, seed + 4, Dtype::f32, -2, 1).to_float_vector();
    for (size_t i = 0; i < m.size(); i += 5) m[i] = -std::numeric_limits<float>::infinity();
    in.mask = Array::from(m, ms, c.mask == 1 ? Dtype::f32 : dt);
  } else if (c.mask == 2) {
    std::vector<float> r = rand_array({c.B, c.Hq, c.L, c.S}, seed + 4, Dtype::f32, 0, 1).to_float_vector();
    std::vector<bool> m(r.size());
    for (size_t i = 0; i < r.size(); ++i) m[i] = r[i] < 0.7f;
    in.mask = Array::from(m, {c.B, c.Hq, c.L, c.S});
  }
  return in;
}

// Runs the op on the CPU inputs and on GPU copies of the same views.
std::pair<Array, Array> run_both(const AttnCase& c, const AttnInputs& in) {
  AttentionSpec gspec = in.spec;
  gspec.sinks = on_gpu(in.spec.sinks);
  AttentionPositions gpos = in.pos;
  gpos.q_offsets = on_gpu(in.pos.q_offsets);
  gpos.kv_start = on_gpu(in.pos.kv_start);
  if (c.page == 0) {
    Array cpu = fast::scaled_dot_product_attention(in.q, in.k, in.v, in.spec, in.pos, in.mask);
    Array gpu =
        fast::scaled_dot_product_attention(on_gpu(in.q), on_gpu(in.k), on_gpu(in.v), gspec, gpos, on_gpu(in.mask));
    return {gpu, cpu};
  }
  fast::KVBlocks gkv;
  for (const Array& k : in.kv.keys) gkv.keys.push_back(on_gpu(k));
  for (const Array& v : in.kv.values) gkv.values.push_back(on_gpu(v));
  gkv.length = in.kv.length;
  Array cpu = fast::scaled_dot_product_attention(in.q, in.kv, in.spec, in.pos, in.mask);
  Array gpu = fast::scaled_dot_product_attention(on_gpu(in.q), gkv, gspec, gpos, on_gpu(in.mask));
  return {gpu, cpu};
}

TEST(CudaFastAttention, MatchesCpu) {
  LOOM_REQUIRE_CUDA();
  uint32_t seed = 1000;
  for (const AttnCase& c : gpu_attention_cases()) {
    for (Dtype dt : kDtypes) {
      SCOPED_TRACE(c.label + " " + std::string(name(dt)));
      AttnInputs in = make_inputs(c, dt, seed += 100);
      auto [gpu, cpu] = run_both(c, in);
      EXPECT_EQ(gpu.shape(), (Shape{c.B, c.Hq, c.L, c.Dv ? c.Dv : c.D}));
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, attn_tol_for(dt)));
      if (c.nan_padding) {
        for (float x : cpu.to_float_vector()) ASSERT_FALSE(std::isnan(x)) << "the CPU twin leaked padding NaN";
      }
    }
  }
}

// The tensor-core prefill path (bf16 / f16 q, k, v of one dtype, D == Dv in {64, 80, 96, 128, 256}, no
// mask, 16-byte aligned rows, more rows G * L than the decode config's 16 (8 for D 256)): every case
// below meets those conditions except the marked decode ones, which keep the FMA kernel. They cross
// L in {1, 15, 16, 17, 64, 130, 512}, G in {1, 4, 8}, every mode, sinks, softcap, left padding (with
// NaN in the padding slots), per-row q_offsets (int32 and int64), key tiles across block edges
// (256- and 100-position blocks, unaligned range starts), split-K (small grids) and one pass (a grid
// of >= 4 CTAs per SM on a 132-SM H100/H200). The tolerance is the file's bf16/f16 one: the GPU
// rounds P to the storage dtype before P V (as FlashAttention does), well inside it.
std::vector<AttnCase> tc_attention_cases() {
  std::vector<AttnCase> cs;
  auto add = [&](AttnCase c) {
    c.aligned = true;
    cs.push_back(std::move(c));
  };
  add({.label = "tc L=512 causal G=4 D=128 depth 300 paged",
       .B = 1,
       .Hq = 8,
       .Hkv = 2,
       .L = 512,
       .S = 812,
       .D = 128,
       .page = 256});
  add({.label = "tc L=130 causal G=8 D=64 plain", .B = 2, .Hq = 8, .Hkv = 1, .L = 130, .S = 130, .D = 64});
  add({.label = "tc L=17 causal G=1 D=80 paged", .B = 2, .Hq = 3, .Hkv = 3, .L = 17, .S = 600, .D = 80, .page = 256});
  add({.label = "tc L=16 window G=4 D=96",
       .B = 1,
       .Hq = 8,
       .Hkv = 2,
       .L = 16,
       .S = 900,
       .D = 96,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 100});
  add({.label = "tc L=15 chunk G=8 D=256",
       .B = 1,
       .Hq = 8,
       .Hkv = 1,
       .L = 15,
       .S = 700,
       .D = 256,
       .page = 256,
       .mode = AttentionMode::chunk,
       .chunk = 128});
  add({.label = "tc L=64 none G=1 D=128",
       .B = 2,
       .Hq = 2,
       .Hkv = 2,
       .L = 64,
       .S = 333,
       .D = 128,
       .mode = AttentionMode::none});
  add({.label = "tc L=130 sinks + softcap G=4 D=128 100-blocks",
       .B = 1,
       .Hq = 8,
       .Hkv = 2,
       .L = 130,
       .S = 1000,
       .D = 128,
       .page = 100,
       .softcap = 20.0f,
       .sinks = true});
  add({.label = "tc L=17 left padding (NaN) + q_offsets G=4 D=64",
       .B = 3,
       .Hq = 8,
       .Hkv = 2,
       .L = 17,
       .S = 900,
       .D = 64,
       .page = 256,
       .q_offsets = {883, 500, 10},
       .kv_start = {0, 300, 5},
       .nan_padding = true});
  add({.label = "tc L=64 chunk + padding + int64 positions G=4 D=80",
       .B = 2,
       .Hq = 8,
       .Hkv = 2,
       .L = 64,
       .S = 520,
       .D = 80,
       .page = 256,
       .mode = AttentionMode::chunk,
       .chunk = 100,
       .q_offsets = {456, 200},
       .kv_start = {3, 150},
       .index64 = true});
  add({.label = "tc L=130 window + sinks G=1 D=256",
       .B = 1,
       .Hq = 2,
       .Hkv = 2,
       .L = 130,
       .S = 700,
       .D = 256,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 300,
       .sinks = true});
  add({.label = "tc L=64 softcap + scale G=4 D=96 none",
       .B = 2,
       .Hq = 4,
       .Hkv = 1,
       .L = 64,
       .S = 200,
       .D = 96,
       .mode = AttentionMode::none,
       .softcap = 0.7f,
       .scale = 2.0f});
  add({.label = "tc L=600 causal G=4 D=64 one pass (large grid)",
       .B = 2,
       .Hq = 32,
       .Hkv = 8,
       .L = 600,
       .S = 600,
       .D = 64});
  add({.label = "tc fully padded rows + sinks G=4",
       .B = 2,
       .Hq = 4,
       .Hkv = 1,
       .L = 20,
       .S = 20,
       .D = 64,
       .sinks = true,
       .kv_start = {0, 15}});
  add({.label = "tc kv_len 0 rows see nothing", .B = 1, .Hq = 4, .Hkv = 1, .L = 20, .S = 0, .D = 64});
  // Decode-sized row counts (FMA decode config), same inputs.
  add({.label = "decode L=1 G=8 D=128 paged", .B = 2, .Hq = 8, .Hkv = 1, .L = 1, .S = 1000, .D = 128, .page = 256});
  add({.label = "decode L=15 G=1 D=64", .B = 1, .Hq = 2, .Hkv = 2, .L = 15, .S = 300, .D = 64, .page = 256});
  return cs;
}

TEST(CudaFastAttention, TensorCorePrefillMatchesCpu) {
  LOOM_REQUIRE_CUDA();
  uint32_t seed = 5000;
  for (const AttnCase& c : tc_attention_cases()) {
    for (Dtype dt : {Dtype::bf16, Dtype::f16}) {
      SCOPED_TRACE(c.label + " " + std::string(name(dt)));
      AttnInputs in = make_inputs(c, dt, seed += 100);
      auto [gpu, cpu] = run_both(c, in);
      EXPECT_EQ(gpu.shape(), (Shape{c.B, c.Hq, c.L, c.D}));
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, attn_tol_for(dt)));
      for (float x : test::on_cpu(gpu).to_float_vector()) ASSERT_TRUE(std::isfinite(x)) << "non-finite output";
    }
  }
}

// Decode shapes as models run them (bf16 / f16 K and V with 16-byte aligned rows, D in {64, 128}, G * L
// <= 8, the decode config): every mode, GQA group sizes 1-8, L 1 and 2, sinks and softcap, left padding
// with NaN in the padding slots, per-row q_offsets, 256- and 100-position blocks (key runs across block
// edges), plain arrays, one pass (short ranges) and split-K with the combine pass (long ranges, few
// CTAs), no keys.
std::vector<AttnCase> decode_attention_cases() {
  std::vector<AttnCase> cs;
  auto add = [&](AttnCase c) {
    c.aligned = true;
    cs.push_back(std::move(c));
  };
  add({.label = "dec G=4 D=64 paged 7", .B = 1, .Hq = 32, .Hkv = 8, .L = 1, .S = 7, .D = 64, .page = 256});
  add({.label = "dec G=4 D=128 paged 300", .B = 1, .Hq = 32, .Hkv = 8, .L = 1, .S = 300, .D = 128, .page = 256});
  add({.label = "dec G=4 D=128 split 4100", .B = 1, .Hq = 32, .Hkv = 8, .L = 1, .S = 4100, .D = 128, .page = 256});
  add({.label = "dec G=8 D=64 blocks of 100", .B = 2, .Hq = 8, .Hkv = 1, .L = 1, .S = 777, .D = 64, .page = 100});
  add({.label = "dec G=1 D=128 plain", .B = 3, .Hq = 4, .Hkv = 4, .L = 1, .S = 333, .D = 128});
  add({.label = "dec G=7 D=64 split", .B = 2, .Hq = 14, .Hkv = 2, .L = 1, .S = 2000, .D = 64, .page = 256});
  add({.label = "dec G=2 D=128 one pass", .B = 1, .Hq = 4, .Hkv = 2, .L = 1, .S = 100, .D = 128, .page = 256});
  add({.label = "dec L=2 G=4 speculative", .B = 2, .Hq = 8, .Hkv = 2, .L = 2, .S = 900, .D = 128, .page = 256});
  add({.label = "dec window",
       .B = 2,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 1100,
       .D = 64,
       .page = 256,
       .mode = AttentionMode::window,
       .window = 37});
  add({.label = "dec chunk",
       .B = 1,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 700,
       .D = 128,
       .page = 256,
       .mode = AttentionMode::chunk,
       .chunk = 128});
  add({.label = "dec sinks + softcap split",
       .B = 1,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 1900,
       .D = 128,
       .page = 256,
       .softcap = 30.0f,
       .sinks = true});
  add({.label = "dec left padding NaN + q_offsets",
       .B = 3,
       .Hq = 8,
       .Hkv = 2,
       .L = 1,
       .S = 1300,
       .D = 64,
       .page = 256,
       .q_offsets = {1299, 1000, 700},
       .kv_start = {0, 517, 699},
       .nan_padding = true});
  add({.label = "dec no keys", .B = 1, .Hq = 4, .Hkv = 1, .L = 1, .S = 0, .D = 64, .sinks = true});
  return cs;
}

TEST(CudaFastAttention, DecodeShapesMatchCpu) {
  LOOM_REQUIRE_CUDA();
  uint32_t seed = 9000;
  for (const AttnCase& c : decode_attention_cases()) {
    for (Dtype dt : {Dtype::bf16, Dtype::f16}) {
      SCOPED_TRACE(c.label + " " + std::string(name(dt)));
      AttnInputs in = make_inputs(c, dt, seed += 100);
      auto [gpu, cpu] = run_both(c, in);
      EXPECT_EQ(gpu.shape(), (Shape{c.B, c.Hq, c.L, c.D}));
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, attn_tol_for(dt)));
      for (float x : test::on_cpu(gpu).to_float_vector()) ASSERT_TRUE(std::isfinite(x)) << "non-finite output";
    }
  }
}

// Rows that see no key are exact zeros on the tensor-core path too (bf16 and f16, with and without
// sinks): batch 1 starts at key 15, so its positions 0..14 see nothing.
TEST(CudaFastAttention, TensorCorePaddingRowsAreZero) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::bf16, Dtype::f16}) {
    for (bool sinks : {false, true}) {
      AttnCase c{.label = "pad",
                 .B = 2,
                 .Hq = 4,
                 .Hkv = 1,
                 .L = 20,
                 .S = 20,
                 .D = 64,
                 .sinks = sinks,
                 .kv_start = {0, 15},
                 .aligned = true};
      AttnInputs in = make_inputs(c, dt, 9);
      auto [gpu, cpu] = run_both(c, in);
      Array pad = slice(test::on_cpu(gpu), {1, 0, 0, 0}, {2, 4, 15, 64});
      for (float v : pad.to_float_vector()) ASSERT_EQ(v, 0.0f);
    }
  }
}

// Fully padded rows are exact zeros on the GPU too (not merely small).
TEST(CudaFastAttention, PaddingRowsAreZero) {
  LOOM_REQUIRE_CUDA();
  for (bool sinks : {false, true}) {
    AttnCase c{.label = "pad", .B = 2, .Hq = 4, .Hkv = 2, .L = 6, .S = 6, .D = 64, .sinks = sinks, .kv_start = {0, 3}};
    AttnInputs in = make_inputs(c, Dtype::f32, 7);
    auto [gpu, cpu] = run_both(c, in);
    Array pad = slice(test::on_cpu(gpu), {1, 0, 0, 0}, {2, 4, 3, 64});
    for (float v : pad.to_float_vector()) ASSERT_EQ(v, 0.0f);
  }
}

// Keys/values in a dtype other than the queries' (a bf16 cache read by f32 queries, and back).
TEST(CudaFastAttention, MixedQueryAndCacheDtypes) {
  LOOM_REQUIRE_CUDA();
  const std::pair<Dtype, Dtype> pairs[] = {
      {Dtype::f32, Dtype::bf16}, {Dtype::bf16, Dtype::f32}, {Dtype::f16, Dtype::bf16}};
  for (auto [qdt, kvdt] : pairs) {
    for (int64_t L : {1, 37}) {
      SCOPED_TRACE(std::string(name(qdt)) + " q, " + std::string(name(kvdt)) + " kv, L=" + std::to_string(L));
      Array q = rand_swapped({2, 8, L, 128}, 60, 1, 2, qdt, -2, 2);
      Array k = rand_swapped({2, 2, 700, 128}, 61, 1, 2, kvdt, -2, 2);
      Array v = rand_gapped({2, 2, 700, 128}, 62, kvdt, -1, 1);
      AttentionSpec spec;
      Array cpu = fast::scaled_dot_product_attention(q, k, v, spec);
      Array gpu = fast::scaled_dot_product_attention(on_gpu(q), on_gpu(k), on_gpu(v), spec);
      // Both devices compute in f32 from the same stored values: the output dtype sets the tolerance.
      EXPECT_TRUE(gpu_matches_cpu(gpu, cpu, attn_tol_for(qdt)));
    }
  }
  // Values in another dtype than the keys: the CUDA side converts them to the keys' dtype first, which
  // is exact here (the f32 values are bf16-representable), so f32 tolerances hold.
  Array q = rand_swapped({2, 8, 3, 64}, 63, 1, 2, Dtype::f32, -2, 2);
  Array k = rand_swapped({2, 2, 300, 64}, 64, 1, 2, Dtype::bf16, -2, 2);
  Array v = astype(rand_gapped({2, 2, 300, 64}, 65, Dtype::bf16, -1, 1), Dtype::f32);
  AttentionSpec spec;
  EXPECT_TRUE(gpu_matches_cpu(fast::scaled_dot_product_attention(on_gpu(q), on_gpu(k), on_gpu(v), spec),
                              fast::scaled_dot_product_attention(q, k, v, spec), kTolAttnF32));
}

// Many small blocks: the parameter table holds 512 (128k tokens of 256-token pages); more is a clear
// NotSupportedError, never a silent truncation.
TEST(CudaFastAttention, BlockTableLimit) {
  LOOM_REQUIRE_CUDA();
  auto blocks = [](int n, int64_t P, uint32_t seed) {
    fast::KVBlocks kv;
    for (int i = 0; i < n; ++i) {
      kv.keys.push_back(rand_array({1, 2, P, 64}, seed + 2 * i, Dtype::f32, -2, 2));
      kv.values.push_back(rand_array({1, 2, P, 64}, seed + 2 * i + 1, Dtype::f32, -1, 1));
    }
    kv.length = n * P;
    return kv;
  };
  fast::KVBlocks kv = blocks(512, 3, 70);
  fast::KVBlocks gkv;
  for (const Array& k : kv.keys) gkv.keys.push_back(on_gpu(k));
  for (const Array& v : kv.values) gkv.values.push_back(on_gpu(v));
  gkv.length = kv.length;
  Array q = rand_array({1, 4, 2, 64}, 71, Dtype::f32, -2, 2);
  AttentionSpec spec;
  Array cpu = fast::scaled_dot_product_attention(q, kv, spec);
  EXPECT_TRUE(gpu_matches_cpu(fast::scaled_dot_product_attention(on_gpu(q), gkv, spec), cpu, kTolAttnF32));
  // Only the used blocks count: a length inside the first 512 blocks of a longer list is fine.
  gkv.keys.push_back(gkv.keys[0]);
  gkv.values.push_back(gkv.values[0]);
  EXPECT_NO_THROW(fast::scaled_dot_product_attention(on_gpu(q), gkv, spec));
  gkv.length += 1;
  EXPECT_THROW(fast::scaled_dot_product_attention(on_gpu(q), gkv, spec), NotSupportedError);
}

// Head dims past the kernel's 256 are refused clearly.
TEST(CudaFastAttention, RejectsHeadDimAbove256) {
  LOOM_REQUIRE_CUDA();
  Array q = rand_array({1, 2, 1, 288}, 80), k = rand_array({1, 2, 5, 288}, 81), v = rand_array({1, 2, 5, 288}, 82);
  EXPECT_THROW(fast::scaled_dot_product_attention(on_gpu(q), on_gpu(k), on_gpu(v), AttentionSpec{}), NotSupportedError);
}

}  // namespace
}  // namespace loom
