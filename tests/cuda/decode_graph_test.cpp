// CUDA-graph decode (loom/generate/decode_graph.h): replayed steps give the same tokens and the same
// logits, bit for bit, as steps run op by op, over 64 steps that cross a KV page boundary (the graph
// is recorded again there); and 10k decode steps keep the device allocator flat. Without a usable GPU
// these tests skip (the GPU machine runs them).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "loom/backend/cuda/act_int8.h"
#include "loom/core/allocator.h"
#include "loom/generate/generate.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {

// n random ids of the model's vocabulary (a prompt long enough that 64 steps cross position 256).
std::vector<int32_t> random_prompt(int64_t vocab, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

struct DecodeRun {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logprobs;  // per step, on the host
  int64_t captures = 0, replays = 0;
  int64_t code_hits = 0;  // GEMVs that read int8 codes an add+norm stored (act_int8::hits), while decoding
  std::string failure;
};

DecodeRun decode(models::LanguageModel& m, const std::vector<int32_t>& prompt, int steps, bool graphs, float temp) {
  models::Cache cache = m.make_cache();
  generate::GenerateOptions opt;
  opt.max_tokens = steps;
  opt.max_context = 4096;  // the fixtures' configs say 64
  opt.cuda_graphs = graphs;
  opt.sampler.temp = temp;
  opt.seed = 7;
  const int64_t hits = cuda::act_int8::hits();
  generate::TokenGenerator gen(m, cache, prompt, opt);
  DecodeRun r;
  while (auto t = gen.next()) {
    r.tokens.push_back(*t);
    r.logprobs.push_back(to_device(gen.logprobs(), Device::cpu()).to_vector<float>());
  }
  r.captures = gen.decode_graph().captures();
  r.replays = gen.decode_graph().replays();
  r.failure = gen.decode_graph().failure();
  r.code_hits = cuda::act_int8::hits() - hits;
  return r;
}

// The step must replay from graphs and give the op-by-op step's tokens and logits bit for bit. Returns the
// graph run (its code_hits count the host-side GEMV launches, so the recordings and the prompt pass, not
// the replays).
DecodeRun expect_graphs_match_eager(models::LanguageModel& m, const std::string& fixture, float temp) {
  // 240 prompt tokens: the first decode step writes position 240 (page 0), step 17 position 256
  // (page 1), where the graph must be recorded again.
  std::vector<int32_t> prompt = random_prompt(m.vocab_size(), 240, 11);
  DecodeRun eager = decode(m, prompt, 64, false, temp);
  DecodeRun graph = decode(m, prompt, 64, true, temp);
  EXPECT_EQ(eager.replays, 0);
  EXPECT_EQ(graph.failure, "");
  // Steps 2..64 are decode steps on the device-side token (the first comes from the prompt pass);
  // the first of them records page 0's graph, position 256 records page 1's.
  EXPECT_EQ(graph.captures, 2);
  EXPECT_EQ(graph.replays, 63);
  EXPECT_EQ(graph.tokens, eager.tokens);
  if (graph.logprobs.size() != eager.logprobs.size()) {
    ADD_FAILURE() << fixture << ": " << graph.logprobs.size() << " graph steps vs " << eager.logprobs.size();
    return graph;
  }
  for (size_t i = 0; i < eager.logprobs.size(); ++i) {
    if (graph.logprobs[i].size() != eager.logprobs[i].size()) {
      ADD_FAILURE() << fixture << " step " << i << ": logits sizes differ";
      return graph;
    }
    EXPECT_EQ(std::memcmp(graph.logprobs[i].data(), eager.logprobs[i].data(), eager.logprobs[i].size() * sizeof(float)), 0)
        << fixture << " step " << i << ": replayed logits differ from the op-by-op step";
  }
  return graph;
}

void expect_graphs_match_eager(const std::string& fixture, Dtype dtype, float temp) {
  models::LoadedModel lm = load_on_device(fixture_dir(fixture), dtype);
  (void)expect_graphs_match_eager(*lm.model, fixture, temp);
}

TEST(DecodeGraph, LlamaF32GreedyMatchesEager) {
  LOOM_REQUIRE_CUDA();
  expect_graphs_match_eager("llama", Dtype::f32, 0.0f);
}

TEST(DecodeGraph, Qwen3Bf16SampledMatchesEager) {
  LOOM_REQUIRE_CUDA();
  expect_graphs_match_eager("qwen3", Dtype::bf16, 1.0f);  // sampling: same seed, same draws
}

TEST(DecodeGraph, MoeMatchesEager) {
  LOOM_REQUIRE_CUDA();
  // (Routing, the expert GEMVs and the weighted sum all run on the device with no host sync: the step
  // records. An arange made on the CPU inside take_along_axis used to upload, and block recording.)
  expect_graphs_match_eager("qwen3_moe", Dtype::f32, 0.0f);
  expect_graphs_match_eager("mixtral", Dtype::bf16, 0.0f);
}

TEST(DecodeGraph, SlidingWindowMatchesEager) {
  LOOM_REQUIRE_CUDA();
  expect_graphs_match_eager("mistral", Dtype::f32, 0.0f);
}

// A quantized model on the fast tier (affine 4/8-bit decode GEMVs over int8 activations), where the
// add+RMSNorm kernels store the int8 codes that the q/k/v and gate/up GEMVs then read instead of
// quantizing their input (backend/cuda/act_int8.h): the handoff must also hold inside recorded steps.
// The fixture's hidden size (32) and MLP width (64) take group size 32 on every projection. The graph
// run must have used stored codes: act_int8::hits counts a GEMV launch that took them, on the host, so
// never in a replay. The 240-row prompt pass takes at most one (add+norm stores codes for at most 8 rows:
// only the final norm of its last row, read by the head), so more than one means the two recordings
// took them too.
TEST(DecodeGraph, QuantizedFastTierMatchesEager) {
  LOOM_REQUIRE_CUDA();
  ASSERT_EQ(qmm_precision(), QmmPrecision::fast);
  for (int bits : {4, 8}) {
    for (Dtype dtype : {Dtype::bf16, Dtype::f32}) {
      models::LoadedModel lm = load_on_device(fixture_dir("llama"), dtype);
      models::quantize_model(*lm.model, {QuantMode::affine, bits, 32});
      const std::string what = "llama " + std::to_string(bits) + "-bit " + std::string(name(dtype));
      const DecodeRun graph = expect_graphs_match_eager(*lm.model, what, 0.0f);
      EXPECT_GT(graph.code_hits, 1) << what << ": the recordings read no stored codes";
    }
  }
}

// A cache that is not plain KVCache layers (here the rotating cache of --max-kv-size) decodes op by
// op: no recording, no failure.
TEST(DecodeGraph, RotatingCacheRunsEager) {
  LOOM_REQUIRE_CUDA();
  models::LoadedModel lm = load_on_device(fixture_dir("llama"), Dtype::f32);
  models::CacheOptions co;
  co.max_kv_size = 64;
  models::Cache cache = lm.model->make_cache(co);
  generate::GenerateOptions opt;
  opt.max_tokens = 8;
  generate::TokenGenerator gen(*lm.model, cache, {1, 2, 3}, opt);
  while (gen.next()) {
  }
  EXPECT_EQ(gen.decode_graph().captures(), 0);
  EXPECT_EQ(gen.decode_graph().failure(), "");
}

// 10k decode steps through replayed graphs: between KV page boundaries (every 256 positions, where
// the cache adds a page per layer) the device allocator's live bytes and its system allocations do
// not move at all, so a long generation holds no more than its cache. Dense, and quantized to 4 bits on
// the fast tier (whose recordings also allocate the int8 code buffers of act_int8.h).
void expect_ten_thousand_steps_flat(bool quantized) {
  models::LoadedModel lm = load_on_device(fixture_dir("llama"), Dtype::bf16);
  if (quantized) models::quantize_model(*lm.model, {QuantMode::affine, 4, 32});
  auto& m = *lm.model;
  models::Cache cache = m.make_cache();
  generate::DecodeGraph graph(true);
  Array tok = Array::from(std::vector<int32_t>{1}, {1, 1});
  int windows_checked = 0;
  AllocatorStats mark{};
  for (int step = 0; step < 10000; ++step) {
    tok = reshape(astype(argmax(graph.forward(m, cache, tok), -1), Dtype::i32), {1, 1});
    const int64_t in_page = cache.offset() % models::KVCache::kPageSize;
    if (in_page == 8) {
      synchronize(kGpu);
      mark = allocator::stats(kGpu);
    } else if (in_page == 250 && step > 256) {
      synchronize(kGpu);
      AllocatorStats now = allocator::stats(kGpu);
      EXPECT_EQ(now.active_bytes, mark.active_bytes) << "at step " << step << (quantized ? " (4-bit)" : "");
      EXPECT_EQ(now.system_allocs, mark.system_allocs) << "at step " << step << (quantized ? " (4-bit)" : "");
      ++windows_checked;
    }
  }
  EXPECT_EQ(graph.failure(), "");
  EXPECT_GE(graph.replays(), 9990);
  EXPECT_EQ(graph.captures(), 10001 / models::KVCache::kPageSize + 1);
  EXPECT_GE(windows_checked, 37);
}

TEST(DecodeGraph, TenThousandStepsKeepAllocatorFlat) {
  LOOM_REQUIRE_CUDA();
  expect_ten_thousand_steps_flat(false);
  expect_ten_thousand_steps_flat(true);
}

}  // namespace
}  // namespace loom::test
