// CUDA parity of sampling: the sampling-support kernels (backend/cuda/sampling_support.cu) against
// their CPU twins, every sampler filter and logits processor run on GPU logits against the same call on
// the CPU, and the generation loop on the GPU against the CPU. Expected agreement, by construction:
//  - cumsum: the same bits (both kernels follow one documented summation order);
//  - random_uniform: the same bits (integer hashing, exact scaling);
//  - put_along_axis / scatter_add_axis, top-k, min-p, the penalties and the logit bias: the same bits
//    (comparisons, copies and single IEEE-rounded f32 operations; repeated scatter-adds add equal values);
//  - top-p and XTC involve exp/softmax, which differ by an ulp between CUDA and glibc: the inputs below
//    keep every probability far (> 1e-3 relative) from the filters' boundaries, so the kept sets are
//    exact and the kept values, passed through, are the same bits;
//  - the Gumbel-max draw takes log(-log(u)) of bit-identical u, again within an ulp: tokens are equal
//    except where a row's two best scores are within 1e-4 of each other, which the tests count and bound.
// Without a usable GPU these tests skip (tests/cuda/parity.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "loom/common/error.h"
#include "loom/generate/generate.h"
#include "loom/generate/logits_processors.h"
#include "loom/generate/sampling.h"
#include "loom/models/loader.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/random.h"
#include "loom/ops/readback.h"
#include "tests/cuda/parity.h"

