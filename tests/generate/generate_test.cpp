// The generation loop, prompt-cache files and the CLI end to end, on a tiny random llama whose
// vocabulary is the real Qwen3 tokenizer's (fetched by the tokenizer_data fixture). The oracle for
// greedy decoding is an independent full-sequence pass (LogitsMode::all, no cache reuse) with argmax.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <set>
#include <sstream>

#include "loom/generate/generate.h"
#include "loom/generate/prompt_cache.h"
#include "loom/generate/session.h"
#include "loom/io/config.h"
#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "loom/ops/ops.h"
#include "tests/generate/cli_util.h"

using namespace loom;
namespace fs = std::filesystem;

using namespace loom::gentest;


TEST(Generate, GreedyStreamMatchesFullRecomputeOracle) {
  auto& s = session();
  std::vector<int32_t> prompt = s.tokenizer.encode("The quick brown fox", true);
  generate::StreamOptions opt;
  opt.generate.max_tokens = 10;
  opt.generate.prefill_step_size = 2;  // several prefill chunks
  opt.eos_ids = s.eos_ids;
  models::Cache cache = s.loaded.model->make_cache();
  std::string text;
  auto ids = generate::stream_generate(*s.loaded.model, s.tokenizer, cache, prompt, opt, [&](const auto& r) {
    text += r.text;
    return true;
  });
  EXPECT_EQ(ids, oracle_greedy(*s.loaded.model, prompt, 10, s.eos_ids));
  EXPECT_EQ(text, s.tokenizer.decode(ids));
}

TEST(Generate, PromptCacheRoundTripContinuesIdentically) {
  auto& s = session();
  std::vector<int32_t> a = s.tokenizer.encode("Once upon a time", true), b = s.tokenizer.encode(" there was", false);
  models::Cache cache = s.loaded.model->make_cache();
  s.loaded.model->forward(Array::from(a, {1, static_cast<int64_t>(a.size())}), cache, models::LogitsMode::none);
  std::string file = scratch("test_generate_prompt_cache") + ".safetensors";
  generate::save_prompt_cache(file, cache, {{"model", "tiny"}});
  // mlx-lm's key layout.
  auto st = io::SafetensorsFile::open(file);
  EXPECT_NE(st->find("0.0"), nullptr);
  EXPECT_NE(st->find("1.1"), nullptr);
  EXPECT_EQ(st->metadata().at("2.0"), "KVCache");
  EXPECT_EQ(st->metadata().at("1.model"), "tiny");
  std::map<std::string, std::string> meta;
  models::Cache loaded = generate::load_prompt_cache(file, *s.loaded.model, &meta);
  EXPECT_EQ(meta.at("model"), "tiny");
  EXPECT_EQ(loaded.offset(), static_cast<int64_t>(a.size()));
  generate::StreamOptions opt;
  opt.generate.max_tokens = 8;
  auto ids = generate::stream_generate(*s.loaded.model, s.tokenizer, loaded, b, opt, [](const auto&) { return true; });
  std::vector<int32_t> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  EXPECT_EQ(ids, oracle_greedy(*s.loaded.model, ab, 8, {}));
}

TEST(Generate, SeededSamplingIsDeterministic) {
  auto& s = session();
  std::vector<int32_t> prompt = s.tokenizer.encode("Hello", true);
  auto run = [&](uint64_t seed) {
    generate::StreamOptions opt;
    opt.generate.max_tokens = 12;
    opt.generate.seed = seed;
    opt.generate.sampler = {.temp = 1.0f, .top_p = 0.9f, .top_k = 50};
    models::Cache c = s.loaded.model->make_cache();
    return generate::stream_generate(*s.loaded.model, s.tokenizer, c, prompt, opt, [](const auto&) { return true; });
  };
  EXPECT_EQ(run(3), run(3));
  EXPECT_NE(run(3), run(4));
}

TEST(Generate, ContextWindowPolicy) {
  auto& s = session();
  std::vector<int32_t> prompt = s.tokenizer.encode("one two three four", true);
  generate::StreamOptions opt;
  opt.generate.max_tokens = 100;
  opt.generate.max_context = static_cast<int64_t>(prompt.size()) + 3;
  models::Cache c = s.loaded.model->make_cache();
  std::string reason;
  auto ids = generate::stream_generate(*s.loaded.model, s.tokenizer, c, prompt, opt, [&](const auto& r) {
    reason = r.finish_reason;
    return true;
  });
  // Positions prompt..prompt+2 fill the window; the 4th token is drawn from the last logits.
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(reason, "context");
  opt.generate.max_context = static_cast<int64_t>(prompt.size()) - 1;
  models::Cache c2 = s.loaded.model->make_cache();
  EXPECT_THROW(generate::stream_generate(*s.loaded.model, s.tokenizer, c2, prompt, opt, [](const auto&) { return true; }),
               ValueError);
}

