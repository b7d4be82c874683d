// `loom logits` end to end: the binary's .npy equals transformers' reference for a full pass and
// token by token, and bad input gives one clear line and a non-zero exit.
#include <array>
#include <cstdio>
#include <filesystem>

#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {


std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

TEST(LogitsCli, MatchesTransformersFullAndTokenByToken) {
  for (const std::string name : {"llama", "qwen3"}) {
    Reference ref = load_reference(name);
    for (const std::string chunk : {"0", "1"}) {
      std::string out = std::string(LOOM_BINARY_DIR) + "/cli_logits_" + name + "_" + chunk + ".npy";
      CliResult r = run_loom("logits --model " + fixture_dir(name) + " --tokens " + join_ids(ref.prompts[0]) + " --out " +
                          out + " --chunk " + chunk + " --device cpu");
      ASSERT_EQ(r.status, 0) << r.output;
      EXPECT_NE(r.output.find("device cpu, compute float32"), std::string::npos) << r.output;
      Array got = io::load_npy(out);
      EXPECT_EQ(got.dtype(), Dtype::f32);
      expect_logits_near(got, ref.logits[0], kF32, name + " chunk " + chunk);
    }
  }
}

TEST(LogitsCli, BadInputGivesOneClearLine) {
  std::string m = fixture_dir("llama");
  std::string out = std::string(LOOM_BINARY_DIR) + "/cli_bad.npy";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"logits --model " + m + " --tokens 1,x,3 --out " + out, "'x' is not a token id"},
      {"logits --model " + m + " --tokens 1,999 --out " + out, "outside the vocabulary"},
      {"logits --model /nonexistent/model --tokens 1 --out " + out, "/nonexistent/model"},
      {"logits --model " + m + " --tokens 1 --out " + out + " --dtype int8", "--dtype"},
      {"logits --model " + m + " --tokens 1 --out " + out + " --device tpu", "unknown device 'tpu'"},
      // No machine here has eight GPUs; a CPU-only build says it has no CUDA backend.
      {"logits --model " + m + " --tokens 1 --out " + out + " --device cuda:7", "cuda:7 is not available"},
  };
  for (const auto& c : cases) {
    CliResult r = run_loom(c.args);
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << " -> " << r.output;
  }
}

TEST(Cli, VersionAndInfo) {
  CliResult v = run_loom("--version");
  EXPECT_EQ(v.status, 0);
  EXPECT_NE(v.output.find("loom "), std::string::npos) << v.output;
  CliResult i = run_loom("info --model " + fixture_dir("qwen2") + " --json");
  ASSERT_EQ(i.status, 0) << i.output;
  auto j = nlohmann::json::parse(i.output);
  EXPECT_EQ(j["model_type"], "qwen2");
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["vocab_size"], 128);
}

}  // namespace
}  // namespace loom::test
