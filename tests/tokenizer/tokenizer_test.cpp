// loom's tokenizers against HF `tokenizers` 0.23 (expected outputs written on the GPU machine by
// tools/refgen/tokenizer_ref.py): the six real tokenizers and the hand-built ones must give the
// same ids, with and without special tokens, and the same decodes, on every corpus line.
#include "loom/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "loom/common/error.h"
#include "tests/tokenizer/test_data.h"

namespace loom::tokenizer::test {
namespace {

using nlohmann::json;

std::string ids_str(const std::vector<int32_t>& v) { return json(v).dump(); }

const Tokenizer& load(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  bool real = std::find(kRealTokenizers.begin(), kRealTokenizers.end(), name) != kRealTokenizers.end();
  std::string dir = real ? real_tokenizers_dir() + "/" + name : source_dir() + "/data/" + name;
  return cache.emplace(name, Tokenizer::from_folder(dir)).first->second;
}

std::string expected_path(const std::string& name, const std::string& suffix) {
  return source_dir() + "/expected/" + name + suffix;
}

// Tokenizers whose decode(encode(x)) is x for any x: byte-level BPE with no normalizer that
// changes text (qwen3's NFC changes text, so it is checked only on NFC-stable lines).
bool lossless(const std::string& name) { return name == "llama3" || name == "gptoss" || name == "deepseek_v3"; }

class CorpusTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CorpusTest, IdsAndDecodesMatchHf) {
  const std::string name = GetParam();
  const Tokenizer& tok = load(name);
  const auto expected = read_jsonl(expected_path(name, ".jsonl"));
  const auto& lines = corpus();
  ASSERT_EQ(expected.size(), lines.size()) << "expected file and corpus disagree on line count";
  int bad = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& e = expected[i];
    auto ids = tok.encode(lines[i], /*add_special_tokens=*/false);
    auto ids_s = tok.encode(lines[i], /*add_special_tokens=*/true);
    auto want = e["ids"].get<std::vector<int32_t>>();
    auto want_s = e["ids_special"].get<std::vector<int32_t>>();
    if (ids != want) {
      ADD_FAILURE() << name << " line " << i << " ids\n  text " << json(lines[i]).dump() << "\n  loom " << ids_str(ids)
                    << "\n  hf   " << ids_str(want);
      ++bad;
    }
    EXPECT_EQ(ids_s, want_s) << name << " line " << i << " ids with special tokens";
    EXPECT_EQ(tok.decode(want, false), e["decode"].get<std::string>()) << name << " line " << i << " decode";
    EXPECT_EQ(tok.decode(want_s, false), e["decode_special"].get<std::string>()) << name << " line " << i;
    EXPECT_EQ(tok.decode(want_s, true), e["decode_skip"].get<std::string>()) << name << " line " << i << " skip";
    if (lossless(name)) EXPECT_EQ(tok.decode(ids, false), lines[i]) << name << " line " << i << " round trip";
    if (bad > 20) FAIL() << "too many mismatches";
  }
}