namespace loom {
namespace {

using test::kGpu;
using test::on_cpu;
using test::on_gpu;
using test::rand_array;
using test::rand_swapped;

constexpr float kInf = std::numeric_limits<float>::infinity();

// Bitwise equality of a GPU result (moved to the host) and the CPU's, with the first difference named.
::testing::AssertionResult same_bits(const Array& gpu, const Array& cpu) {
  if (!(gpu.device() == kGpu)) return ::testing::AssertionFailure() << "result is on " << gpu.device().str();
  if (gpu.dtype() != cpu.dtype() || gpu.shape() != cpu.shape())
    return ::testing::AssertionFailure() << "dtype/shape " << name(gpu.dtype()) << shape_str(gpu.shape()) << " vs "
                                         << name(cpu.dtype()) << shape_str(cpu.shape());
  Array g = contiguous(on_cpu(gpu)), c = contiguous(cpu);
  const auto* gb = static_cast<const uint8_t*>(g.raw_data());
  const auto* cb = static_cast<const uint8_t*>(c.raw_data());
  for (size_t i = 0; i < g.nbytes(); ++i)
    if (gb[i] != cb[i]) {
      const int64_t e = static_cast<int64_t>(i / g.itemsize());
      return ::testing::AssertionFailure()
             << "element " << e << " differs: gpu " << g.to_vector<double>()[e] << " cpu " << c.to_vector<double>()[e];
    }
  return ::testing::AssertionSuccess();
}

std::vector<float> logits_row(int64_t V, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(V));
  for (auto& x : v) x = d(rng);
  return v;
}

// log-softmax rows [rows, V] of N(0, scale) logits, on the CPU.
Array logprob_rows(int64_t rows, int64_t V, uint32_t seed, float scale = 3.0f) {
  std::vector<float> all;
  for (int64_t r = 0; r < rows; ++r) {
    auto v = logits_row(V, seed + static_cast<uint32_t>(r), scale);
    all.insert(all.end(), v.begin(), v.end());
  }
  Array x = Array::from(all, {rows, V});
  return x - logsumexp(x, -1, true);
}

// ---- kernels ---------------------------------------------------------------------------------------

TEST(CudaSamplingOps, CumsumSameBits) {
  LOOM_REQUIRE_CUDA();
  for (int64_t n : {1, 31, 32, 33, 1000, 1024, 1025, 5000, 151936}) {
    Array x = rand_array({3, n}, static_cast<uint32_t>(n), Dtype::f32, -1.0f, 1.0f);
    for (bool reverse : {false, true})
      for (bool inclusive : {true, false})
        EXPECT_TRUE(same_bits(cumsum(on_gpu(x), -1, reverse, inclusive), cumsum(x, -1, reverse, inclusive)))
            << "n " << n << " reverse " << reverse << " inclusive " << inclusive;
  }
  // Many short rows (grid-stride over rows), a transposed view along axis 0, bf16.
  Array many = rand_array({70000, 5}, 7);
  EXPECT_TRUE(same_bits(cumsum(on_gpu(many), -1), cumsum(many, -1)));
  Array t = rand_swapped({6, 300}, 8, 0, 1);
  EXPECT_TRUE(same_bits(cumsum(on_gpu(t), 0), cumsum(t, 0)));
  Array h = rand_array({4, 2000}, 9, Dtype::bf16);
  EXPECT_TRUE(same_bits(cumsum(on_gpu(h), -1, true), cumsum(h, -1, true)));
}

TEST(CudaSamplingOps, RandomUniformSameBits) {
  LOOM_REQUIRE_CUDA();
  for (uint64_t key : {uint64_t{0}, uint64_t{1}, uint64_t{0xDEADBEEFCAFEF00D}})
    EXPECT_TRUE(same_bits(random_uniform({7, 151936}, key, kGpu), random_uniform({7, 151936}, key, Device::cpu())));
  EXPECT_TRUE(same_bits(random_uniform({}, 5, kGpu), random_uniform({}, 5, Device::cpu())));
}

TEST(CudaSamplingOps, ScatterSameBits) {
  LOOM_REQUIRE_CUDA();
  Array a = rand_array({3, 50, 4}, 1);
  std::vector<int32_t> idx;
  std::mt19937 rng(2);
  for (int i = 0; i < 3 * 20 * 4; ++i) idx.push_back(static_cast<int32_t>(rng() % 100) - 50);  // [-50, 50)
  // Distinct targets for put (a permutation slice per column keeps writes unambiguous).
  std::vector<int32_t> perm(50);
  for (int i = 0; i < 50; ++i) perm[i] = (i * 7) % 50 - (i % 2 ? 50 : 0);  // some negative
  std::vector<int32_t> pidx;
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 20; ++j)
      for (int c = 0; c < 4; ++c) pidx.push_back(perm[(j + r + c) % 50]);
  Array pi = Array::from(pidx, {3, 20, 4});
  Array vals = rand_array({3, 20, 4}, 3);
  EXPECT_TRUE(same_bits(put_along_axis(on_gpu(a), on_gpu(pi), on_gpu(vals), 1), put_along_axis(a, pi, vals, 1)));
  // scatter-add with repeats of equal values (the frequency penalty's case) and of distinct values
  // that are small integers (exact in any order).
  Array ai = Array::from(idx, {3, 20, 4});
  EXPECT_TRUE(same_bits(scatter_add_axis(on_gpu(a), on_gpu(ai), Array::scalar(-0.375), 1),
                        scatter_add_axis(a, ai, Array::scalar(-0.375), 1)));
  Array ints = astype(astype(rand_array({3, 20, 4}, 4, Dtype::f32, -8, 8), Dtype::i32), Dtype::f32);
  Array z = zeros({3, 50, 4});
  EXPECT_TRUE(same_bits(scatter_add_axis(on_gpu(z), on_gpu(ai), on_gpu(ints), 1), scatter_add_axis(z, ai, ints, 1)));
  // bool and bf16 element moves, a broadcast scalar, host indices joining device data.
  Array m = zeros({2, 9}, Dtype::bool_);
  Array mi = Array::from(std::vector<int32_t>{8, 0, 3}, {1, 3});
  EXPECT_TRUE(same_bits(put_along_axis(on_gpu(m), mi, full({}, 1.0, Dtype::bool_, kGpu), 1),
                        put_along_axis(m, mi, full({}, 1.0, Dtype::bool_), 1)));
  Array hb = rand_array({2, 9}, 5, Dtype::bf16);
  EXPECT_TRUE(same_bits(put_along_axis(on_gpu(hb), mi, Array::scalar(-kInf), 1),
                        put_along_axis(hb, mi, Array::scalar(-kInf), 1)));
  // Device indices out of range are skipped (host ones would be refused): 9 and -10 leave row 0 as is.
  Array stray = on_gpu(Array::from(std::vector<int32_t>{9, -10, 2}, {1, 3}));
  Array want = put_along_axis(hb, Array::from(std::vector<int32_t>{2}, {1, 1}), Array::scalar(7.0), 1);
  EXPECT_TRUE(same_bits(put_along_axis(on_gpu(hb), stray, Array::scalar(7.0), 1), want));
}

