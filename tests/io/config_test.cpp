// Config: v4/v5 key normalisation, strict typed getters with exact messages, generation_config.
#include "loom/io/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include "io_test_util.h"
#include "loom/common/error.h"

namespace loom::io {
namespace {

using test::expect_error;
using test::temp_dir;
using test::write_bytes;

// The same Llama-3.1 rope as transformers v4 writes it ...
const char* kLlamaV4 = R"({
  "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "rms_norm_eps": 1e-05,
  "torch_dtype": "bfloat16", "rope_theta": 500000.0, "tie_word_embeddings": true,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
})";
// ... and as transformers v5 writes it.
const char* kLlamaV5 = R"({
  "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "rms_norm_eps": 1e-05,
  "dtype": "bfloat16", "tie_word_embeddings": true,
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
})";

// Python's json.dump writes Infinity/NaN (transformers' Mamba-2 default time_step_limit is
// [0.0, Infinity]); they load as the largest double and null, and the same words inside strings stay.
TEST(Config, PythonInfinityAndNaNLiteralsParse) {
  Config c = Config::parse(R"({"time_step_limit": [0.0, Infinity], "low": -Infinity, "x": NaN,
                               "name": "Infinity NaN \" Infinity"})");
  std::vector<double> lim = c.get_float_list("time_step_limit");
  ASSERT_EQ(lim.size(), 2u);
  EXPECT_EQ(lim[0], 0.0);
  EXPECT_EQ(lim[1], std::numeric_limits<double>::max());
  EXPECT_EQ(c.get_float("low"), -std::numeric_limits<double>::max());
  EXPECT_EQ(c.get_string("name"), "Infinity NaN \" Infinity");
}

TEST(Config, V4AndV5NormaliseToTheSameValues) {
  for (const char* text : {kLlamaV4, kLlamaV5}) {
    SCOPED_TRACE(text);
    Config c = Config::parse(text);
    EXPECT_EQ(c.get_float("rope_theta"), 500000.0);
    EXPECT_EQ(c.get_string("torch_dtype"), "bfloat16");
    ASSERT_TRUE(c.is_object("rope_scaling"));
    Config rs = c.sub("rope_scaling");
    EXPECT_EQ(rs.get_string("type"), "llama3");
    EXPECT_EQ(rs.get_string("rope_type"), "llama3");
    EXPECT_EQ(rs.get_float("factor"), 8.0);
    EXPECT_EQ(rs.get_float("low_freq_factor"), 1.0);
    EXPECT_EQ(rs.get_float("high_freq_factor"), 4.0);
    EXPECT_EQ(rs.get_int("original_max_position_embeddings"), 8192);
    EXPECT_FALSE(rs.has("rope_theta"));
  }
  // The normalised rope_scaling objects are identical, key for key.
  EXPECT_EQ(Config::parse(kLlamaV4).sub("rope_scaling").dump(), Config::parse(kLlamaV5).sub("rope_scaling").dump());
}

TEST(Config, V5DefaultRopeSetsThetaOnly) {
  Config c = Config::parse(R"({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "dtype": "float32"})");
  EXPECT_EQ(c.get_float("rope_theta"), 10000.0);
  EXPECT_FALSE(c.has("rope_scaling"));
  EXPECT_EQ(c.get_string("torch_dtype"), "float32");
}

TEST(Config, V5YarnAndExistingV4KeysWin) {
  Config c = Config::parse(R"({"rope_theta": 1000000, "torch_dtype": "float16", "dtype": "bfloat16",
      "rope_parameters": {"rope_type": "yarn", "rope_theta": 5.0, "factor": 4.0, "beta_fast": 32, "beta_slow": 1,
                          "original_max_position_embeddings": 32768}})");
  EXPECT_EQ(c.get_float("rope_theta"), 1000000.0);  // already present: kept
  EXPECT_EQ(c.get_string("torch_dtype"), "float16");
  Config rs = c.sub("rope_scaling");
  EXPECT_EQ(rs.get_string("type"), "yarn");
  EXPECT_EQ(rs.get_int("beta_fast"), 32);
  EXPECT_EQ(rs.get_float("beta_slow"), 1.0);
  EXPECT_EQ(rs.get_int("original_max_position_embeddings"), 32768);
}