TEST(GenerateCli, GreedyStdoutIsTheDecodedTokens) {
  auto& s = session();
  CliRun r = run_cli("generate --model " + tiny_model() + " --temp 0 -m 12 --ignore-chat-template -p 'Hello world'");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto ids = oracle_greedy(*s.loaded.model, s.tokenizer.encode("Hello world", true), 12, s.eos_ids);
  EXPECT_EQ(r.out, s.tokenizer.decode(ids) + "\n");
  EXPECT_NE(r.err.find("Generation:"), std::string::npos);
  EXPECT_NE(r.err.find("Peak memory:"), std::string::npos);
}

TEST(GenerateCli, CachePromptThenGenerateFromIt) {
  auto& s = session();
  std::string file = scratch("test_generate_cli_cache") + ".safetensors";
  CliRun c = run_cli("cache-prompt --model " + tiny_model() + " --ignore-chat-template -p 'Once upon' --prompt-cache-file " + file);
  ASSERT_EQ(c.rc, 0) << c.err;
  CliRun r = run_cli("generate --model " + tiny_model() + " --prompt-cache-file " + file +
                  " --ignore-chat-template --temp 0 -m 6 -p ' a time'");
  ASSERT_EQ(r.rc, 0) << r.err;
  std::vector<int32_t> seq = s.tokenizer.encode("Once upon", true), b = s.tokenizer.encode(" a time", true);
  seq.insert(seq.end(), b.begin(), b.end());
  EXPECT_EQ(r.out, s.tokenizer.decode(oracle_greedy(*s.loaded.model, seq, 6, s.eos_ids)) + "\n");
}

TEST(GenerateCli, ClearErrors) {
  // Offline with an empty cache: a Hub id (given, or the default model) is a clear miss naming it.
  std::string env = "HF_HUB_OFFLINE=1 HF_HUB_CACHE=" + scratch("test_generate_hub_cache") + " ";
  CliRun hub = run_cli("generate --model some-org/some-model -p hi", env);
  EXPECT_NE(hub.rc, 0);
  EXPECT_NE(hub.err.find("some-org/some-model"), std::string::npos) << hub.err;
  EXPECT_NE(hub.err.find("offline"), std::string::npos) << hub.err;
  CliRun def = run_cli("generate -p hi", env);
  EXPECT_NE(def.rc, 0);
  EXPECT_NE(def.err.find("mlx-community/Qwen3-0.6B-4bit"), std::string::npos) << def.err;
  // --kv-bits with --max-kv-size: not supported (as in mlx-lm), said up front.
  CliRun kv = run_cli("generate --model " + tiny_model(64) + " --kv-bits 4 --max-kv-size 64 -p hi");
  EXPECT_NE(kv.rc, 0);
  EXPECT_NE(kv.err.find("[kv-bits]"), std::string::npos) << kv.err;
  EXPECT_NE(kv.err.find("--max-kv-size"), std::string::npos) << kv.err;
  EXPECT_NE(kv.err.find("not supported"), std::string::npos) << kv.err;
  CliRun bits = run_cli("generate --model " + tiny_model(64) + " --kv-bits 7 -p hi");
  EXPECT_NE(bits.rc, 0);
  EXPECT_NE(bits.err.find("[kv-bits]"), std::string::npos) << bits.err;
  // A head dim the group size does not divide: a clear error once the cache is quantized.
  CliRun dim = run_cli("generate --model " + tiny_model() + " --kv-bits 8 --quantized-kv-start 0 -p hi");
  EXPECT_NE(dim.rc, 0);
  EXPECT_NE(dim.err.find("not divisible"), std::string::npos) << dim.err;
}

TEST(GenerateCli, QuantizedKVCache) {
  // --kv-bits 8 from the start: runs and generates; with a start the cache never reaches it is the
  // float cache, so the answer is the float run's exactly.
  std::string args = "generate --model " + tiny_model(64) + " --ignore-chat-template --temp 0 -m 8 -p 'Hello world'";
  CliRun ref = run_cli(args);
  ASSERT_EQ(ref.rc, 0) << ref.err;
  CliRun q8 = run_cli(args + " --kv-bits 8 --kv-group-size 64 --quantized-kv-start 0");
  ASSERT_EQ(q8.rc, 0) << q8.err;
  EXPECT_GT(q8.out.size(), 1u);
  EXPECT_NE(q8.err.find("Generation: "), std::string::npos) << q8.err;
  CliRun q4 = run_cli(args + " --kv-bits 4 --kv-group-size 32 --quantized-kv-start 0");
  ASSERT_EQ(q4.rc, 0) << q4.err;
  CliRun late = run_cli(args + " --kv-bits 8");  // default start 5000
  ASSERT_EQ(late.rc, 0) << late.err;
  EXPECT_EQ(late.out, ref.out);
}