TEST(CudaSamplingOps, ReadbackWaitsForItsOwnCopy) {
  LOOM_REQUIRE_CUDA();
  Array x = on_gpu(Array::from(std::vector<int32_t>{4, 5, 6}, {3}));
  Readback r(slice_axis(x, 0, 1, 2));
  // Queue a large amount of later work; the readback still returns its value (that it does not wait
  // for this work is the contract; the value must be right either way).
  Array big = rand_array({2048, 2048}, 6);
  Array g = on_gpu(big);
  for (int i = 0; i < 4; ++i) g = matmul(g, g) * 1e-3;
  EXPECT_EQ(r.get().item<int32_t>(), 5);
  // The staging ring has 64 slots: a readback left unfinished 64 readbacks ago has lost its slot,
  // and finishing it fails loudly instead of returning another readback's bytes.
  std::vector<Readback> many;
  for (int i = 0; i < 65; ++i) many.emplace_back(slice_axis(x, 0, i % 3, i % 3 + 1));
  EXPECT_THROW(many[0].get(), Error);
  for (int i = 1; i < 65; ++i) EXPECT_EQ(many[i].get().item<int32_t>(), 4 + i % 3) << i;
  synchronize(kGpu);
}

// ---- samplers --------------------------------------------------------------------------------------

TEST(CudaSampling, TopKAndMinPSameBits) {
  LOOM_REQUIRE_CUDA();
  Array lp = logprob_rows(5, 3000, 10);
  // Ties: quantize to 1/4 so many values repeat; ties go to the lower id on both devices.
  Array tied = floor(lp * 4.0) / 4.0;
  for (const Array& x : {lp, tied}) {
    for (int k : {1, 7, 100, 2999})
      EXPECT_TRUE(same_bits(generate::apply_top_k(on_gpu(x), k), generate::apply_top_k(x, k))) << "top_k " << k;
    for (int keep : {1, 3, 50})
      for (float p : {0.05f, 0.5f, 1.0f})
        EXPECT_TRUE(same_bits(generate::apply_min_p(on_gpu(x), p, keep), generate::apply_min_p(x, p, keep)))
            << "min_p " << p << " keep " << keep;
  }
}

TEST(CudaSampling, TopPKeepsTheSameSet) {
  LOOM_REQUIRE_CUDA();
  // Probabilities 2^-i (i = 1..20, shuffled) and the remainder spread on 20 more tokens: every
  // cumulative sum in ascending order differs from each 1 - top_p below by far more than an ulp.
  std::vector<float> p;
  for (int i = 1; i <= 20; ++i) p.push_back(std::ldexp(1.0f, -i));
  for (int i = 0; i < 20; ++i) p.push_back(std::ldexp(1.0f, -20) / 20.0f);
  std::mt19937 rng(3);
  std::shuffle(p.begin(), p.end(), rng);
  std::vector<float> lp;
  for (float x : p) lp.push_back(std::log(x));
  Array x = Array::from(lp, {1, 40});
  for (float top_p : {0.3f, 0.6f, 0.7f, 0.9f, 0.99f}) {
    Array cpu = generate::apply_top_p(x, top_p), gpu = generate::apply_top_p(on_gpu(x), top_p);
    EXPECT_TRUE(same_bits(gpu, cpu)) << "top_p " << top_p;
  }
  // A full vocabulary row too, with each 1 - top_p placed (on the CPU) midway between two ascending
  // cumulative sums at least 1e-4 apart near 0.5 and 0.1: far beyond the devices' rounding differences.
  Array big = logprob_rows(1, 151936, 20, 4.0f);
  auto c = cumsum(exp(take_along_axis(big, argsort(big, -1), -1)), -1).to_vector<float>();
  for (float target : {0.5f, 0.1f}) {
    size_t k = std::lower_bound(c.begin(), c.end(), target) - c.begin();
    while (k + 1 < c.size() && c[k + 1] - c[k] < 1e-4f) ++k;
    ASSERT_LT(k + 1, c.size());
    const float top_p = 1.0f - 0.5f * (c[k] + c[k + 1]);
    ASSERT_GT(std::min(std::fabs(c[k] - (1.0f - top_p)), std::fabs(c[k + 1] - (1.0f - top_p))), 4e-5f);
    EXPECT_TRUE(same_bits(generate::apply_top_p(on_gpu(big), top_p), generate::apply_top_p(big, top_p)))
        << "top_p " << top_p;
  }
}