TEST(Config, V4ScalingWithOnlyTypeGetsRopeType) {
  Config c = Config::parse(R"({"rope_scaling": {"type": "linear", "factor": 2.0}})");
  EXPECT_EQ(c.sub("rope_scaling").get_string("rope_type"), "linear");
  EXPECT_FALSE(Config::parse(R"({"rope_scaling": null})").has("rope_scaling"));
}

TEST(Config, NestedTextConfigIsNormalised) {
  Config c = Config::parse(R"({"model_type": "vlm", "text_config": {"hidden_size": 32, "dtype": "bfloat16",
      "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}})");
  Config t = c.sub("text_config");
  EXPECT_EQ(t.get_float("rope_theta"), 10000.0);
  EXPECT_EQ(t.get_string("torch_dtype"), "bfloat16");
  EXPECT_EQ(t.sub("rope_scaling").get_string("type"), "linear");
  EXPECT_EQ(t.sub("rope_scaling").get_float("factor"), 2.0);
  Config m = c.merged(t);
  EXPECT_EQ(m.get_string("model_type"), "vlm");
  EXPECT_EQ(m.get_int("hidden_size"), 32);
  EXPECT_EQ(m.source(), "config.json");
}

TEST(Config, LoadFromFolderOrFileAndExactMessages) {
  std::string dir = temp_dir();
  write_bytes(dir + "/config.json", R"({"hidden_size": "abc", "vocab_size": 4096.0, "eps": 1, "ratio": 1.5})");
  write_bytes(dir + "/other.json", R"({"num_hidden_layers": 3})");
  Config c = Config::load(dir);
  EXPECT_EQ(c.source(), dir + "/config.json");
  EXPECT_EQ(Config::load(dir + "/other.json").get_int("num_hidden_layers"), 3);
  try {
    c.get_int("num_hidden_layers");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "[config] missing 'num_hidden_layers' in " + dir + "/config.json");
  }
  try {
    c.get_int("hidden_size");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "[config] 'hidden_size' in " + dir + "/config.json must be an integer, got \"abc\"");
  }
  EXPECT_EQ(c.get_int("vocab_size"), 4096);  // integral float accepted as int
  EXPECT_EQ(c.get_float("eps"), 1.0);        // int accepted as float
  expect_error<ConfigError>([&] { c.get_int("ratio"); }, {"'ratio'", "must be an integer", "1.5"});
  expect_error<ConfigError>([&] { c.get_int("ratio", 3); }, {"'ratio'", "must be an integer"});
  expect_error<ConfigError>([&] { c.get_float("hidden_size"); }, {"'hidden_size'", "must be a number", "\"abc\""});
  expect_error<ConfigError>([&] { Config::load(dir + "/nope"); }, {"[config]", dir + "/nope"});
  write_bytes(dir + "/broken.json", "{\"a\": ");
  expect_error<ConfigError>([&] { Config::load(dir + "/broken.json"); }, {"[config]", "invalid JSON", "broken.json"});
  write_bytes(dir + "/list.json", "[1, 2]");
  expect_error<ConfigError>([&] { Config::load(dir + "/list.json"); }, {"list.json", "object"});
}

