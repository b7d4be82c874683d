// loom's apply_chat_template against real transformers 5.17 tokenizer.apply_chat_template output for
// the npm tokenizers (tests/chat/expected/*.json, written by tools/refgen/chat_ref.py on the GPU
// machine). Needs no Python at test time.
#include <gtest/gtest.h>

#include "loom/chat/chat_template.h"
#include "loom/common/strings.h"
#include "tests/chat/oracle.h"

namespace loom::chat {
namespace {

using json = nlohmann::ordered_json;

class ChatTransformers : public ::testing::TestWithParam<const char*> {};

TEST_P(ChatTransformers, MatchesApplyChatTemplate) {
  std::string name = GetParam();
  json expected = json::parse(loom::read_file(std::string(LOOM_SOURCE_DIR) + "/tests/chat/expected/" + name + ".json"));
  json conversations = json::parse(loom::read_file(std::string(LOOM_SOURCE_DIR) + "/tests/chat/conversations.json"));
  auto config = ChatTemplateConfig::from_model_dir(testing::tokenizers_dir() + "/" + name);
  // The special tokens a template can see, as transformers reported them (gemma3's mask_token comes
  // from its tokenizer class, not tokenizer_config.json, so only the ones loom knows are compared).
  for (auto it = config.special_tokens.begin(); it != config.special_tokens.end(); ++it)
    EXPECT_EQ(expected["special_tokens_map"].value(it.key(), json()), it.value()) << name << " " << it.key();
  ASSERT_EQ(expected["results"].size(), conversations.size());
  std::size_t identical = 0;
  for (std::size_t i = 0; i < conversations.size(); ++i) {
    const json& conv = conversations[i];
    const json& r = expected["results"][i];
    ASSERT_EQ(r["conversation"], conv["id"]);
    ChatRequest req;
    req.messages = conv["messages"];
    if (conv.contains("tools")) req.tools = conv["tools"];
    req.add_generation_prompt = conv.value("add_generation_prompt", false);
    req.continue_final_message = conv.value("continue_final_message", false);
    if (conv.contains("kwargs")) req.kwargs = conv["kwargs"];
    std::string out, error;
    try {
      out = apply_chat_template(config, req, testing::fixed_clock_options());
    } catch (const loom::Error& e) {
      error = e.what();
    }
    std::string where = name + " x " + conv["id"].get<std::string>();
    if (r.contains("error")) {
      EXPECT_FALSE(error.empty()) << where << ": transformers raised " << r["error"] << " but loom rendered " << json(out);
      continue;
    }
    ASSERT_TRUE(error.empty()) << where << ": loom raised " << error;
    std::string want = r["output"].get<std::string>();
    EXPECT_EQ(want, out) << where << ": " << testing::describe_diff(want, out);
    identical += want == out;
  }
  std::printf("[chat transformers] %s: %zu conversations identical\n", name.c_str(), identical);
}

INSTANTIATE_TEST_SUITE_P(Npm, ChatTransformers, ::testing::Values("llama3", "qwen3", "gemma3", "deepseek_v3"));

}  // namespace
}  // namespace loom::chat
