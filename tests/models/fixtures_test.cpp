// Every architecture against HF transformers on its tiny random fixture (tools/refgen/make_fixtures.py):
// logits of a full pass, token-by-token and chunked decode through the cache, a left-padded batch
// of two prompts, greedy tokens, the v4-style config, bf16 compute, and a steady-state decode step
// that allocates nothing new. Built twice: here for the CPU, and in tests/cuda with
// LOOM_TEST_DEVICE="cuda" (the same checks on the GPU, skipped where none is usable).
#include <filesystem>
#include <fstream>

#include "loom/core/allocator.h"
#include "loom/io/config.h"
#include "tests/models/fixture_util.h"
#include "tests/ops/op_test_util.h"

namespace loom::test {
namespace {

const Device kDevice = test_device();

class Fixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device_available(kDevice)) GTEST_SKIP() << "no " << kDevice.str() << " device";
    ref = load_reference(GetParam());
    lm = load_on_device(fixture_dir(GetParam()));
  }
  Array run(models::LanguageModel& m, const std::vector<int32_t>& ids, int64_t chunk) { return run_chunked(m, ids, chunk); }
  Reference ref;
  models::LoadedModel lm;
};

TEST_P(Fixture, FullPassMatchesTransformers) {
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    expect_logits_near(run(*lm.model, ref.prompts[i], 1 << 20), ref.logits[i], kF32, "prompt " + std::to_string(i));
}

TEST_P(Fixture, TokenByTokenAndChunkedDecodeMatchFullPass) {
  for (int64_t chunk : {1, 5}) {
    Array got = run(*lm.model, ref.prompts[0], chunk);
    expect_logits_near(got, ref.logits[0], kF32, "chunk " + std::to_string(chunk));
  }
}

TEST_P(Fixture, LeftPaddedBatchMatchesEachAlone) {
  // Row 0: prompt 0; row 1: prompt 1 left-padded to the same length with token 0.
  expect_left_padded_batch_matches_each_alone(*lm.model, ref, 1);
}

TEST_P(Fixture, GreedyTokensMatchTransformers) {
  EXPECT_EQ(greedy_tokens(*lm.model, ref.prompts[0], ref.greedy.size()), ref.greedy);
}

TEST_P(Fixture, V4StyleConfigGivesSameLogits) {
  models::LoadedModel v4 = load_on_device(v4_config_copy(GetParam()));
  expect_logits_near(run(*v4.model, ref.prompts[0], 1 << 20), ref.logits[0], kF32, "v4 config");
}

TEST_P(Fixture, Bf16ComputeWithinBf16Tolerance) {
  models::LoadedModel m = load_on_device(fixture_dir(GetParam()), Dtype::bf16);
  Array got = run(*m.model, ref.prompts[0], 1 << 20);
  EXPECT_EQ(got.dtype(), Dtype::bf16);
  EXPECT_EQ(got.device(), kDevice);
  ASSERT_GT(ref.hf_bf16_mean_rel, 0) << "reference.json lacks hf_bf16 (run tools/refgen/bf16_baseline.py)";
  Tolerance tol = bf16_tolerance(ref);
  expect_logits_near(got, ref.logits[0], tol, "bf16 compute");
}

TEST_P(Fixture, SteadyStateDecodeAllocatesNothingNew) {
  models::Cache cache = lm.model->make_cache();
  lm.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::last);
  for (int i = 0; i < 3; ++i) lm.model->forward(tokens_array({3}), cache, models::LogitsMode::last);
  uint64_t before = allocator::stats(kDevice).system_allocs;
  for (int i = 0; i < 20; ++i) lm.model->forward(tokens_array({3}), cache, models::LogitsMode::last);
  EXPECT_EQ(allocator::stats(kDevice).system_allocs, before) << "decode steps made new system allocations";
}

// The form a captured decode step takes (Cache::device_offset: positions read where the kernels run, every
// allocated page attended under the causal mask, RoPE fused with the KV write) equals the plain step bit
// for bit, logits and cache contents, over steps that cross a page boundary: on the CPU, and on the GPU
// in test_cuda_models (test_cuda_graphs checks the recording and replay around it).
TEST_P(Fixture, DeviceOffsetStepEqualsPlainStep) {
  models::Cache plain = lm.model->make_cache(), captured = lm.model->make_cache();
  // A prompt ending 2 positions before the first page's end, so the steps cross into the second page.
  std::vector<int32_t> prompt;
  while (prompt.size() < models::KVCache::kPageSize - 2)
    prompt.insert(prompt.end(), ref.prompts[0].begin(), ref.prompts[0].end());
  prompt.resize(models::KVCache::kPageSize - 2);
  lm.model->forward(tokens_array(prompt), plain, models::LogitsMode::last);
  lm.model->forward(tokens_array(prompt), captured, models::LogitsMode::last);
  for (int i = 0; i < 4; ++i) {
    const int32_t token = 3 + 5 * i;
    const int64_t offset = captured.offset();
    Array want = lm.model->forward(tokens_array({token}), plain, models::LogitsMode::last);
    for (auto& layer : captured.layers) static_cast<models::KVCache&>(*layer).reserve(offset + 1);
    captured.device_offset = full({1}, static_cast<double>(offset), Dtype::i32, kDevice);
    Array got = lm.model->forward(tokens_array({token}), captured, models::LogitsMode::last);
    captured.device_offset = Array();
    EXPECT_TRUE(all_close(got, want, 0.0)) << "step " << i;
  }
  ASSERT_EQ(captured.offset(), plain.offset());
  for (size_t l = 0; l < plain.layers.size(); ++l) {
    auto [k0, v0] = static_cast<models::KVCache&>(*plain.layers[l]).state();
    auto [k1, v1] = static_cast<models::KVCache&>(*captured.layers[l]).state();
    EXPECT_TRUE(all_close(k1, k0, 0.0)) << "keys of layer " << l;
    EXPECT_TRUE(all_close(v1, v0, 0.0)) << "values of layer " << l;
  }
}

// 10k decode steps through a rotating cache (fixed size, so the cache itself stops growing): the
// allocator makes no new system allocation and holds the same bytes after every step — nothing leaks
// or grows, on the CPU and (in test_cuda_models) on the GPU.
TEST_P(Fixture, TenThousandDecodeStepsKeepAllocatorFlat) {
  models::CacheOptions opt;
  opt.max_kv_size = 64;
  models::Cache cache = lm.model->make_cache(opt);
  lm.model->forward(tokens_array(ref.prompts[0]), cache, models::LogitsMode::last);
  for (int i = 0; i < 200; ++i) lm.model->forward(tokens_array({7}), cache, models::LogitsMode::last);
  synchronize(kDevice);
  AllocatorStats before = allocator::stats(kDevice);
  for (int i = 0; i < 10000; ++i) {
    Array logits = lm.model->forward(tokens_array({static_cast<int32_t>(3 + i % 11)}), cache, models::LogitsMode::last);
    if (i % 1000 == 999) {
      synchronize(kDevice);
      AllocatorStats now = allocator::stats(kDevice);
      ASSERT_EQ(now.system_allocs, before.system_allocs) << "after " << i + 1 << " steps";
      ASSERT_LE(now.active_bytes, before.active_bytes + static_cast<size_t>(logits.nbytes()) * 2) << "after " << i + 1 << " steps";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, Fixture,
                         ::testing::Values("llama", "llama_tied", "mistral", "qwen2", "qwen3", "llama_bf16"));

}  // namespace
}  // namespace loom::test
