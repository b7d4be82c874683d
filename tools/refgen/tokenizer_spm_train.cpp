// Trains the tiny SentencePiece model committed as tests/tokenizer/data/spm_only/tokenizer.model.
// Build and run once (here, not on the GPU machine):
//   g++ -O1 tools/refgen/tokenizer_spm_train.cpp -lsentencepiece_train -lsentencepiece -o /tmp/spm_train
//   /tmp/spm_train tests/tokenizer/data/spm_only
// nmt_nfkc normalization gives the model a real precompiled_charsmap, which
// tools/refgen/tokenizer_handmade.py copies into a Precompiled normalizer.
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <fstream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  const std::string input = dir + "/train.txt";
  {
    std::ofstream f(input);
    const char* lines[] = {
        "The quick brown fox jumps over the lazy dog.",
        "Tokenizers turn text into numbers, and numbers back into text.",
        "ＦＵＬＬＷＩＤＴＨ letters and ① circled digits normalize under NFKC.",
        "Café naïve résumé façade coöperate.",
        "日本語のテキスト、中文文本、한국어 텍스트.",
        "Hello world! Hello again, world. Goodbye world?",
        "numbers 123 4567 89 and symbols # $ % & *",
    };
    for (int i = 0; i < 40; ++i)
      for (const char* l : lines) f << l << "\n";
  }
  auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + input + " --model_prefix=" + dir +
      "/tokenizer --vocab_size=360 --model_type=unigram --normalization_rule_name=nmt_nfkc"
      " --character_coverage=1.0 --byte_fallback=true --num_threads=1 --minloglevel=2");
  std::remove(input.c_str());
  std::remove((dir + "/tokenizer.vocab").c_str());
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