TEST(Generate, LookAheadQueuesTheNextStepBeforeReturningAToken) {
  // next() runs the model on token n (step n+1) before it hands token n back, so the cache holds
  // prompt + n tokens after the n-th call — except when max_tokens says no further step is needed.
  auto& s = session();
  std::vector<int32_t> prompt = s.tokenizer.encode("Look ahead", true);
  const int64_t P = static_cast<int64_t>(prompt.size());
  generate::GenerateOptions opt;
  opt.max_tokens = 3;
  models::Cache c = s.loaded.model->make_cache();
  generate::TokenGenerator gen(*s.loaded.model, c, prompt, opt);
  EXPECT_EQ(c.offset(), P);  // the prompt; its first token is drawn already
  ASSERT_TRUE(gen.next());
  EXPECT_EQ(c.offset(), P + 1);
  ASSERT_TRUE(gen.next());
  EXPECT_EQ(c.offset(), P + 2);
  ASSERT_TRUE(gen.next());
  EXPECT_EQ(c.offset(), P + 2);  // the third token is the last: no step for a fourth
  EXPECT_FALSE(gen.next());
  EXPECT_EQ(gen.logprobs().shape(), (Shape{1, s.loaded.model->vocab_size()}));
}

TEST(Generate, PenaltiesSeeThePromptAndTheGeneratedTokens) {
  // Greedy decoding with all four processors against an oracle that recomputes the full sequence each
  // step and applies mlx-lm's definitions on the host, in mlx-lm's order: bias +100 on X (" the"),
  // repetition 1.5 over the last 4 tokens (negative * 1.5, else / 1.5, once per distinct token),
  // presence 0.5 over the last 20 (once per distinct token), frequency 40 over the last 6 (per
  // occurrence). X wins while it occurs at most once in the last 6 tokens and loses at twice, so the
  // tokens depend on the exact window; 7 prompt + 16 generated ids also overflow the 20-id history
  // the generator keeps on the device.
  auto& s = session();
  std::vector<int32_t> prompt = s.tokenizer.encode("the the the cat sat on the", true);
  const int32_t X = prompt[1];
  const int n = 16;
  generate::GenerateOptions opt;
  opt.max_tokens = n;
  opt.processors.logit_bias = {{X, 100.0f}};
  opt.processors.repetition_penalty = 1.5f;
  opt.processors.repetition_context_size = 4;
  opt.processors.presence_penalty = 0.5f;
  opt.processors.presence_context_size = 20;
  opt.processors.frequency_penalty = 40.0f;
  opt.processors.frequency_context_size = 6;
  models::Cache c = s.loaded.model->make_cache();
  generate::TokenGenerator gen(*s.loaded.model, c, prompt, opt);
  std::vector<int32_t> got;
  while (auto t = gen.next()) got.push_back(*t);

  std::vector<int32_t> seq = prompt, want;
  for (int i = 0; i < n; ++i) {
    models::Cache fresh = s.loaded.model->make_cache();
    const int64_t L = static_cast<int64_t>(seq.size());
    Array logits = s.loaded.model->forward(Array::from(seq, {1, L}), fresh, models::LogitsMode::all);
    auto v = slice_axis(reshape(logits, {L, logits.shape(-1)}), 0, L - 1, L).to_float_vector();
    v[X] += 100.0f;
    for (int32_t t : std::set<int32_t>(seq.end() - std::min<int64_t>(L, 4), seq.end()))
      v[t] = v[t] < 0 ? v[t] * 1.5f : v[t] / 1.5f;
    for (int32_t t : std::set<int32_t>(seq.end() - std::min<int64_t>(L, 20), seq.end())) v[t] -= 0.5f;
    for (auto it = seq.end() - std::min<int64_t>(L, 6); it != seq.end(); ++it) v[*it] -= 40.0f;
    std::vector<float> sorted = v;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    EXPECT_GT(sorted[0] - sorted[1], 1e-3f) << "top-1/top-2 margin too small for a stable greedy oracle";
    int32_t id = static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
    want.push_back(id);
    seq.push_back(id);
  }
  EXPECT_EQ(got, want);
  // X is drawn, and not always: the window decides.
  const auto xs = std::count(want.begin(), want.end(), X);
  EXPECT_GT(xs, 0);
  EXPECT_LT(xs, n);
}

// The KV-cache preflight: a generation whose cache cannot fit the device's free memory fails up front
// with a message that says so (here 2^30 tokens of the tiny model: 2 layers x 2 KV heads x head_dim x
// (k, v) in f32, hundreds of bytes a token, so hundreds of GiB), and a
// normal one is not refused.
TEST(Generate, KvCachePreflightRefusesWhatCannotFit) {
  auto& s = session();
  std::vector<int32_t> prompt = s.tokenizer.encode("Hello", true);
  generate::GenerateOptions opt;
  opt.max_tokens = 1 << 30;
  opt.max_context = int64_t{1} << 40;
  models::Cache cache = s.loaded.model->make_cache();
  try {
    generate::TokenGenerator gen(*s.loaded.model, cache, prompt, opt);
    FAIL() << "a 2^30-token generation passed the preflight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the KV cache for"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("free"), std::string::npos) << e.what();
  }
  opt.max_tokens = 4;
  models::Cache ok = s.loaded.model->make_cache();
  generate::TokenGenerator gen(*s.loaded.model, ok, prompt, opt);
  EXPECT_TRUE(gen.next().has_value());
}
