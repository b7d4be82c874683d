// Bench-only stand-in for the SentencePiece backend, so tokenizer_bench can be linked fully
// statically (Debian ships no static libsentencepiece). Used only by tokenizer_bench_static.sh.
#include "loom/common/error.h"
#include "loom/tokenizer/backend.h"

namespace loom::tokenizer::detail {

std::shared_ptr<const Backend> make_sentencepiece_backend(const std::string&) {
  throw NotSupportedError(format_error("tokenizer", "SentencePiece is not linked into this benchmark binary"));
}

}  // namespace loom::tokenizer::detail
