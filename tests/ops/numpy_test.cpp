// Primitive ops against numpy. Each test writes its inputs as .npy into a directory under the build
// tree, runs tests/ops/numpy_oracle.py with /usr/bin/python3 (numpy computes the expected outputs,
// float math in float64 from the exact input values), then compares loom's results with a stated
// tolerance, printing the worst mismatch. Views (transpose, stepped slices) are described to numpy
// separately, so the view logic is checked too, not just the op on already-gathered data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "loom/io/npy.h"
#include "loom/ops/ops.h"
#include "tests/ops/op_test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using test::close_values;
using test::rand_array;

std::string json_ints(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// A view of a contiguous base, built in loom and described for numpy.
struct View {
  Array base, array;
  std::string json = "null";
};

// base.transpose(perm) (if perm non-empty) then [start:stop:step] per axis (if slices non-empty).
View make_view(const Array& base, const std::vector<int>& perm, const std::vector<std::array<int64_t, 3>>& slices = {}) {
  View v{base, base, ""};
  std::string j = "{";
  if (!perm.empty()) {
    v.array = transpose(v.array, perm);
    j += "\"transpose\":" + json_ints(std::vector<int64_t>(perm.begin(), perm.end()));
  }
  if (!slices.empty()) {
    Shape st, en, sp;
    std::string sj = "[";
    for (size_t i = 0; i < slices.size(); ++i) {
      st.push_back(slices[i][0]);
      en.push_back(slices[i][1]);
      sp.push_back(slices[i][2]);
      sj += (i ? "," : "") + json_ints({slices[i][0], slices[i][1], slices[i][2]});
    }
    v.array = slice(v.array, st, en, sp);
    j += std::string(perm.empty() ? "" : ",") + "\"slice\":" + sj + "]";
  }
  v.json = j + "}";
  return v;
}

class Oracle {
 public:
  Oracle() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(LOOM_BINARY_DIR) / "tests_tmp" / "numpy" / (std::string(info->test_suite_name()) + "." + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  // Saves an input once; returns its stem for add().
  std::string input(const Array& a) {
    std::string stem = "in" + std::to_string(n_inputs_++);
    io::save_npy((dir_ / (stem + ".npy")).string(), a);
    return stem;
  }

  // One case: numpy computes `op` with `params` (JSON object body, without braces) on the inputs; the
  // results are loom's outputs (several for split); tol is relative to max |expected| (0 = exact).
  void add(const std::string& name, const std::string& op, const std::string& params, const std::vector<std::string>& inputs,
           const std::vector<Array>& results, double tol) {
    std::string in;
    for (size_t i = 0; i < inputs.size(); ++i) in += (i ? "," : "") + inputs[i];
    manifest_ << name << '\t' << op << "\t{" << params << "}\t" << in << '\n';
    Case c{name, tol, {}, {}};
    for (const Array& r : results) {
      c.shapes.push_back(r.shape());
      c.values.push_back(r.to_vector<double>());
    }
    cases_.push_back(std::move(c));
  }
  void add(const std::string& name, const std::string& op, const std::string& params, const std::vector<std::string>& inputs,
           const Array& result, double tol) {
    add(name, op, params, inputs, std::vector<Array>{result}, tol);
  }

  // Runs numpy and compares every case.
  void run() {
    {
      std::ofstream f(dir_ / "manifest.txt");
      f << manifest_.str();
    }
    std::string cmd = "/usr/bin/python3 '" + std::string(LOOM_SOURCE_DIR) + "/tests/ops/numpy_oracle.py' '" +
                      dir_.string() + "'";
    int rc = std::system(cmd.c_str());
    ASSERT_EQ(rc, 0) << "numpy oracle failed: " << cmd;
    for (const Case& c : cases_) {
      for (size_t i = 0; i < c.values.size(); ++i) {
        std::string file = c.name + (c.values.size() > 1 ? ".out" + std::to_string(i) : ".out") + ".npy";
        Array e = io::load_npy((dir_ / file).string());
        SCOPED_TRACE(c.name + (c.values.size() > 1 ? " output " + std::to_string(i) : std::string()));
        EXPECT_EQ(c.shapes[i], e.shape()) << "shape " << shape_str(c.shapes[i]) << " vs numpy " << shape_str(e.shape());
        if (c.shapes[i] != e.shape()) continue;
        EXPECT_TRUE(close_values(c.values[i], e.to_vector<double>(), e.shape(), c.tol));
      }
    }
    EXPECT_GT(cases_.size(), 0u);
  }

 private:
  struct Case {
    std::string name;
    double tol;
    std::vector<Shape> shapes;
    std::vector<std::vector<double>> values;
  };
  fs::path dir_;
  int n_inputs_ = 0;
  std::ostringstream manifest_;
  std::vector<Case> cases_;
};

std::string views_param(const std::vector<std::string>& views) {
  std::string s = "\"views\":[";
  for (size_t i = 0; i < views.size(); ++i) s += (i ? "," : "") + views[i];
  return s + "]";
}

// ------------------------------------------------------------------------------------------ matmul

// f32 x f32 at the row counts where the kernels switch (decode gemv up to 8 rows, then gemm), with odd,
// large inner and outer sizes.
TEST(NumpyOracle, MatmulF32AcrossThresholds) {
  Oracle o;
  Array b = rand_array({1037, 1531}, 1);
  std::string bi = o.input(b);
  for (int64_t m : {1, 2, 7, 8, 9, 64}) {
    Array a = rand_array({m, 1037}, 10 + static_cast<uint32_t>(m));
    Array r = matmul(a, b);
    EXPECT_EQ(r.dtype(), Dtype::f32);
    o.add("mm_f32_m" + std::to_string(m), "matmul", "", {o.input(a), bi}, r, 1e-5);
  }
  // Transposed-view weight (the Linear layout: x @ W^T with W [N, K]) and a transposed activation.
  View wt = make_view(rand_array({333, 517}, 2), {1, 0});  // [517, 333]
  View at = make_view(rand_array({517, 9}, 3), {1, 0});    // [9, 517]
  o.add("mm_f32_transposed_both", "matmul", views_param({at.json, wt.json}), {o.input(at.base), o.input(wt.base)},
        matmul(at.array, wt.array), 1e-5);
  // Tiny odd shapes and 1-d operands (numpy semantics).
  Array a3 = rand_array({3, 5}, 4), b3 = rand_array({5, 7}, 5), v5 = rand_array({5}, 6), v3 = rand_array({3}, 7);
  o.add("mm_small", "matmul", "", {o.input(a3), o.input(b3)}, matmul(a3, b3), 1e-6);
  o.add("mm_vec_mat", "matmul", "", {o.input(v5), o.input(b3)}, matmul(v5, b3), 1e-6);
  o.add("mm_mat_vec", "matmul", "", {o.input(a3), o.input(v5)}, matmul(a3, v5), 1e-6);
  o.add("mm_vec_vec", "matmul", "", {o.input(v3), o.input(v3)}, matmul(v3, v3), 1e-6);
  o.run();
}

// f32 activations x bf16/f16 weights: the gemv path (W^T view, <= 8 rows), the panel path (more rows,
// several panels when K is large), and a row-major half [K, N] operand. numpy multiplies the exact
// half values in float64.
TEST(NumpyOracle, MatmulHalfWeights) {
  Oracle o;
  for (Dtype wdt : {Dtype::bf16, Dtype::f16}) {
    std::string tag = std::string(name(wdt));
    Array w = rand_array({1531, 1037}, 20, wdt);  // [N, K]
    View wt = make_view(w, {1, 0});
    std::string wi = o.input(w);
    for (int64_t m : {1, 2, 7, 8, 9, 64}) {
      Array a = rand_array({m, 1037}, 30 + static_cast<uint32_t>(m));
      Array r = matmul(a, wt.array);
      EXPECT_EQ(r.dtype(), Dtype::f32);
      o.add("mm_" + tag + "_wT_m" + std::to_string(m), "matmul", views_param({"null", wt.json}), {o.input(a), wi}, r, 1e-5);
    }
    // K large enough that the weight is converted in more than one panel.
    Array w2 = rand_array({1531, 4099}, 21, wdt);
    View w2t = make_view(w2, {1, 0});
    Array a2 = rand_array({9, 4099}, 22);
    o.add("mm_" + tag + "_panels", "matmul", views_param({"null", w2t.json}), {o.input(a2), o.input(w2)},
          matmul(a2, w2t.array), 1e-5);
    // Row-major half [K, N] for decode (M = 1) and prefill (M = 64).
    Array wk = rand_array({517, 259}, 23, wdt);
    std::string wki = o.input(wk);
    for (int64_t m : {1, 64}) {
      Array a = rand_array({m, 517}, 40 + static_cast<uint32_t>(m));
      o.add("mm_" + tag + "_rowmajor_m" + std::to_string(m), "matmul", "", {o.input(a), wki}, matmul(a, wk), 1e-5);
    }
    // Half x half: computed in f32, rounded once to the half dtype.
    Array ah = rand_array({7, 517}, 24, wdt);
    Array rh = matmul(ah, wk);
    EXPECT_EQ(rh.dtype(), wdt);
    o.add("mm_" + tag + "_x_" + tag, "matmul", "\"round\":\"" + std::string(wdt == Dtype::bf16 ? "bf16" : "f16") + "\"",
          {o.input(ah), wki}, rh, 1e-2);
  }
  o.run();
}

TEST(NumpyOracle, MatmulBatchedAndBroadcast) {
  Oracle o;
  // [3, 1, 7, 33] @ [4, 33, 17] -> [3, 4, 7, 17]
  Array a = rand_array({3, 1, 7, 33}, 50), b = rand_array({4, 33, 17}, 51);
  Array r = matmul(a, b);
  EXPECT_EQ(r.shape(), (Shape{3, 4, 7, 17}));
  o.add("mm_broadcast_batch", "matmul", "", {o.input(a), o.input(b)}, r, 1e-5);
  // Batched with a transposed-view second operand (keys^T in attention) and a sliced first operand.
  View k = make_view(rand_array({2, 5, 19, 24}, 52), {0, 1, 3, 2});            // [2, 5, 24, 19]
  View q = make_view(rand_array({2, 5, 11, 30}, 53), {}, {{0, 2, 1}, {0, 5, 1}, {1, 11, 2}, {3, 27, 1}});  // [2,5,5,24]
  o.add("mm_batched_views", "matmul", views_param({q.json, k.json}), {o.input(q.base), o.input(k.base)},
        matmul(q.array, k.array), 1e-5);
  // A broadcast 2-d weight against a batched bf16 activation.
  Array x = rand_array({2, 3, 9, 65}, 54, Dtype::bf16);
  Array w = rand_array({65, 40}, 55);
  Array rx = matmul(x, w);
  EXPECT_EQ(rx.dtype(), Dtype::f32);
  o.add("mm_bf16_x_f32", "matmul", "", {o.input(x), o.input(w)}, rx, 1e-5);
  o.run();
}

// ------------------------------------------------------------------------------------------ elementwise

TEST(NumpyOracle, BinaryBroadcastNonContiguous) {
  Oracle o;
  // a: [4, 1, 7] from a transposed base; b: [5, 1] gapped slice; result [4, 5, 7].
  View a = make_view(rand_array({7, 1, 4}, 60, Dtype::f32, 0.5f, 2.0f), {2, 1, 0});
  View b = make_view(rand_array({5, 3}, 61, Dtype::f32, 0.5f, 2.0f), {}, {{0, 5, 1}, {1, 2, 1}});
  std::string ai = o.input(a.base), bi = o.input(b.base);
  std::string vp = views_param({a.json, b.json});
  for (auto [fn, op] : std::vector<std::pair<std::string, BinaryOp>>{
           {"add", BinaryOp::add}, {"subtract", BinaryOp::subtract}, {"multiply", BinaryOp::multiply},
           {"divide", BinaryOp::divide}, {"maximum", BinaryOp::maximum}, {"minimum", BinaryOp::minimum},
           {"power", BinaryOp::power}}) {
    Array r = binary(op, a.array, b.array);
    EXPECT_EQ(r.shape(), (Shape{4, 5, 7}));
    o.add("bin_" + fn, "binary", vp + ",\"fn\":\"" + fn + "\"", {ai, bi}, r, 1e-6);
  }
  // Comparisons on data with exact ties (values from a small integer set).
  Array ci = astype(floor(rand_array({6, 1, 33}, 62, Dtype::f32, 0, 4)), Dtype::f32);
  Array cj = astype(floor(rand_array({5, 33}, 63, Dtype::f32, 0, 4)), Dtype::f32);
  std::string cii = o.input(ci), cji = o.input(cj);
  for (auto [fn, op] : std::vector<std::pair<std::string, BinaryOp>>{
           {"equal", BinaryOp::equal}, {"not_equal", BinaryOp::not_equal}, {"less", BinaryOp::less},
           {"less_equal", BinaryOp::less_equal}, {"greater", BinaryOp::greater}, {"greater_equal", BinaryOp::greater_equal},
           {"logical_and", BinaryOp::logical_and}, {"logical_or", BinaryOp::logical_or}}) {
    Array r = binary(op, ci, cj);
    EXPECT_EQ(r.dtype(), Dtype::bool_);
    o.add("cmp_" + fn, "binary", "\"fn\":\"" + fn + "\"", {cii, cji}, r, 0);
  }
  // where with a broadcast condition and mixed operand dtypes (f32, bf16 -> f32).
  Array cond = greater(rand_array({5, 1}, 64), zeros({1}));
  Array wa = rand_array({3, 5, 33}, 65), wb = rand_array({33}, 66, Dtype::bf16);
  Array wr = where(cond, wa, wb);
  EXPECT_EQ(wr.dtype(), Dtype::f32);
  o.add("where", "where", "", {o.input(cond), o.input(wa), o.input(wb)}, wr, 0);
  // Large non-contiguous operands: many 512-element chunks and pool tasks.
  View la = make_view(rand_array({1000, 3, 37}, 67), {1, 0, 2});  // [3, 1000, 37]
  View lb = make_view(rand_array({3, 1000, 80}, 68), {}, {{0, 3, 1}, {0, 1000, 1}, {5, 79, 2}});  // [3,1000,37]
  o.add("bin_large_mul", "binary", views_param({la.json, lb.json}) + ",\"fn\":\"multiply\"",
        {o.input(la.base), o.input(lb.base)}, multiply(la.array, lb.array), 1e-6);
  o.run();
}

TEST(NumpyOracle, UnaryFloat) {
  Oracle o;
  View x = make_view(rand_array({9, 13, 50}, 70, Dtype::f32, -4, 4), {2, 0, 1});  // [50, 9, 13]
  View p = make_view(rand_array({9, 13, 50}, 71, Dtype::f32, 0.01f, 5), {2, 0, 1});
  std::string xi = o.input(x.base), pi = o.input(p.base);
  struct U {
    const char* fn;
    UnaryOp op;
    bool positive;
  };
  for (const U& u : {U{"exp", UnaryOp::exp, false}, U{"log", UnaryOp::log, true}, U{"tanh", UnaryOp::tanh, false},
                     U{"sigmoid", UnaryOp::sigmoid, false}, U{"sqrt", UnaryOp::sqrt, true}, U{"rsqrt", UnaryOp::rsqrt, true},
                     U{"abs", UnaryOp::abs, false}, U{"negative", UnaryOp::negative, false},
                     U{"square", UnaryOp::square, false}, U{"sin", UnaryOp::sin, false}, U{"cos", UnaryOp::cos, false},
                     U{"log1p", UnaryOp::log1p, true}, U{"floor", UnaryOp::floor, false},
                     U{"reciprocal", UnaryOp::reciprocal, true}, U{"erf", UnaryOp::erf, false},
                     U{"silu", UnaryOp::silu, false}, U{"gelu", UnaryOp::gelu, false}, U{"relu", UnaryOp::relu, false},
                     U{"softplus", UnaryOp::softplus, false}}) {
    const View& in = u.positive ? p : x;
    Array r = unary(u.op, in.array);
    EXPECT_EQ(r.dtype(), Dtype::f32);
    o.add(std::string("un_") + u.fn, "unary", views_param({in.json}) + ",\"fn\":\"" + u.fn + "\"", {u.positive ? pi : xi},
          r, 2e-6);
  }
  // bf16 input stays bf16: numpy's exact result rounded to bf16 (within one bf16 ulp of it).
  Array xb = rand_array({7, 33}, 72, Dtype::bf16, -3, 3);
  Array rb = exp(xb);
  EXPECT_EQ(rb.dtype(), Dtype::bf16);
  o.add("un_exp_bf16", "unary", "\"fn\":\"exp\",\"round\":\"bf16\"", {o.input(xb)}, rb, 1e-2);
  o.run();
}

TEST(NumpyOracle, IntegerOpsAndPromotion) {
  Oracle o;
  std::vector<int32_t> av, bv;
  std::mt19937 rng(80);
  for (int i = 0; i < 6 * 7; ++i) av.push_back(static_cast<int32_t>(rng() % 2001) - 1000);
  for (int i = 0; i < 7; ++i) bv.push_back(static_cast<int32_t>(rng() % 41) - 20 + (i == 3 ? 0 : 0));
  for (auto& v : bv)
    if (v == 0) v = 7;
  Array a = Array::from(av, {6, 7}), b = Array::from(bv, {7});
  std::string ai = o.input(a), bi = o.input(b);
  for (auto [fn, op] : std::vector<std::pair<std::string, BinaryOp>>{{"add", BinaryOp::add},
                                                                     {"subtract", BinaryOp::subtract},
                                                                     {"multiply", BinaryOp::multiply},
                                                                     {"maximum", BinaryOp::maximum},
                                                                     {"minimum", BinaryOp::minimum}}) {
    Array r = binary(op, a, b);
    EXPECT_EQ(r.dtype(), Dtype::i32) << fn;
    o.add("int_" + fn, "binary", "\"fn\":\"" + fn + "\"", {ai, bi}, r, 0);
  }
  // int / int is true division in float32 (MLX), not truncation.
  Array d = divide(a, b);
  EXPECT_EQ(d.dtype(), Dtype::f32);
  o.add("int_divide", "binary", "\"fn\":\"divide\"", {ai, bi}, d, 1e-7);
  Array lt = less(a, b);
  EXPECT_EQ(lt.dtype(), Dtype::bool_);
  o.add("int_less", "binary", "\"fn\":\"less\"", {ai, bi}, lt, 0);
  // int32 + float32 -> float32.
  Array f = rand_array({7}, 81, Dtype::f32, -10, 10);
  Array af = add(a, f);
  EXPECT_EQ(af.dtype(), Dtype::f32);
  o.add("int_plus_f32", "binary", "\"fn\":\"add\"", {ai, o.input(f)}, af, 1e-7);
  // uint8 + int8 -> int16, no wrap-around.
  Array u8 = Array::from<uint8_t>({200, 250, 0, 255, 17}, {5});
  Array i8 = Array::from<int8_t>({-100, 100, -128, 127, 0}, {5});
  Array ui = add(u8, i8);
  EXPECT_EQ(ui.dtype(), Dtype::i16);
  o.add("u8_plus_i8", "binary", "\"fn\":\"add\"", {o.input(u8), o.input(i8)}, ui, 0);
  // Weak scalars: an int scalar keeps int32; a fractional one makes float32; any scalar keeps bf16/f16.
  Array s1 = a + 3.0;
  EXPECT_EQ(s1.dtype(), Dtype::i32);
  o.add("int_plus_3", "binary", "\"fn\":\"add\",\"scalar\":3", {ai}, s1, 0);
  Array s2 = a * 2.5;
  EXPECT_EQ(s2.dtype(), Dtype::f32);
  o.add("int_times_2.5", "binary", "\"fn\":\"multiply\",\"scalar\":2.5", {ai}, s2, 1e-7);
  Array hb = rand_array({5, 9}, 82, Dtype::bf16, -3, 3);
  std::string hbi = o.input(hb);
  Array s3 = hb * 1.7;
  EXPECT_EQ(s3.dtype(), Dtype::bf16);
  // The scalar is rounded to bf16 first (1.7 -> 1.703125), then the product rounded once.
  o.add("bf16_times_1.7", "binary", "\"fn\":\"multiply\",\"scalar\":1.703125,\"round\":\"bf16\"", {hbi}, s3, 0);
  Array s4 = 1.5 - hb;
  EXPECT_EQ(s4.dtype(), Dtype::bf16);
  o.add("1.5_minus_bf16", "binary", "\"fn\":\"subtract\",\"scalar\":1.5,\"scalar_first\":true,\"round\":\"bf16\"", {hbi}, s4,
        0);
  Array hf = rand_array({5, 9}, 83, Dtype::f16, -3, 3);
  Array s5 = hf / 3.0;
  EXPECT_EQ(s5.dtype(), Dtype::f16);
  // 3.0 is exact in f16; the quotient computed in f32 then rounded once to f16 (double rounding from
  // f64 -> f32 -> f16 can differ from numpy's direct f64 -> f16 in rare cases: allow one f16 ulp).
  o.add("f16_div_3", "binary", "\"fn\":\"divide\",\"scalar\":3.0,\"round\":\"f16\"", {o.input(hf)}, s5, 1e-3);
  // Integer sum stays integral; mean of ints is float32.
  Array is = sum(a, {0});
  EXPECT_TRUE(!is_floating(is.dtype()));
  o.add("int_sum", "reduce", "\"fn\":\"sum\",\"axes\":[0],\"keepdims\":false", {ai}, is, 0);
  Array im = mean(a, {1});
  EXPECT_EQ(im.dtype(), Dtype::f32);
  o.add("int_mean", "reduce", "\"fn\":\"mean\",\"axes\":[1],\"keepdims\":false", {ai}, im, 1e-6);
  o.run();
}

// ------------------------------------------------------------------------------------------ reductions

TEST(NumpyOracle, Reductions) {
  Oracle o;
  auto red = [&](const std::string& fn, const View& v, const std::string& vi, std::vector<int> axes, bool keep, double tol) {
    Array r;
    if (fn == "sum") r = sum(v.array, axes, keep);
    else if (fn == "mean") r = mean(v.array, axes, keep);
    else if (fn == "max") r = max(v.array, axes, keep);
    else if (fn == "min") r = min(v.array, axes, keep);
    else r = prod(v.array, axes, keep);
    std::string ax = json_ints(std::vector<int64_t>(axes.begin(), axes.end()));
    std::string nm = "red_" + fn + "_" + vi + "_" + ax + (keep ? "_keep" : "");
    o.add(nm, "reduce",
          views_param({v.json}) + ",\"fn\":\"" + fn + "\",\"axes\":" + ax + ",\"keepdims\":" + (keep ? "true" : "false"),
          {vi}, r, tol);
  };
  // A non-contiguous 4-d input; single, multiple, negative and all axes, with and without keepdims.
  View x = make_view(rand_array({8, 6, 9, 7}, 90, Dtype::f32, -2, 2), {1, 3, 0, 2});  // [6, 7, 8, 9]
  std::string xi = o.input(x.base);
  for (std::string fn : {"sum", "mean", "max", "min"}) {
    for (bool keep : {false, true}) {
      red(fn, x, xi, {1}, keep, 1e-5);
      red(fn, x, xi, {0, 2}, keep, 1e-5);
      red(fn, x, xi, {-1, 1}, keep, 1e-5);
      red(fn, x, xi, {}, keep, 1e-5);
    }
  }
  View pr = make_view(rand_array({5, 13, 4}, 91, Dtype::f32, 0.8f, 1.2f), {});
  std::string pri = o.input(pr.base);
  red("prod", pr, pri, {1}, false, 1e-5);
  red("prod", pr, pri, {0, 2}, true, 1e-5);
  // Sizes past the pool grain: one long row, many short rows, and a reduction over the outer axis.
  // Sums are accumulated in f32, so long sums get 1e-4 (the kernel's f32 running sum, not a pairwise sum).
  View big = make_view(rand_array({100000}, 92, Dtype::f32, 0, 1), {});
  std::string bigi = o.input(big.base);
  red("sum", big, bigi, {0}, false, 1e-4);
  red("mean", big, bigi, {0}, false, 1e-4);
  red("max", big, bigi, {0}, false, 0);
  red("min", big, bigi, {0}, false, 0);
  View rows = make_view(rand_array({1000, 37}, 93, Dtype::f32, -1, 1), {});
  std::string rowsi = o.input(rows.base);
  red("sum", rows, rowsi, {1}, false, 1e-5);
  red("max", rows, rowsi, {1}, true, 0);
  View outer = make_view(rand_array({100000, 3}, 94, Dtype::f32, 0, 1), {});
  std::string outeri = o.input(outer.base);
  red("sum", outer, outeri, {0}, false, 1e-4);
  red("min", outer, outeri, {0}, true, 0);
  // argmax / argmin with ties (first index wins, as numpy) over axes 0, 1, -1.
  Array t = floor(rand_array({6, 7, 8}, 95, Dtype::f32, 0, 4));
  View tv = make_view(t, {2, 0, 1});  // [8, 6, 7]
  std::string ti = o.input(t);
  for (int axis : {0, 1, -1}) {
    for (bool keep : {false, true}) {
      std::string ps = views_param({tv.json}) + ",\"axis\":" + std::to_string(axis) + ",\"keepdims\":" + (keep ? "true" : "false");
      Array am = argmax(tv.array, axis, keep);
      EXPECT_EQ(am.dtype(), Dtype::u32);
      o.add("argmax_" + std::to_string(axis) + (keep ? "_keep" : ""), "argmax", ps, {ti}, am, 0);
      o.add("argmin_" + std::to_string(axis) + (keep ? "_keep" : ""), "argmin", ps, {ti}, argmin(tv.array, axis, keep), 0);
    }
  }
  Array amb = argmax(big.array, 0);
  o.add("argmax_big", "argmax", "\"axis\":0,\"keepdims\":false", {bigi}, amb, 0);
  o.run();
}

TEST(NumpyOracle, SoftmaxAndLogsumexp) {
  Oracle o;
  View x = make_view(rand_array({7, 5, 300}, 100, Dtype::f32, -6, 6), {1, 0, 2}, {{0, 5, 1}, {0, 7, 1}, {1, 300, 2}});
  std::string xi = o.input(x.base);
  for (int axis : {-1, 0, 1}) {
    Array s = softmax(x.array, axis);
    EXPECT_EQ(s.shape(), x.array.shape());
    o.add("softmax_" + std::to_string(axis), "softmax", views_param({x.json}) + ",\"axis\":" + std::to_string(axis), {xi}, s,
          1e-6);
    for (bool keep : {false, true}) {
      o.add("lse_" + std::to_string(axis) + (keep ? "_keep" : ""), "logsumexp",
            views_param({x.json}) + ",\"axis\":" + std::to_string(axis) + ",\"keepdims\":" + (keep ? "true" : "false"), {xi},
            logsumexp(x.array, axis, keep), 1e-6);
    }
  }
  // Large logits (no overflow thanks to the max shift) and a bf16 input.
  Array big = rand_array({3, 1000}, 101, Dtype::f32, 80, 100);
  std::string bi = o.input(big);
  // 1000-term f32 sum of exponentials in the denominator: f32 accumulation error, 1e-5.
  o.add("softmax_large_logits", "softmax", "\"axis\":-1", {bi}, softmax(big, -1), 1e-5);
  o.add("lse_large_logits", "logsumexp", "\"axis\":-1,\"keepdims\":false", {bi}, logsumexp(big, -1), 1e-6);
  Array hb = rand_array({4, 33}, 102, Dtype::bf16, -4, 4);
  Array sb = softmax(hb, -1);
  EXPECT_EQ(sb.dtype(), Dtype::bf16);
  o.add("softmax_bf16", "softmax", "\"axis\":-1", {o.input(hb)}, sb, 1e-2);
  o.run();
}

// ------------------------------------------------------------------------------------------ indexing

TEST(NumpyOracle, TakeConcatenateSplitSlice) {
  Oracle o;
  Array a = rand_array({7, 9, 11}, 110);
  std::string ai = o.input(a);
  Array idx = Array::from<int32_t>({0, -1, 3, -7, 2, 2}, {6});
  std::string ii = o.input(idx);
  for (int axis : {0, 1, -1}) {
    Array r = take(a, idx, axis);
    o.add("take_" + std::to_string(axis), "take", "\"axis\":" + std::to_string(axis), {ai, ii}, r, 0);
  }
  Array idx2 = Array::from<int32_t>({-9, 8, 0, 4, -1, 5}, {2, 3});
  std::string i2 = o.input(idx2);
  o.add("take_2d_idx_axis1", "take", "\"axis\":1", {ai, i2}, take(a, idx2, 1), 0);
  View at = make_view(a, {2, 0, 1});  // take from a non-contiguous table: [11, 7, 9]
  o.add("take_view_axis2", "take", views_param({at.json, "null"}) + ",\"axis\":2", {ai, i2}, take(at.array, idx2, 2), 0);
  Array ti = Array::from<int32_t>({5, -2, 1}, {3});
  Array itab = astype(floor(rand_array({6, 4}, 111, Dtype::f32, -50, 50)), Dtype::i32);
  Array tr = take(itab, ti, 0);
  EXPECT_EQ(tr.dtype(), Dtype::i32);
  o.add("take_int_table", "take", "\"axis\":0", {o.input(itab), o.input(ti)}, tr, 0);

  // concatenate / stack (one operand a transposed view; mixed dtypes promote).
  Array c0 = rand_array({2, 3, 4}, 112), c2 = rand_array({2, 1, 4}, 113, Dtype::bf16);
  View c1 = make_view(rand_array({4, 5, 2}, 114), {2, 1, 0});  // [2, 5, 4]
  std::string c0i = o.input(c0), c1i = o.input(c1.base), c2i = o.input(c2);
  Array cat = concatenate({c0, c1.array, c2}, 1);
  EXPECT_EQ(cat.dtype(), Dtype::f32);
  o.add("concat_axis1", "concatenate", views_param({"null", c1.json, "null"}) + ",\"axis\":1", {c0i, c1i, c2i}, cat, 0);
  Array s0 = rand_array({4, 5}, 115), s1 = rand_array({4, 5}, 116);
  View s2 = make_view(rand_array({5, 4}, 117), {1, 0});
  std::string s0i = o.input(s0), s1i = o.input(s1), s2i = o.input(s2.base);
  for (int axis : {0, 1, 2, -1}) {
    o.add("stack_" + std::to_string(axis), "stack", views_param({"null", "null", s2.json}) + ",\"axis\":" + std::to_string(axis),
          {s0i, s1i, s2i}, stack({s0, s1, s2.array}, axis), 0);
  }
  o.add("concat_last", "concatenate", views_param({"null", "null", s2.json}) + ",\"axis\":-1", {s0i, s1i, s2i},
        concatenate({s0, s1, s2.array}, -1), 0);

  // split at indices and into equal parts (outputs are views; compared through to_vector).
  Array sp = rand_array({3, 9, 4}, 118);
  std::string spi = o.input(sp);
  o.add("split_indices", "split", "\"indices\":[2,5],\"axis\":1", {spi}, split(sp, std::vector<int64_t>{2, 5}, 1), 0);
  o.add("split_parts", "split", "\"parts\":3,\"axis\":1", {spi}, split(sp, 3, 1), 0);
  o.add("split_parts_last", "split", "\"parts\":2,\"axis\":-1", {spi}, split(sp, 2, -1), 0);

  // slices with steps, negative starts, stops past the end; slice of a transposed view; broadcast_to.
  Array base = rand_array({10, 12, 9}, 119);
  std::string bi = o.input(base);
  View v1 = make_view(base, {}, {{1, 9, 3}, {0, 12, 2}, {-5, 100, 1}});
  o.add("slice_steps", "identity", views_param({v1.json}), {bi}, contiguous(v1.array), 0);
  View v2 = make_view(base, {2, 0, 1}, {{-8, -1, 2}, {3, 10, 4}, {0, 12, 5}});
  o.add("slice_transposed", "identity", views_param({v2.json}), {bi}, v2.array, 0);
  // A slice of a slice: loom composes offsets and strides.
  Array vv = slice(v1.array, {1, 1, 0}, {3, 6, 5}, {1, 2, 2});
  o.add("slice_of_slice", "identity",
        "\"views\":[{\"slice\":[[4,9,3],[2,12,4],[4,9,2]]}]", {bi}, vv, 0);
  Array bsrc = rand_array({3, 1, 5}, 120);
  Array bc = broadcast_to(bsrc, {2, 3, 4, 5});
  o.add("broadcast_to", "broadcast_to", "\"shape\":[2,3,4,5]", {o.input(bsrc)}, contiguous(bc), 0);
  o.run();
}

// ------------------------------------------------------------------------------------------ astype

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(NumpyOracle, AstypeRoundTrips) {
  Oracle o;
  std::vector<float> v;
  std::mt19937 rng(130);
  // Random bit patterns over the whole finite range (both signs), then hand-picked edge cases.
  for (int i = 0; i < 20000; ++i) {
    uint32_t u = static_cast<uint32_t>(rng());
    if ((u & 0x7f800000u) == 0x7f800000u) u &= 0xbfffffffu;  // keep it finite
    v.push_back(from_bits(u));
  }
  for (uint32_t u : {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu, 0xff7fffffu,  // max float -> inf
                     0x3f808000u, 0x3f818000u, 0xbf808000u,  // exact bf16 ties: to even (down, up, down)
                     0x3f808001u, 0x3f807fffu,                // just above / below a tie
                     0x00000001u, 0x00008000u, 0x00018000u, 0x007fffffu, 0x00800000u,  // subnormals
                     0x3f801000u, 0x3f803000u,                // f16 ties at 1 + 2^-11 and 1 + 3*2^-11
                     0x33000000u, 0x33c00000u, 0x337fffffu,   // 2^-25, 3*2^-25 (f16 subnormal ties), below 2^-25
                     0x38800000u, 0x387fc000u, 0x477ff000u, 0x477fefffu, 0x47800000u})  // f16 min normal, overflow
    v.push_back(from_bits(u));
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  // Values in the f16 range, so the f16 conversion sees normals, subnormals and rounding, not only inf/0.
  std::uniform_real_distribution<float> ex(-30, 17);
  for (int i = 0; i < 20000; ++i) v.push_back((i % 2 ? -1.0f : 1.0f) * std::exp2(ex(rng)) * (1.0f + (rng() % 1024) / 1024.0f));
  Array x = Array::from(v, {static_cast<int64_t>(v.size())});
  std::string xi = o.input(x);
  Array xb = astype(x, Dtype::bf16);
  EXPECT_EQ(xb.dtype(), Dtype::bf16);
  o.add("f32_bf16_f32", "bf16_round", "", {xi}, astype(xb, Dtype::f32), 0);
  Array xh = astype(x, Dtype::f16);
  o.add("f32_f16_f32", "f16_round", "", {xi}, astype(xh, Dtype::f32), 0);
  // Non-contiguous source.
  View xv = make_view(x, {}, {{3, 40000, 7}});
  o.add("f32_bf16_strided", "bf16_round", views_param({xv.json}), {xi}, astype(xv.array, Dtype::bf16), 0);
  // bf16 -> f16 (values already bf16-exact) and f16 -> bf16.
  o.add("bf16_to_f16", "f16_round", "", {o.input(xb)}, astype(xb, Dtype::f16), 0);
  o.add("f16_to_bf16", "bf16_round", "", {o.input(xh)}, astype(xh, Dtype::bf16), 0);
  // int32 -> bf16: 257 is a tie between 256 and 258 (7 mantissa bits), rounds to even 256.
  Array ints = Array::from<int32_t>({0, 1, -1, 255, 256, 257, 259, -257, 65535, 16777217, 2147483647}, {11});
  o.add("i32_to_bf16", "bf16_round", "", {o.input(ints)}, astype(ints, Dtype::bf16), 0);
  // float -> int32 truncates toward zero.
  Array fr = rand_array({1000}, 131, Dtype::f32, -100, 100);
  Array fi = astype(fr, Dtype::i32);
  EXPECT_EQ(fi.dtype(), Dtype::i32);
  o.add("f32_to_i32", "astype_int", "", {o.input(fr)}, fi, 0);
  o.run();
}

}  // namespace
}  // namespace loom
