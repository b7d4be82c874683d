// Every template in ../shared/chat-templates plus the chat templates of the four npm tokenizers, over
// every conversation of conversations.json, must render byte-identical to Python jinja2 with
// transformers' environment (render_reference.py corpus), and raise where Python raises.
#include <filesystem>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "loom/chat/chat_template.h"
#include "loom/common/strings.h"
#include "tests/chat/oracle.h"

namespace loom::chat {
namespace {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

struct CorpusTemplate {
  ChatTemplateConfig config;
};

std::map<std::string, ChatTemplateConfig> load_corpus() {
  std::map<std::string, ChatTemplateConfig> out;
  for (const auto& e : fs::directory_iterator(testing::shared_templates_dir())) {
    if (e.path().extension() != ".jinja") continue;
    ChatTemplateConfig c;
    c.templates["default"] = loom::read_file(e.path().string());
    c.special_tokens = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
    out[e.path().filename().string()] = c;
  }
  for (const char* tok : {"llama3", "qwen3", "gemma3", "deepseek_v3"}) {
    std::string dir = testing::tokenizers_dir() + "/" + tok;
    out[std::string("npm:") + tok] = ChatTemplateConfig::from_model_dir(dir);
  }
  return out;
}

ChatRequest request_of(const json& conv) {
  ChatRequest r;
  r.messages = conv.at("messages");
  if (conv.contains("tools") && !conv["tools"].is_null()) r.tools = conv["tools"];
  if (conv.contains("documents") && !conv["documents"].is_null()) r.documents = conv["documents"];
  r.add_generation_prompt = conv.value("add_generation_prompt", false);
  r.continue_final_message = conv.value("continue_final_message", false);
  if (conv.contains("kwargs")) r.kwargs = conv["kwargs"];
  return r;
}

TEST(ChatCorpus, SharedFolderExists) {
  ASSERT_TRUE(fs::is_directory(testing::shared_templates_dir()))
      << testing::shared_templates_dir() << " is missing: the shared chat templates must sit beside the clone";
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(testing::shared_templates_dir())) n += e.path().extension() == ".jinja";
  EXPECT_GE(n, 30u);
}

TEST(ChatCorpus, ByteIdenticalToJinja2) {
  ASSERT_TRUE(fs::is_directory(testing::shared_templates_dir())) << testing::shared_templates_dir() << " is missing";
  json oracle = testing::load_oracle("oracle_corpus.json");
  json conversations = json::parse(loom::read_file(std::string(LOOM_SOURCE_DIR) + "/tests/chat/conversations.json"));
  std::map<std::string, json> conv_by_id;
  for (const auto& c : conversations) conv_by_id[c["id"].get<std::string>()] = c;
  auto corpus = load_corpus();
  std::size_t identical = 0, raised_both = 0, failures = 0;
  std::set<std::string> templates_seen;
  for (const auto& r : oracle["results"]) {
    std::string tname = r["template"].get<std::string>(), cid = r["conversation"].get<std::string>();
    templates_seen.insert(tname);
    ASSERT_TRUE(corpus.count(tname)) << tname;
    std::string where = tname + " x " + cid;
    std::string actual;
    std::string error;
    try {
      actual = apply_chat_template(corpus[tname], request_of(conv_by_id.at(cid)), testing::fixed_clock_options());
    } catch (const loom::Error& e) {
      error = e.what();
    }
    if (r.contains("error")) {
      if (!error.empty()) {
        ++raised_both;
      } else {
        ++failures;
        ADD_FAILURE() << where << ": Python raised " << r["error"].get<std::string>() << " but loom rendered "
                      << json(actual.substr(0, 200)).dump();
      }
      continue;
    }
    std::string expected = r["output"].get<std::string>();
    if (!error.empty()) {
      ++failures;
      ADD_FAILURE() << where << ": loom raised " << error;
    } else if (expected != actual) {
      ++failures;
      ADD_FAILURE() << where << ": " << testing::describe_diff(expected, actual);
    } else {
      ++identical;
    }
  }
  EXPECT_EQ(templates_seen.size(), corpus.size()) << "the oracle did not cover every template";
  std::printf("[chat corpus] %zu templates x %zu conversations: %zu identical, %zu raised in both, %zu failures\n",
              templates_seen.size(), conversations.size(), identical, raised_both, failures);
}

}  // namespace
}  // namespace loom::chat
