// Every assigned code point (Python's unicodedata on the GPU machine: not Cn, Cs or Co), each in
// a short context string, encoded and decoded by loom and by HF; hashes are compared per
// 256-code-point page, so a difference in Unicode tables (PCRE2 / utf8proc vs Oniguruma / Rust)
// shows up as the pages it touches. Hash definition: tools/refgen/tokenizer_ref.py.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "loom/tokenizer/tokenizer.h"
#include "loom/tokenizer/unicode.h"
#include "tests/tokenizer/test_data.h"

namespace loom::tokenizer::test {
namespace {

using nlohmann::json;

// h = sum_i (v_i + 1) * P^(i+1) mod 2^64, streamed.
struct PolyHash {
  uint64_t h = 0, p = 1;
  void add(uint64_t v) {
    p *= 1099511628211ull;
    h += (v + 1) * p;
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

std::string cp_text(char32_t c) {
  std::string ch;
  unicode::append(ch, c);
  return ch + " a" + ch + ch + "b\n1" + ch + ".";
}

class CodepointTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CodepointTest, PageHashesMatchHf) {
  const std::string name = GetParam();
  bool real = std::find(kRealTokenizers.begin(), kRealTokenizers.end(), name) != kRealTokenizers.end();
  std::string dir = real ? real_tokenizers_dir() + "/" + name : source_dir() + "/data/" + name;
  Tokenizer tok = Tokenizer::from_folder(dir);
  json ranges = read_json(source_dir() + "/expected/codepoints.json")["ranges"];
  json pages = read_json(source_dir() + "/expected/" + name + ".codepoints.json")["pages"];
  std::map<uint32_t, std::pair<PolyHash, PolyHash>> got;
  for (const json& r : ranges) {
    for (uint32_t c = r[0].get<uint32_t>(); c <= r[1].get<uint32_t>(); ++c) {
      auto& [ih, dh] = got[c >> 8];
      auto ids = tok.encode(cp_text(c), /*add_special_tokens=*/false);
      for (int32_t id : ids) ih.add(uint32_t(id));
      ih.add(0xFFFFFFFFu);
      for (unsigned char b : tok.decode(ids, false)) dh.add(b);
      dh.add(256);
    }
  }
  std::vector<std::string> bad_ids, bad_decode;
  for (const auto& [page, hashes] : got) {
    char key[8];
    std::snprintf(key, sizeof(key), "%04x", page);
    ASSERT_TRUE(pages.contains(key)) << "no reference for page " << key;
    if (hashes.first.hex() != pages[key][0].get<std::string>()) bad_ids.push_back(key);
    if (hashes.second.hex() != pages[key][1].get<std::string>()) bad_decode.push_back(key);
  }
  EXPECT_EQ(got.size(), pages.size());
  // Known, documented differences (old Unicode tables inside HF's dependencies; see the note in
  // the file). Exact equality: a page that starts or stops differing fails the test.
  json known = read_json(source_dir() + "/expected/codepoint_known_diffs.json")["known"];
  json known_ids = known.contains(name) ? known[name]["ids"] : json::array();
  json known_decode = known.contains(name) ? known[name]["decodes"] : json::array();
  EXPECT_EQ(json(bad_ids), known_ids) << name << ": ids differ on pages (U+xxxx00..xxxxFF): " << json(bad_ids).dump();
  EXPECT_EQ(json(bad_decode), known_decode) << name << ": decodes differ on pages: " << json(bad_decode).dump();
}

INSTANTIATE_TEST_SUITE_P(Real, CodepointTest, ::testing::ValuesIn(kRealTokenizers));
INSTANTIATE_TEST_SUITE_P(Handmade, CodepointTest, ::testing::ValuesIn(kHandmadeTokenizers));

}  // namespace
}  // namespace loom::tokenizer::test