TEST(Config, TypedGetters) {
  Config c = Config::parse(R"({"i": 7, "f": 0.25, "b": true, "s": "silu", "n": null, "il": [1, 2.0, 3], "one": 5,
      "fl": [0.5, 1], "sl": ["a", "b"], "obj": {"x": 1}, "bad_list": [1, "x"]})", "test.json");
  EXPECT_TRUE(c.has("i"));
  EXPECT_FALSE(c.has("n"));  // null counts as absent
  EXPECT_FALSE(c.has("absent"));
  EXPECT_EQ(c.get_int("n", 9), 9);
  EXPECT_EQ(c.get_int("absent", -1), -1);
  EXPECT_EQ(c.get_float("absent", 0.5), 0.5);
  EXPECT_EQ(c.get_float("f"), 0.25);
  EXPECT_TRUE(c.get_bool("b", false));
  EXPECT_TRUE(c.get_bool("absent", true));
  expect_error<ConfigError>([&] { c.get_bool("i", false); }, {"'i' in test.json must be a boolean, got 7"});
  EXPECT_EQ(c.get_string("s"), "silu");
  EXPECT_EQ(c.get_string("absent", "gelu"), "gelu");
  expect_error<ConfigError>([&] { c.get_string("i"); }, {"'i' in test.json must be a string, got 7"});
  EXPECT_EQ(c.get_int_list("il"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(c.get_int_list("one"), (std::vector<int64_t>{5}));
  EXPECT_EQ(c.get_float_list("fl"), (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(c.get_float_list("f"), (std::vector<double>{0.25}));
  EXPECT_EQ(c.get_string_list("sl"), (std::vector<std::string>{"a", "b"}));
  expect_error<ConfigError>([&] { c.get_int_list("bad_list"); }, {"'bad_list'", "list of integers"});
  expect_error<ConfigError>([&] { c.get_int_list("absent"); }, {"missing 'absent' in test.json"});
  EXPECT_TRUE(c.is_object("obj"));
  EXPECT_FALSE(c.is_object("i"));
  EXPECT_EQ(c.sub("obj").get_int("x"), 1);
  expect_error<ConfigError>([&] { c.sub("obj").get_int("y"); }, {"missing 'y'", "'obj'", "test.json"});
  expect_error<ConfigError>([&] { c.sub("i"); }, {"'i' in test.json must be an object"});
  expect_error<ConfigError>([&] { c.sub("absent"); }, {"missing 'absent'"});
  auto keys = c.keys();
  EXPECT_EQ(keys.size(), 11u);
  EXPECT_NE(std::find(keys.begin(), keys.end(), "sl"), keys.end());
}

TEST(Config, SetJsonCopyAndDump) {
  Config c = Config::parse(R"({"a": 1})");
  Config copy = c;
  c.set_json("a", "2");
  c.set_json("q", R"({"bits": 4, "group_size": 64})");
  EXPECT_EQ(c.get_int("a"), 2);
  EXPECT_EQ(copy.get_int("a"), 1);  // copies are deep
  EXPECT_EQ(c.sub("q").get_int("group_size"), 64);
  EXPECT_EQ(Config::parse(c.dump()).sub("q").get_int("bits"), 4);
  expect_error<ConfigError>([&] { c.set_json("x", "{bad"); }, {"'x'", "invalid JSON"});
  Config assigned;
  assigned = c;
  EXPECT_EQ(assigned.get_int("a"), 2);
}

TEST(GenerationConfig, IntListAndMissing) {
  std::string dir = temp_dir();
  GenerationConfig none = load_generation_config(dir);
  EXPECT_TRUE(none.eos_token_ids.empty());
  EXPECT_FALSE(none.bos_token_id.has_value());
  EXPECT_FALSE(none.temperature.has_value());

  write_bytes(dir + "/generation_config.json", R"({"bos_token_id": 1, "eos_token_id": 2, "temperature": 0.6})");
  GenerationConfig one = load_generation_config(dir);
  EXPECT_EQ(one.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(one.bos_token_id, 1);
  EXPECT_EQ(one.temperature, 0.6);
  EXPECT_FALSE(one.top_p.has_value());

  write_bytes(dir + "/generation_config.json",
              R"({"eos_token_id": [128001, 128008, 128009], "top_p": 0.9, "top_k": 50, "bos_token_id": null})");
  GenerationConfig many = load_generation_config(dir);
  EXPECT_EQ(many.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(many.top_p, 0.9);
  EXPECT_EQ(many.top_k, 50);
  EXPECT_FALSE(many.bos_token_id.has_value());

  write_bytes(dir + "/generation_config.json", R"({"eos_token_id": "</s>"})");
  expect_error<ConfigError>([&] { load_generation_config(dir); }, {"'eos_token_id'", "generation_config.json"});
}

}  // namespace
}  // namespace loom::io
