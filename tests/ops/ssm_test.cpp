// Recurrent scans (loom/ops/ssm.h): every op against its step-by-step twin in loom::fast::detail (a
// literal transcription of the recurrence in primitive ops) at odd shapes, with and without an
// initial state and left padding; the chunked forms against the step form; a padded row against its
// unpadded sequence run alone; a sequence split over two calls (state carried) against one call;
// bf16 inputs; grouped heads; per-channel gated-delta decay; and one hand-derived case per op.
#include "loom/ops/ssm.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/ops/ops.h"
#include "tests/ops/op_test_util.h"

namespace loom {
namespace {

using fast::ScanResult;
using test::all_close;
using test::rand_array;

// f32: kernel and twin evaluate the same recurrence with the same rounding points up to summation
// order; observed worst errors are 1-3e-7 of max|ref|, so 2e-6 leaves a 10x margin. The chunked
// forms reassociate the sums (matmuls, decays as exp of segment sums) over up to 130 steps: observed
// 2.5e-7 (scalar decays) and 1e-5 (per-channel gated-delta decay, whose pairwise ratios are exp of
// differences of cumulative log decays); bound 1e-4, DESIGN.md's f32 row. bf16/f16 inputs: both sides
// read the same rounded values and compute in f32; the outputs are rounded to bf16 (half an ulp =
// 2^-9 relative), so 1e-2 of max|ref| as in fast_test.cpp.
constexpr double kTolStep = 2e-6;
constexpr double kTolChunk = 1e-4;
constexpr double kTolHalf = 1e-2;

const int64_t kLengths[] = {1, 5, 37, 64, 65, 130};

// One op under test: its sequence inputs ([B, L, ...] each), the call of the op and of its twin.
struct Op {
  std::string name;
  std::vector<Array> seq;  // sequence inputs, sliced along batch (axis 0) and time (axis 1)
  Shape state_shape;       // for B = seq[0].shape(0)
  bool chunked = false;    // ssd_scan / gated_delta_rule take chunk_size
  int decay_input = -1;    // the seq input the models compute in f32 (dt, g, a), -1 = none
  std::function<ScanResult(const std::vector<Array>&, const Array&, const Array&, int64_t)> run;
  std::function<ScanResult(const std::vector<Array>&, const Array&, const Array&)> ref;
};

std::vector<Array> slice_all(const std::vector<Array>& seq, int axis, int64_t a, int64_t b) {
  std::vector<Array> out;
  for (const Array& s : seq) out.push_back(slice_axis(s, axis, a, b));
  return out;
}
std::vector<Array> cast_all(const std::vector<Array>& seq, Dtype dt) {
  std::vector<Array> out;
  for (const Array& s : seq) out.push_back(astype(s, dt));
  return out;
}

// Unit-norm rows along the last axis (the models l2-normalise q and k before the delta rule).
Array l2_normalize(const Array& a) { return a * rsqrt(sum(square(a), {-1}, true) + 1e-6); }

// ---------------------------------------------------------------- the five ops at test shapes

constexpr int64_t kB = 2;

Op conv_op(int64_t L, uint32_t seed, int64_t C = 6, int64_t K = 4) {
  Op op;
  op.name = "causal_conv1d";
  op.seq = {rand_array({kB, L, C}, seed)};
  op.state_shape = {kB, K - 1, C};
  Array w = rand_array({C, K}, seed + 1), bias = rand_array({C}, seed + 2);
  op.run = [w, bias](const std::vector<Array>& s, const Array& st, const Array& lp, int64_t) {
    return fast::causal_conv1d(s[0], w, bias, st, lp);
  };
  op.ref = [w, bias](const std::vector<Array>& s, const Array& st, const Array& lp) {
    return fast::detail::causal_conv1d_reference(s[0], w, bias, st, lp);
  };
  return op;
}

Op selective_op(int64_t L, uint32_t seed, int64_t Di = 7, int64_t N = 5) {
  Op op;
  op.name = "selective_scan";
  // dt > 0 (softplus'ed by the model), A < 0: per-step decays exp(dt A) from ~0.99 to ~0.14.
  op.seq = {rand_array({kB, L, Di}, seed), rand_array({kB, L, Di}, seed + 1, Dtype::f32, 0.01f, 1.0f),
            rand_array({kB, L, N}, seed + 2), rand_array({kB, L, N}, seed + 3)};
  op.state_shape = {kB, Di, N};
  op.decay_input = 1;
  Array A = rand_array({Di, N}, seed + 4, Dtype::f32, -2.0f, -0.5f), D = rand_array({Di}, seed + 5);
  op.run = [A, D](const std::vector<Array>& s, const Array& st, const Array& lp, int64_t) {
    return fast::selective_scan(s[0], s[1], A, s[2], s[3], D, st, lp);
  };
  op.ref = [A, D](const std::vector<Array>& s, const Array& st, const Array& lp) {
    return fast::detail::selective_scan_reference(s[0], s[1], A, s[2], s[3], D, st, lp);
  };
  return op;
}

// H = 4 heads in G = 2 groups of B/C.
Op ssd_op(int64_t L, uint32_t seed, int64_t H = 4, int64_t G = 2, int64_t P = 3, int64_t N = 5) {
  Op op;
  op.name = "ssd_scan";
  op.chunked = true;
  // Per-step log decays dt * A down to -4: a 64-step chunk spans decays from ~1 to exp(-250).
  op.seq = {rand_array({kB, L, H, P}, seed), rand_array({kB, L, H}, seed + 1, Dtype::f32, 0.01f, 1.0f),
            rand_array({kB, L, G, N}, seed + 2), rand_array({kB, L, G, N}, seed + 3)};
  op.state_shape = {kB, H, P, N};
  op.decay_input = 1;
  Array A = rand_array({H}, seed + 4, Dtype::f32, -4.0f, -0.05f), D = rand_array({H}, seed + 5);
  op.run = [A, D](const std::vector<Array>& s, const Array& st, const Array& lp, int64_t chunk) {
    return fast::ssd_scan(s[0], s[1], A, s[2], s[3], D, st, lp, chunk);
  };
  op.ref = [A, D](const std::vector<Array>& s, const Array& st, const Array& lp) {
    return fast::detail::ssd_scan_reference(s[0], s[1], A, s[2], s[3], D, st, lp);
  };
  return op;
}

// Hv = 2 * Hk value heads; g per head or per key channel.
Op gated_delta_op(int64_t L, uint32_t seed, bool per_channel = false, int64_t Hk = 2, int64_t Hv = 4, int64_t Dk = 5,
                  int64_t Dv = 3) {
  Op op;
  op.name = per_channel ? "gated_delta_rule(per-channel g)" : "gated_delta_rule";
  op.chunked = true;
  Shape gs = per_channel ? Shape{kB, L, Hv, Dk} : Shape{kB, L, Hv};
  // q, k unit rows as the model feeds them (k keeps the delta rule contractive); g = exp(-[0, 2]).
  op.seq = {l2_normalize(rand_array({kB, L, Hk, Dk}, seed)), l2_normalize(rand_array({kB, L, Hk, Dk}, seed + 1)),
            rand_array({kB, L, Hv, Dv}, seed + 2), exp(negative(rand_array(gs, seed + 3, Dtype::f32, 0.0f, 2.0f))),
            rand_array({kB, L, Hv}, seed + 4, Dtype::f32, 0.0f, 1.0f)};
  op.state_shape = {kB, Hv, Dv, Dk};
  op.decay_input = 3;
  op.run = [](const std::vector<Array>& s, const Array& st, const Array& lp, int64_t chunk) {
    return fast::gated_delta_rule(s[0], s[1], s[2], s[3], s[4], st, lp, chunk);
  };
  op.ref = [](const std::vector<Array>& s, const Array& st, const Array& lp) {
    return fast::detail::gated_delta_rule_reference(s[0], s[1], s[2], s[3], s[4], st, lp);
  };
  return op;
}

Op linear_op(int64_t L, uint32_t seed, int64_t D = 9) {
  Op op;
  op.name = "linear_scan";
  op.seq = {rand_array({kB, L, D}, seed, Dtype::f32, 0.0f, 1.0f), rand_array({kB, L, D}, seed + 1)};
  op.state_shape = {kB, D};
  op.decay_input = 0;
  op.run = [](const std::vector<Array>& s, const Array& st, const Array& lp, int64_t) {
    return fast::linear_scan(s[0], s[1], st, lp);
  };
  op.ref = [](const std::vector<Array>& s, const Array& st, const Array& lp) {
    return fast::detail::linear_scan_reference(s[0], s[1], st, lp);
  };
  return op;
}

std::vector<Op> all_ops(int64_t L, uint32_t seed) {
  return {conv_op(L, seed),
          selective_op(L, seed + 10),
          ssd_op(L, seed + 20),
          gated_delta_op(L, seed + 30),
          gated_delta_op(L, seed + 40, true),
          linear_op(L, seed + 50)};
}

// The chunk sizes an op is run with: 0 (step kernel), and 16 / 64 for the chunked forms.
std::vector<int64_t> chunks_of(const Op& op) {
  if (!op.chunked) return {0};
  return {0, 16, 64};
}

double tol_of(int64_t chunk) { return chunk > 0 ? kTolChunk : kTolStep; }

Array init_state(const Op& op, uint32_t seed, int64_t rows = kB) {
  Shape s = op.state_shape;
  s[0] = rows;
  return rand_array(s, seed, Dtype::f32, -0.5f, 0.5f);
}

// Row 1 padded by p positions: about half of the call, all of it for L = 1.
int64_t pad_of(int64_t L) { return L == 1 ? 1 : (L + 1) / 2; }
Array padding(int64_t p) { return Array::from(std::vector<int32_t>{0, static_cast<int32_t>(p)}, {2}); }

std::string trace(const Op& op, int64_t L, bool with_state, int64_t pad, int64_t chunk) {
  return op.name + " L=" + std::to_string(L) + (with_state ? " state" : " no-state") + " pad=" + std::to_string(pad) +
         " chunk=" + std::to_string(chunk);
}

// ---------------------------------------------------------------- against the twins

TEST(SsmOps, MatchReferenceStepAndChunked) {
  for (int64_t L : kLengths) {
    for (const Op& op : all_ops(L, 100 + static_cast<uint32_t>(L))) {
      for (bool with_state : {false, true}) {
        Array st = with_state ? init_state(op, 7) : Array();
        for (int64_t pad : {int64_t{0}, pad_of(L)}) {
          Array lp = pad ? padding(pad) : Array();
          ScanResult want = op.ref(op.seq, st, lp);
          for (int64_t chunk : chunks_of(op)) {
            SCOPED_TRACE(trace(op, L, with_state, pad, chunk));
            ScanResult got = op.run(op.seq, st, lp, chunk);
            EXPECT_EQ(got.y.dtype(), op.seq[0].dtype());
            EXPECT_EQ(got.state.dtype(), op.name == "causal_conv1d" ? op.seq[0].dtype() : Dtype::f32);
            EXPECT_TRUE(all_close(got.y, want.y, tol_of(chunk))) << "y";
            EXPECT_TRUE(all_close(got.state, want.state, tol_of(chunk))) << "state";
          }
        }
      }
    }
  }
}

// The twins themselves: padding positions give y = 0 and leave the state alone, checked directly
// (the twin applies the padding with `where` per step, the kernels skip those steps).
TEST(SsmOps, PaddedRowEqualsItsUnpaddedSequence) {
  for (int64_t L : {int64_t{1}, int64_t{5}, int64_t{37}, int64_t{65}}) {
    for (const Op& op : all_ops(L, 300 + static_cast<uint32_t>(L))) {
      for (bool with_state : {false, true}) {
        Array st = with_state ? init_state(op, 9) : Array();
        int64_t p = pad_of(L);
        for (int64_t chunk : chunks_of(op)) {
          SCOPED_TRACE(trace(op, L, with_state, p, chunk));
          ScanResult got = op.run(op.seq, st, padding(p), chunk);
          // Outputs at padding are exactly 0.
          Array y_pad = slice_axis(slice_axis(got.y, 0, 1, 2), 1, 0, p);
          EXPECT_TRUE(all_close(y_pad, zeros(y_pad.shape(), y_pad.dtype()), 0.0)) << "y at padding";
          Array st1 = with_state ? slice_axis(st, 0, 1, 2) : Array();
          Array state_row = slice_axis(got.state, 0, 1, 2);
          if (p == L) {  // all padding: the state is the initial one
            Array want = with_state ? astype(st1, state_row.dtype()) : zeros(state_row.shape(), state_row.dtype());
            EXPECT_TRUE(all_close(state_row, want, 0.0)) << "state of an all-padding row";
            continue;
          }
          // Row 1 alone, without its padding.
          ScanResult alone = op.run(slice_all(slice_all(op.seq, 0, 1, 2), 1, p, L), st1, Array(), chunk);
          EXPECT_TRUE(all_close(slice_axis(slice_axis(got.y, 0, 1, 2), 1, p, L), alone.y, tol_of(chunk))) << "y";
          EXPECT_TRUE(all_close(state_row, alone.state, tol_of(chunk))) << "state";
          // Row 0 (no padding) is unaffected by its neighbour's.
          ScanResult row0 =
              op.run(slice_all(op.seq, 0, 0, 1), with_state ? slice_axis(st, 0, 0, 1) : Array(), Array(), chunk);
          EXPECT_TRUE(all_close(slice_axis(got.y, 0, 0, 1), row0.y, tol_of(chunk))) << "row 0 y";
        }
      }
    }
  }
}

TEST(SsmOps, SplitCallsCarryTheState) {
  const int64_t L = 130;
  for (const Op& op : all_ops(L, 500)) {
    for (int64_t chunk : chunks_of(op)) {
      for (int64_t cut : {int64_t{1}, int64_t{37}, int64_t{64}, int64_t{129}}) {
        for (bool padded : {false, true}) {
          SCOPED_TRACE(trace(op, L, true, padded ? 20 : 0, chunk) + " cut=" + std::to_string(cut));
          Array st = init_state(op, 11);
          // Padding (20 positions of row 1) belongs to the first call only, as the models pass it;
          // a cut inside the padding (cut = 1) still hands the second call a padded remainder.
          int64_t p = padded ? 20 : 0;
          ScanResult whole = op.run(op.seq, st, p ? padding(p) : Array(), chunk);
          ScanResult first = op.run(slice_all(op.seq, 1, 0, cut), st, p ? padding(std::min(p, cut)) : Array(), chunk);
          int64_t rest = std::max<int64_t>(0, p - cut);
          ScanResult second = op.run(slice_all(op.seq, 1, cut, L), first.state, rest ? padding(rest) : Array(), chunk);
          EXPECT_TRUE(all_close(concatenate({first.y, second.y}, 1), whole.y, tol_of(chunk))) << "y";
          EXPECT_TRUE(all_close(second.state, whole.state, tol_of(chunk))) << "state";
        }
      }
    }
  }
}

TEST(SsmOps, Bf16AndF16Inputs) {
  for (Dtype dt : {Dtype::bf16, Dtype::f16}) {
    for (int64_t L : {int64_t{5}, int64_t{65}}) {
      for (const Op& op : all_ops(L, 700 + static_cast<uint32_t>(L))) {
        std::vector<Array> half = cast_all(op.seq, dt);
        Array st = init_state(op, 13);
        Array lp = padding(pad_of(L));
        // The twin reads the same rounded inputs and computes in f32.
        ScanResult want = op.ref(half, st, lp);
        for (int64_t chunk : chunks_of(op)) {
          SCOPED_TRACE(std::string(name(dt)) + " " + trace(op, L, true, pad_of(L), chunk));
          ScanResult got = op.run(half, st, lp, chunk);
          EXPECT_EQ(got.y.dtype(), dt);
          EXPECT_TRUE(all_close(got.y, want.y, kTolHalf)) << "y";
          // The state stays f32 (the conv's is in x's dtype: the rounded inputs themselves).
          EXPECT_TRUE(all_close(got.state, want.state, op.name == "causal_conv1d" ? 0.0 : kTolChunk)) << "state";
        }
        // Mixed: dt / g / decay operands in f32 next to bf16 activations, as the models compute them.
        if (op.decay_input < 0) continue;
        std::vector<Array> mixed = half;
        mixed[op.decay_input] = op.seq[op.decay_input];
        ScanResult want_mixed = op.ref(mixed, st, lp);
        for (int64_t chunk : chunks_of(op)) {
          SCOPED_TRACE(std::string(name(dt)) + " mixed " + trace(op, L, true, pad_of(L), chunk));
          EXPECT_TRUE(all_close(op.run(mixed, st, lp, chunk).y, want_mixed.y, kTolHalf));
        }
      }
    }
  }
}

// Wider shapes that cross the CPU kernels' unit blocks (64 conv channels, 16 state rows per unit)
// and a chunk size that is not a power of two.
TEST(SsmOps, WideShapesAndOddChunk) {
  const int64_t L = 41;
  std::vector<Op> ops = {conv_op(L, 900, 130, 3),
                         selective_op(L, 910, 37, 16),
                         ssd_op(L, 920, 6, 3, 40, 16),
                         gated_delta_op(L, 930, false, 1, 3, 32, 33),
                         gated_delta_op(L, 940, true, 3, 3, 8, 20),
                         linear_op(L, 950, 300)};
  for (const Op& op : ops) {
    Array st = init_state(op, 15);
    Array lp = padding(9);
    ScanResult want = op.ref(op.seq, st, lp);
    std::vector<int64_t> chunks = chunks_of(op);
    if (op.chunked) chunks.push_back(12);
    for (int64_t chunk : chunks) {
      SCOPED_TRACE(trace(op, L, true, 9, chunk));
      ScanResult got = op.run(op.seq, st, lp, chunk);
      EXPECT_TRUE(all_close(got.y, want.y, tol_of(chunk))) << "y";
      EXPECT_TRUE(all_close(got.state, want.state, tol_of(chunk))) << "state";
    }
  }
}

// Per-channel gated delta with heads wide enough (B * Hv * 64 * 64 * Dk = 2^24) that the chunked
// form builds its pairwise decay tensor one chunk at a time (L = 130: three chunks of 64).
TEST(SsmOps, PerChannelGatedDeltaInChunkGroups) {
  const int64_t L = 130;
  Op op = gated_delta_op(L, 960, true, 8, 32, 64, 3);
  Array st = init_state(op, 17);
  Array lp = padding(70);
  ScanResult want = op.ref(op.seq, st, lp);
  ScanResult got = op.run(op.seq, st, lp, 64);
  EXPECT_TRUE(all_close(got.y, want.y, kTolChunk)) << "y";
  EXPECT_TRUE(all_close(got.state, want.state, kTolChunk)) << "state";
}

// ---------------------------------------------------------------- hand-derived cases

TEST(SsmOps, CausalConv1dByHand) {
  // x = [1, 2, 3] (one channel), weight [0.5, 2] (0.5 on the older input), bias 1, state [4]:
  // xp = [4, 1, 2, 3]; y0 = 1 + 0.5*4 + 2*1 = 5, y1 = 1 + 0.5*1 + 2*2 = 5.5, y2 = 1 + 0.5*2 + 2*3 = 8;
  // the new state is the last K-1 = 1 row of xp: [3].
  Array x = Array::from<float>({1, 2, 3}, {1, 3, 1});
  ScanResult r = fast::causal_conv1d(x, Array::from<float>({0.5f, 2}, {1, 2}), Array::from<float>({1}, {1}),
                                     Array::from<float>({4}, {1, 1, 1}));
  EXPECT_EQ(r.y.to_float_vector(), (std::vector<float>{5, 5.5f, 8}));
  EXPECT_EQ(r.state.to_float_vector(), (std::vector<float>{3}));
  // With one position of left padding the row is [2, 3] after the state: y = [0, 1+2+4, 1+1+6] = [0, 7, 8].
  ScanResult p = fast::causal_conv1d(x, Array::from<float>({0.5f, 2}, {1, 2}), Array::from<float>({1}, {1}),
                                     Array::from<float>({4}, {1, 1, 1}), Array::from<int32_t>({1}, {1}));
  EXPECT_EQ(p.y.to_float_vector(), (std::vector<float>{0, 7, 8}));
  EXPECT_EQ(p.state.to_float_vector(), (std::vector<float>{3}));
}

TEST(SsmOps, SelectiveScanByHand) {
  // One channel, N = 2, dt = 1, A = [-ln 2, -ln 4] (decays 0.5, 0.25), B = [1, 2], C = [1, 1], D = 0.5,
  // x = [1, 2], zero state: t0: h = dt B x = [1, 2], y = 1 + 2 + 0.5*1 = 3.5;
  // t1: h = [0.5*1 + 2, 0.25*2 + 4] = [2.5, 4.5], y = 7 + 0.5*2 = 8.
  Array x = Array::from<float>({1, 2}, {1, 2, 1}), dt = Array::from<float>({1, 1}, {1, 2, 1});
  Array A = Array::from<float>({-std::log(2.0f), -std::log(4.0f)}, {1, 2});
  Array Bm = Array::from<float>({1, 2, 1, 2}, {1, 2, 2}), Cm = Array::from<float>({1, 1, 1, 1}, {1, 2, 2});
  ScanResult r = fast::selective_scan(x, dt, A, Bm, Cm, Array::from<float>({0.5f}, {1}), Array());
  EXPECT_TRUE(all_close(r.y, Array::from<float>({3.5f, 8}, {1, 2, 1}), 1e-6));
  EXPECT_TRUE(all_close(r.state, Array::from<float>({2.5f, 4.5f}, {1, 1, 2}), 1e-6));
}

TEST(SsmOps, SsdScanByHand) {
  // One head, P = 2, N = 1, A = -ln 2, dt = 1 (decay 0.5), x = [[1, 2], [3, 4]], B = [2, 1], C = [1, 3],
  // D = 1: t0: h = dt x B = [2, 4], y = C h + D x = [3, 6]; t1: h = 0.5 [2, 4] + [3, 4] = [4, 6],
  // y = 3 [4, 6] + [3, 4] = [15, 22]. The chunked form (chunk 16 > L) must give the same.
  Array x = Array::from<float>({1, 2, 3, 4}, {1, 2, 1, 2}), dt = Array::from<float>({1, 1}, {1, 2, 1});
  Array A = Array::from<float>({-std::log(2.0f)}, {1});
  Array Bm = Array::from<float>({2, 1}, {1, 2, 1, 1}), Cm = Array::from<float>({1, 3}, {1, 2, 1, 1});
  for (int64_t chunk : {0, 16}) {
    SCOPED_TRACE(chunk);
    ScanResult r = fast::ssd_scan(x, dt, A, Bm, Cm, Array::from<float>({1}, {1}), Array(), {}, chunk);
    EXPECT_TRUE(all_close(r.y, Array::from<float>({3, 6, 15, 22}, {1, 2, 1, 2}), 1e-6));
    EXPECT_TRUE(all_close(r.state, Array::from<float>({4, 6}, {1, 1, 2, 1}), 1e-6));
  }
}

TEST(SsmOps, GatedDeltaRuleByHand) {
  // Dk = 2, Dv = 1, zero state. t0: g = 0.5, k = [1, 0], q = [1, 1], v = 2, beta = 0.5: S = 0,
  // delta = (2 - S k) 0.5 = 1, S = [1, 0], y = S q = 1. t1: g = 0.5, k = [0, 1], q = [1, 2], v = 4,
  // beta = 1: S = [0.5, 0], delta = (4 - 0) 1 = 4, S = [0.5, 4], y = 0.5 + 8 = 8.5.
  Array q = Array::from<float>({1, 1, 1, 2}, {1, 2, 1, 2}), k = Array::from<float>({1, 0, 0, 1}, {1, 2, 1, 2});
  Array v = Array::from<float>({2, 4}, {1, 2, 1, 1}), g = Array::from<float>({0.5f, 0.5f}, {1, 2, 1});
  Array beta = Array::from<float>({0.5f, 1}, {1, 2, 1});
  Array g_pc = Array::from<float>({0.5f, 0.5f, 0.5f, 0.5f}, {1, 2, 1, 2});  // the same decay per channel
  for (int64_t chunk : {0, 16}) {
    for (const Array& gate : {g, g_pc}) {
      SCOPED_TRACE(std::to_string(chunk) + " g" + shape_str(gate.shape()));
      ScanResult r = fast::gated_delta_rule(q, k, v, gate, beta, Array(), {}, chunk);
      EXPECT_TRUE(all_close(r.y, Array::from<float>({1, 8.5f}, {1, 2, 1, 1}), 1e-6));
      EXPECT_TRUE(all_close(r.state, Array::from<float>({0.5f, 4}, {1, 1, 1, 2}), 1e-6));
    }
  }
}

TEST(SsmOps, LinearScanByHand) {
  // a = [0.5, 0.25], x = [1, 2], state 4: h0 = 0.5*4 + 1 = 3, h1 = 0.25*3 + 2 = 2.75.
  ScanResult r = fast::linear_scan(Array::from<float>({0.5f, 0.25f}, {1, 2, 1}), Array::from<float>({1, 2}, {1, 2, 1}),
                                   Array::from<float>({4}, {1, 1}));
  EXPECT_EQ(r.y.to_float_vector(), (std::vector<float>{3, 2.75f}));
  EXPECT_EQ(r.state.to_float_vector(), (std::vector<float>{2.75f}));
}

// ---------------------------------------------------------------- validation

TEST(SsmOps, RejectsBadArguments) {
  Array x = rand_array({2, 5, 4, 3}, 1), dt = rand_array({2, 5, 4}, 2), A = rand_array({4}, 3);
  Array Bm = rand_array({2, 5, 2, 6}, 4);
  EXPECT_THROW(fast::ssd_scan(x, dt, A, Bm, rand_array({2, 5, 2, 7}, 5), Array(), Array()), ValueError);  // C shape
  EXPECT_THROW(fast::ssd_scan(x, dt, A, rand_array({2, 5, 3, 6}, 5), rand_array({2, 5, 3, 6}, 6), Array(), Array()),
               ValueError);  // 4 heads, 3 groups
  EXPECT_THROW(fast::ssd_scan(x, dt, A, Bm, Bm, Array(), rand_array({2, 4, 3, 5}, 6)), ValueError);  // state shape
  EXPECT_THROW(fast::ssd_scan(x, dt, A, Bm, Bm, Array(), Array(), Array::from<float>({0, 1}, {2})), ValueError);
  EXPECT_THROW(fast::ssd_scan(x, dt, A, Bm, Bm, Array(), Array(), Array::from<int32_t>({0, 1, 2}, {3})), ValueError);
  EXPECT_THROW(fast::ssd_scan(astype(x, Dtype::i32), dt, A, Bm, Bm, Array(), Array()), ValueError);
  EXPECT_THROW(fast::ssd_scan(x, dt, A, Bm, Bm, Array(), Array(), {}, -1), ValueError);
  Array q = rand_array({2, 5, 2, 4}, 7), v = rand_array({2, 5, 3, 4}, 8), beta = rand_array({2, 5, 3}, 9);
  EXPECT_THROW(fast::gated_delta_rule(q, q, v, beta, beta, Array()), ValueError);  // 3 value heads, 2 key heads
  Array v4 = rand_array({2, 5, 4, 4}, 8), b4 = rand_array({2, 5, 4}, 9);
  EXPECT_THROW(fast::gated_delta_rule(q, q, v4, rand_array({2, 5, 4, 3}, 1), b4, Array()), ValueError);  // g channels
  EXPECT_THROW(fast::causal_conv1d(rand_array({2, 5, 3}, 1), rand_array({4, 3}, 2), Array(), Array()), ValueError);
  EXPECT_THROW(fast::causal_conv1d(rand_array({2, 5, 3}, 1), rand_array({3, 3}, 2), Array(), rand_array({2, 3, 3}, 3)),
               ValueError);  // state must hold K-1 = 2 rows
  EXPECT_THROW(fast::selective_scan(rand_array({2, 5, 3}, 1), rand_array({2, 5, 3}, 2), rand_array({3, 4}, 3),
                                    rand_array({2, 5, 5}, 4), rand_array({2, 5, 4}, 5), Array(), Array()),
               ValueError);  // B has N = 5, A has N = 4
  EXPECT_THROW(fast::linear_scan(rand_array({2, 5, 3}, 1), rand_array({2, 5, 4}, 2), Array()), ValueError);
}

// ---------------------------------------------------------------- speed (informational)

// A Mamba-2-130M-sized SSD scan (H = 24, P = 64, N = 128, one group, L = 512): step kernel vs chunked
// form; prints the times (no bound: they depend on the machine) and checks the two agree.
TEST(SsmOps, Mamba2SizedScanTiming) {
  const int64_t B = 1, L = 512, H = 24, P = 64, N = 128;
  Array x = rand_array({B, L, H, P}, 1), dt = rand_array({B, L, H}, 2, Dtype::f32, 0.001f, 0.1f);
  Array A = rand_array({H}, 3, Dtype::f32, -8.0f, -1.0f), Bm = rand_array({B, L, 1, N}, 4);
  Array Cm = rand_array({B, L, 1, N}, 5), D = rand_array({H}, 6);
  auto time_it = [&](int64_t chunk, ScanResult& out) {
    auto t0 = std::chrono::steady_clock::now();
    out = fast::ssd_scan(x, dt, A, Bm, Cm, D, Array(), {}, chunk);
    out.y.to_float_vector();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  ScanResult step, chunked;
  double ts = time_it(0, step), tc = time_it(64, chunked);
  std::printf("[ ssd_scan B=1 L=512 H=24 P=64 N=128, %d threads ] step kernel %.1f ms, chunked (64) %.1f ms\n",
              num_threads(), ts, tc);
  EXPECT_TRUE(all_close(chunked.y, step.y, kTolChunk));
  EXPECT_TRUE(all_close(chunked.state, step.state, kTolChunk));
  // Decode: one position with a state.
  ScanResult one;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i)
    one = fast::ssd_scan(slice_axis(x, 1, 0, 1), slice_axis(dt, 1, 0, 1), A, slice_axis(Bm, 1, 0, 1),
                         slice_axis(Cm, 1, 0, 1), D, step.state);
  one.y.to_float_vector();
  double td = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 10;
  std::printf("[ ssd_scan decode step (L=1) ] %.3f ms\n", td);
}

}  // namespace
}  // namespace loom
