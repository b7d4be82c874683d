// The tokenizer.json pipeline, in HF's order: added tokens (raw) -> normalizer -> added tokens
// (normalized) -> pre-tokenizer -> model -> post-processor; and ids -> tokens -> decoder.
#include <nlohmann/json.hpp>

#include "loom/common/error.h"
#include "loom/tokenizer/added_vocabulary.h"
#include "loom/tokenizer/backend.h"
#include "loom/tokenizer/components.h"
#include "loom/tokenizer/json_scan.h"
#include "loom/tokenizer/models/models.h"
#include "loom/tokenizer/unicode.h"

namespace loom::tokenizer::detail {

namespace {
class Pipeline final : public Backend {
 public:
  // model may be prebuilt (fast BPE loading); otherwise it is built from j["model"].
  Pipeline(const Json& j, std::unique_ptr<Model> model) {
    if (!j.is_object()) throw ValueError(format_error("tokenizer", "tokenizer.json must hold an object"));
    normalizer_ = make_normalizer(j.value("normalizer", Json()));
    pre_tokenizer_ = make_pre_tokenizer(j.value("pre_tokenizer", Json()));
    model_ = model ? std::move(model) : make_model(field(j, "model", "tokenizer.json"));
    post_processor_ = make_post_processor(j.value("post_processor", Json()));
    decoder_ = make_decoder(j.value("decoder", Json()));
    added_ = AddedVocabulary(j.value("added_tokens", Json()), normalizer_.get());
    size_t extra = 0;
    for (const auto& t : added_.tokens()) {
      if (!model_->id_to_token(t.id)) ++extra;
    }
    vocab_size_ = model_->vocab_size() + extra;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    std::string valid;
    if (!unicode::is_valid_utf8(text)) {
      valid = unicode::from_utf8_lossy(text);
      text = valid;
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    std::vector<Segment> raw, norm;
    added_.split(text, /*at_start=*/true, /*normalized=*/false, raw);
    std::vector<Piece> pieces;
    for (Segment& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      if (normalizer_) normalizer_->normalize(seg.text);
      norm.clear();
      added_.split(seg.text, seg.at_start, /*normalized=*/true, norm);
      for (Segment& s : norm) {
        if (s.id >= 0) {
          ids.push_back(s.id);
          continue;
        }
        pieces.clear();
        pieces.push_back(Piece{std::move(s.text), s.at_start});
        if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
        for (const Piece& p : pieces) model_->tokenize(p.text, ids);
      }
    }
    if (post_processor_) post_processor_->process(ids, add_special_tokens);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      std::optional<std::string_view> tok;
      if (const auto* added = added_.find_id(id)) {
        tok = added->pattern;
      } else {
        tok = model_->id_to_token(id);
      }
      if (!tok) continue;
      if (skip_special_tokens && added_.is_special_content(*tok)) continue;
      tokens.emplace_back(*tok);
    }
    std::string out;
    if (decoder_) {
      decoder_->decode_chain(tokens);
      for (const std::string& t : tokens) out += t;
    } else {
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (i) out.push_back(' ');
        out += tokens[i];
      }
    }
    return out;
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    if (auto id = added_.find_content(token)) return id;
    return model_->token_to_id(token);
  }
  std::optional<std::string> id_to_token(int32_t id) const override {
    if (const auto* added = added_.find_id(id)) return added->content;
    if (auto t = model_->id_to_token(id)) return std::string(*t);
    return std::nullopt;
  }
  size_t vocab_size() const override { return vocab_size_; }
  bool is_special(int32_t id) const override {
    const auto* t = added_.find_id(id);
    return t && t->special;
  }

 private:
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  AddedVocabulary added_;
  size_t vocab_size_ = 0;
};
}  // namespace