TEST(CudaSampling, XtcSameDecisionsAndSpecialTokens) {
  LOOM_REQUIRE_CUDA();
  // p = [.05 .15 .3 .5] (and a second row [.6 .25 .1 .05]): with threshold .1 the tokens above it
  // are far from it and from each other, so the mask is exact; the per-call uniform is the same bits.
  std::vector<float> p = {0.05f, 0.15f, 0.3f, 0.5f, 0.6f, 0.25f, 0.1f, 0.05f};
  for (auto& v : p) v = std::log(v);
  Array x = Array::from(p, {2, 4});
  for (float prob : {1.0f, 0.5f, 0.0f})
    for (uint64_t seed : {1, 2, 3, 4}) {
      generate::Rng rc(seed), rg(seed);
      EXPECT_TRUE(same_bits(generate::apply_xtc(on_gpu(x), prob, 0.12f, {3, 99}, rg),
                            generate::apply_xtc(x, prob, 0.12f, {3, 99}, rc)))
          << "probability " << prob << " seed " << seed;
    }
}

// Rows whose two best Gumbel scores are within `margin` (CPU), for the draw `key` on logits x / temp.
std::vector<bool> near_ties(const Array& x, float temp, uint64_t key, float margin) {
  Array u = maximum(random_uniform(x.shape(), key, Device::cpu()), Array::scalar(std::numeric_limits<float>::min()));
  auto g = subtract(multiply(x, Array::scalar(1.0f / temp)), log(negative(log(u)))).to_vector<float>();
  const int64_t V = x.shape(-1), rows = x.size() / V;
  std::vector<bool> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> row(g.begin() + r * V, g.begin() + (r + 1) * V);
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
    out[r] = row[0] - row[1] < margin * std::max(1.0f, std::fabs(row[0]));
  }
  return out;
}

TEST(CudaSampling, SamplersDrawTheSameTokens) {
  LOOM_REQUIRE_CUDA();
  const int64_t rows = 512, V = 4096;
  Array lp = logprob_rows(rows, V, 30, 2.0f);
  std::vector<generate::SamplerSpec> specs = {
      {.temp = 0.0f},
      {.temp = 1.0f},
      {.temp = 0.7f, .top_k = 40},
      {.temp = 1.0f, .min_p = 0.05f, .min_tokens_to_keep = 3},
      {.temp = 0.9f, .top_p = 0.95f},
      {.temp = 1.0f, .top_p = 0.9f, .min_p = 0.02f, .top_k = 100},
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& spec = specs[i];
    generate::Sampler sc(spec, 11), sg(spec, 11);
    auto tc = sc(lp).to_vector<int32_t>();
    Array tgpu = sg(on_gpu(lp));
    ASSERT_EQ(tgpu.device(), kGpu);
    auto tg = tgpu.to_vector<int32_t>();
    // The draw's key: the sampler's only draw of this call (the filters above draw nothing).
    generate::Rng r(11);
    const uint64_t key = r.next_key();
    // Near ties among the tokens the filters kept (the filters draw nothing, so on the CPU this is the
    // sampler's input to its draw).
    Array kept = lp;
    if (spec.top_p > 0.0f && spec.top_p < 1.0f) kept = generate::apply_top_p(kept, spec.top_p);
    if (spec.min_p != 0.0f) kept = generate::apply_min_p(kept, spec.min_p, spec.min_tokens_to_keep);
    if (spec.top_k > 0) kept = generate::apply_top_k(kept, spec.top_k);
    std::vector<bool> tie = spec.temp == 0.0f ? std::vector<bool>(rows, false) : near_ties(kept, spec.temp, key, 1e-4f);
    int ties = 0, differ = 0;
    for (int64_t j = 0; j < rows; ++j) {
      ties += tie[j];
      if (tc[j] != tg[j]) {
        ++differ;
        EXPECT_TRUE(tie[j]) << "spec " << i << " row " << j << ": cpu " << tc[j] << " gpu " << tg[j]
                            << " without a near tie";
      }
    }
    EXPECT_LE(ties, rows / 50) << "spec " << i << ": too many near ties for a meaningful comparison";
    (void)differ;
  }
}

