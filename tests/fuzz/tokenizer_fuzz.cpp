// libFuzzer target for the tokenizer: arbitrary bytes must give a loom::Error or a result, never a
// crash. The first byte picks the mode:
//   even: the rest is a tokenizer.json document (loading), then a few strings are encoded/decoded;
//   odd:  the rest is text for encode (and its ids for decode) with one of the committed
//         hand-built tokenizers, plus raw ids for decode.
// Build: cmake -DLOOM_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ ...; target tokenizer_fuzz.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/common/strings.h"
#include "loom/tokenizer/tokenizer.h"

namespace {
using loom::tokenizer::Tokenizer;

const std::vector<Tokenizer>& fixed_tokenizers() {
  static const std::vector<Tokenizer> toks = [] {
    std::vector<Tokenizer> v;
    const char* names[] = {"bytelevel_roberta", "bpe_prefix_bytefallback", "bpe_suffix", "unigram_metaspace",
                           "unigram_precompiled", "wordlevel_splits", "wordpiece_bert", "split_merged_next"};
    for (const char* n : names) {
      v.push_back(Tokenizer::from_folder(std::string(LOOM_SOURCE_DIR) + "/tests/tokenizer/data/" + n));
    }
    return v;
  }();
  return toks;
}

void exercise(const Tokenizer& tok, const std::string& text) {
  for (bool special : {false, true}) {
    auto ids = tok.encode(text, special);
    (void)tok.decode(ids, /*skip_special_tokens=*/false);
    loom::tokenizer::StreamingDetokenizer stream(tok, /*skip_special_tokens=*/special);
    for (int32_t id : ids) (void)stream.add_token(id);
    (void)stream.finalize();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if ((data[0] & 1) == 0) {
      Tokenizer tok = Tokenizer::from_json(rest);
      exercise(tok, "Hello world! 123 \xE4\xB8\xAD\xE6\x96\x87 <s>");
      exercise(tok, rest.substr(0, 64));
      std::vector<int32_t> ids;
      for (size_t i = 0; i + 2 <= rest.size() && ids.size() < 32; i += 2) ids.push_back(int32_t(uint8_t(rest[i])) * 7 - 3);
      (void)tok.decode(ids, /*skip_special_tokens=*/true);
    } else {
      const auto& toks = fixed_tokenizers();
      const Tokenizer& tok = toks[(data[0] >> 1) % toks.size()];
      exercise(tok, rest);
      std::vector<int32_t> ids;
      for (size_t i = 0; i + 4 <= rest.size() && ids.size() < 64; i += 4) {
        int32_t v;
        std::memcpy(&v, rest.data() + i, 4);
        ids.push_back(v % 1000);
      }
      (void)tok.decode(ids, /*skip_special_tokens=*/false);
    }
  } catch (const loom::Error&) {
    // expected for malformed input
  }
  return 0;
}