namespace {
Json parse_json(std::string_view text) { return Json::parse(text.begin(), text.end()); }

// Parses {"token": id, ...} straight into a VocabMap.
bool scan_vocab(std::string_view span, VocabMap& vocab) {
  JsonScanner s(span);
  if (!s.expect('{')) return false;
  if (s.peek('}')) return true;
  std::string key;
  while (true) {
    long long id = 0;
    if (!s.parse_string(key) || !s.expect(':') || !s.parse_int(id) || id < 0 || id >= INT32_MAX) return false;
    vocab.insert_or_assign(key, int32_t(id));
    if (s.peek(',')) {
      s.expect(',');
      continue;
    }
    return s.expect('}');
  }
}

// Parses ["a b", ...] or [["a", "b"], ...] into merge ids.
bool scan_merges(std::string_view span, BpeTables& t, size_t strip) {
  JsonScanner s(span);
  if (!s.expect('[')) return false;
  if (s.peek(']')) return true;
  std::string a, b, scratch;
  while (true) {
    if (s.peek('"')) {
      if (!s.parse_string(a)) return false;
      size_t sp = a.find(' ');
      if (sp == std::string::npos) return false;
      t.merges.push_back(resolve_merge(t.vocab, std::string_view(a).substr(0, sp), std::string_view(a).substr(sp + 1), strip, scratch));
    } else {
      if (!s.expect('[') || !s.parse_string(a) || !s.expect(',') || !s.parse_string(b) || !s.expect(']')) return false;
      t.merges.push_back(resolve_merge(t.vocab, a, b, strip, scratch));
    }
    if (s.peek(',')) {
      s.expect(',');
      continue;
    }
    return s.expect(']');
  }
}

// The fast path for BPE files: returns false (nothing built) whenever the file is not the plain
// shape it expects, so the caller falls back to nlohmann for everything.
bool load_fast(std::string_view text, Json& top, std::unique_ptr<Model>& model) {
  std::vector<std::pair<std::string, std::string_view>> members, model_members;
  if (!split_object(text, members)) return false;
  std::string_view model_span;
  top = Json::object();
  for (const auto& [key, span] : members) {
    if (key == "model") {
      model_span = span;
    } else {
      top[key] = parse_json(span);
    }
  }
  if (model_span.empty() || !split_object(model_span, model_members)) return false;
  Json options = Json::object();
  std::string_view vocab_span, merges_span;
  for (const auto& [key, span] : model_members) {
    if (key == "vocab") {
      vocab_span = span;
    } else if (key == "merges") {
      merges_span = span;
    } else {
      options[key] = parse_json(span);
    }
  }
  if (!options.contains("type") || options["type"] != "BPE" || vocab_span.empty() || merges_span.empty()) return false;
  BpeTables t;
  t.vocab.reserve(vocab_span.size() / 16);
  if (!scan_vocab(vocab_span, t.vocab)) return false;
  t.merges.reserve(merges_span.size() / 16);
  const size_t strip = options.contains("continuing_subword_prefix") && options["continuing_subword_prefix"].is_string()
                           ? options["continuing_subword_prefix"].get_ref<const std::string&>().size()
                           : 0;
  if (!scan_merges(merges_span, t, strip)) return false;
  model = make_bpe_from_tables(options, std::move(t));
  return true;
}
}  // namespace

std::shared_ptr<const Backend> make_pipeline_backend(std::string_view tokenizer_json) {
  try {
    Json top;
    std::unique_ptr<Model> model;
    bool fast = false;
    try {
      fast = load_fast(tokenizer_json, top, model);
    } catch (const nlohmann::json::exception&) {
      fast = false;  // the full parse below reports the error properly
    }
    if (fast) return std::make_shared<Pipeline>(top, std::move(model));
    Json j;
    try {
      j = parse_json(tokenizer_json);
    } catch (const nlohmann::json::exception& e) {
      throw ValueError(format_error("tokenizer", std::string("tokenizer.json is not valid JSON: ") + e.what()));
    }
    return std::make_shared<Pipeline>(j, nullptr);
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(format_error("tokenizer", std::string("bad tokenizer.json: ") + e.what()));
  }
}

}  // namespace loom::tokenizer::detail