TEST_P(CorpusTest, DecodesOfRandomIdsMatchHf) {
  const std::string name = GetParam();
  const Tokenizer& tok = load(name);
  for (const json& e : read_jsonl(expected_path(name, ".decode.jsonl"))) {
    auto ids = e["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids, false), e["text"].get<std::string>()) << name << " ids " << ids_str(ids);
    EXPECT_EQ(tok.decode(ids, true), e["text_skip"].get<std::string>()) << name << " skip, ids " << ids_str(ids);
  }
}

TEST_P(CorpusTest, StreamingEqualsFullDecode) {
  const std::string name = GetParam();
  const Tokenizer& tok = load(name);
  for (const json& e : read_jsonl(expected_path(name, ".jsonl"))) {
    auto ids = e["ids_special"].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      StreamingDetokenizer stream(tok, skip);
      std::string got;
      for (int32_t id : ids) got += stream.add_token(id);
      got += stream.finalize();
      EXPECT_EQ(got, tok.decode(ids, skip)) << name << " ids " << ids_str(ids);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Real, CorpusTest, ::testing::ValuesIn(kRealTokenizers));
INSTANTIATE_TEST_SUITE_P(Handmade, CorpusTest, ::testing::ValuesIn(kHandmadeTokenizers));

// bos/eos as transformers' AutoTokenizer reports them for the same folders.
TEST(TokenizerConfig, BosEosMatchTransformers) {
  for (const auto& name : kRealTokenizers) {
    const Tokenizer& tok = load(name);
    json cfg = read_json(expected_path(name, ".config.json"));
    if (cfg["bos_token_id"].is_null()) {
      EXPECT_FALSE(tok.bos_token_id().has_value()) << name;
    } else {
      ASSERT_TRUE(tok.bos_token_id().has_value()) << name;
      EXPECT_EQ(*tok.bos_token_id(), cfg["bos_token_id"].get<int32_t>()) << name;
    }
    ASSERT_FALSE(tok.eos_token_ids().empty()) << name;
    EXPECT_EQ(tok.eos_token_ids()[0], cfg["eos_token_id"].get<int32_t>()) << name;
  }
}

TEST(TokenizerApi, TokenIdRoundTripAndSpecials) {
  const Tokenizer& tok = load("qwen3");
  auto id = tok.token_to_id("<|im_start|>");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(*tok.id_to_token(*id), "<|im_start|>");
  EXPECT_TRUE(tok.is_special(*id));
  EXPECT_FALSE(tok.token_to_id("definitely not a token").has_value());
  EXPECT_FALSE(tok.id_to_token(-5).has_value());
  EXPECT_GE(tok.vocab_size(), size_t(151643));
}

// Byte-level BPE: an id sequence that splits a multi-byte character must not stream half of it.
TEST(StreamingDetokenizer, HoldsBackIncompleteUtf8) {
  const Tokenizer& tok = load("llama3");
  auto ids = tok.encode("\xF0\x9F\x99\x82", /*add_special_tokens=*/false);  // U+1F642, 🙂
  ASSERT_GE(ids.size(), 1u);
  StreamingDetokenizer stream(tok);
  std::string got;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    std::string piece = stream.add_token(ids[i]);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
    got += piece;
  }
  got += stream.add_token(ids.back());
  got += stream.finalize();
  EXPECT_EQ(got, "\xF0\x9F\x99\x82");
}

// Long runs of one character class (whitespace under \s+(?!\S), letters under \p{L}+) must not
// exhaust the regex engine; byte-level BPE is lossless, so decode(encode(x)) == x.
TEST(TokenizerLimits, LongRunsRoundTrip) {
  const Tokenizer& tok = load("llama3");
  for (const std::string& text : {std::string(300000, ' ') + "a", std::string(200000, 'x'), std::string(100000, '\n') + " b"}) {
    auto ids = tok.encode(text, /*add_special_tokens=*/false);
    EXPECT_EQ(tok.decode(ids, false), text);
  }
}

// A folder with only tokenizer.model goes through libsentencepiece.
TEST(SentencePieceFolder, LoadsAndRoundTrips) {
  auto tok = Tokenizer::from_folder(source_dir() + "/data/spm_only");
  auto ids = tok.encode("Hello world", /*add_special_tokens=*/false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tok.decode(ids), "Hello world");
  auto with = tok.encode("Hello world", /*add_special_tokens=*/true);
  ASSERT_EQ(with.size(), ids.size() + 1);
  EXPECT_EQ(with[0], *tok.token_to_id("<s>"));
  std::filesystem::path ref = expected_path("spm_only", ".jsonl");
  ASSERT_TRUE(std::filesystem::exists(ref)) << "reference from python sentencepiece is missing";
  const auto expected = read_jsonl(ref.string());
  ASSERT_EQ(expected.size(), corpus().size());
  for (size_t i = 0; i < expected.size(); ++i) {
    auto want = expected[i]["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(corpus()[i]), want) << "line " << i;
    EXPECT_EQ(tok.decode(want), expected[i]["decode"].get<std::string>()) << "line " << i;
  }
}

TEST(TokenizerErrors, MalformedJsonThrowsLoomError) {
  EXPECT_THROW(Tokenizer::from_json("{"), loom::Error);
  EXPECT_THROW(Tokenizer::from_json("{}"), loom::Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "Nope"}})"), loom::Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})"), loom::Error);
  EXPECT_THROW(Tokenizer::from_folder("/nonexistent/folder"), loom::Error);
}

}  // namespace
}  // namespace loom::tokenizer::test
