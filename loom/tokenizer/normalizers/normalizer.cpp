// Normalizer factory: dispatches a tokenizer.json "normalizer" object on its "type".
#include <string>

#include "loom/common/error.h"
#include "loom/tokenizer/normalizers/normalizers.h"

namespace loom::tokenizer::detail {

std::unique_ptr<Normalizer> make_normalizer(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = string_field(j, "type", "normalizer");
  if (type == "NFC") return make_nfc(j);
  if (type == "NFD") return make_nfd(j);
  if (type == "NFKC") return make_nfkc(j);
  if (type == "NFKD") return make_nfkd(j);
  if (type == "Lowercase") return make_lowercase(j);
  if (type == "Strip") return make_strip(j);
  if (type == "StripAccents") return make_strip_accents(j);
  if (type == "Replace") return make_replace(j);
  if (type == "Prepend") return make_prepend(j);
  if (type == "BertNormalizer") return make_bert_normalizer(j);
  if (type == "Precompiled") return make_precompiled(j);
  if (type == "Sequence") return make_sequence_normalizer(j);
  throw NotSupportedError(format_error("tokenizer", "unknown normalizer type '" + type + "'"));
}

}  // namespace loom::tokenizer::detail