// ---- logits processors -------------------------------------------------------------------------------

TEST(CudaLogitsProcessors, SameBitsWithDeviceHistory) {
  LOOM_REQUIRE_CUDA();
  Array logits = Array::from(logits_row(1000, 40, 2.0f), {1, 1000});
  // History with repeats, negative and positive logits among the penalized ids.
  std::vector<int32_t> hist = {5, 17, 5, 999, 0, 17, 17, 42, 300, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  Array hc = Array::from(hist, {static_cast<int64_t>(hist.size())});
  Array hg = on_gpu(hc);
  generate::LogitsProcessorSpec spec;
  spec.logit_bias = {{3, 1.5f}, {999, -2.0f}, {5000, 1.0f}};  // 5000: outside V, ignored
  spec.repetition_penalty = 1.3f;
  spec.repetition_context_size = 10;
  spec.presence_penalty = 0.5f;
  spec.presence_context_size = 20;
  spec.frequency_penalty = 0.25f;
  spec.frequency_context_size = 30;
  auto procs = generate::make_logits_processors(spec);
  ASSERT_EQ(procs.size(), 4u);
  Array xc = logits, xg = on_gpu(logits);
  for (size_t i = 0; i < procs.size(); ++i) {
    xc = procs[i](hc, xc);
    xg = procs[i](hg, xg);
    EXPECT_TRUE(same_bits(xg, xc)) << "processor " << i;
  }
  // Host ids with device logits are uploaded and give the same result.
  EXPECT_TRUE(same_bits(procs[3](hist, on_gpu(logits)), procs[3](hist, logits)));
}

// ---- the generation loop -------------------------------------------------------------------------------

TEST(CudaGenerate, TokenGeneratorMatchesTheCpu) {
  LOOM_REQUIRE_CUDA();
  // The llama fixture (tests/fixtures/llama; vocabulary 128) has large top-1 margins by design, so
  // the GPU's logits (within 1e-4 of the CPU's) cannot move a greedy choice, and sampled draws agree
  // unless a Gumbel near tie falls within that error (not for this seed: the test would show it).
  const std::string dir = std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/llama";
  models::LoadedModel cpu = models::load_model(dir, {.dtype = Dtype::f32, .device = Device::cpu()});
  models::LoadedModel gpu = models::load_model(dir, {.dtype = Dtype::f32, .device = kGpu});
  std::vector<int32_t> prompt = {1, 17, 33, 2, 90, 5, 64};
  std::vector<generate::GenerateOptions> runs(3);
  runs[0].max_tokens = 16;
  runs[1].max_tokens = 16;
  runs[1].seed = 5;
  runs[1].sampler = {.temp = 1.0f, .top_p = 0.95f, .top_k = 20};
  runs[2].max_tokens = 16;
  runs[2].seed = 6;
  runs[2].sampler = {.temp = 0.8f, .min_p = 0.01f};
  runs[2].processors.repetition_penalty = 1.2f;
  runs[2].processors.frequency_penalty = 0.3f;
  runs[2].processors.logit_bias = {{3, 2.0f}};
  for (size_t i = 0; i < runs.size(); ++i) {
    auto generate_on = [&](models::LoadedModel& m, Device d) {
      models::Cache c = m.model->make_cache();
      generate::TokenGenerator gen(*m.model, c, prompt, runs[i]);
      std::vector<int32_t> out;
      while (auto t = gen.next()) {
        out.push_back(*t);
        EXPECT_EQ(gen.logprobs().device(), d);  // the distribution never left the model's device
      }
      return out;
    };
    auto want = generate_on(cpu, Device::cpu());
    auto got = generate_on(gpu, kGpu);
    EXPECT_EQ(want.size(), 16u);
    EXPECT_EQ(got, want) << "run " << i;
  }
}

}  // namespace
}  // namespace loom
