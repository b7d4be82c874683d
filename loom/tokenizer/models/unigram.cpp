// Unigram model (SentencePiece): Viterbi best segmentation by summed log-probabilities. A position
// no single-character piece covers gets unk with score min_score - 10; consecutive unks fuse; with
// byte_fallback an unk span becomes its <0xXX> byte tokens.
#include <cstdio>
#include <limits>

#include "loom/common/error.h"
#include "loom/tokenizer/models/models.h"

namespace loom::tokenizer::detail {

namespace {
class Unigram final : public Model {
 public:
  explicit Unigram(const Json& j) {
    const Json& vocab = field(j, "vocab", "Unigram");
    if (!vocab.is_array()) throw ValueError(format_error("tokenizer", "Unigram: 'vocab' must be a list"));
    pieces_.reserve(vocab.size());
    scores_.reserve(vocab.size());
    min_score_ = std::numeric_limits<double>::infinity();
    for (const Json& e : vocab) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) {
        throw ValueError(format_error("tokenizer", "Unigram: vocab entries must be [piece, score]"));
      }
      std::string piece = e[0].get<std::string>();
      double score = e[1].get<double>();
      int32_t id = int32_t(pieces_.size());
      vocab_.insert_or_assign(piece, id);
      max_len_ = std::max(max_len_, piece.size());
      min_score_ = std::min(min_score_, score);
      pieces_.push_back(std::move(piece));
      scores_.push_back(score);
    }
    if (j.contains("unk_id") && !j["unk_id"].is_null()) {
      if (!j["unk_id"].is_number_integer()) throw ValueError(format_error("tokenizer", "Unigram: 'unk_id' must be an integer"));
      int64_t u = j["unk_id"].get<int64_t>();
      if (u < 0 || u >= int64_t(pieces_.size())) throw ValueError(format_error("tokenizer", "Unigram: unk_id out of range"));
      unk_id_ = int32_t(u);
    }
    byte_fallback_ = bool_field(j, "byte_fallback", false);
    present_.assign(pieces_.size(), true);
  }

  void tokenize(std::string_view s, std::vector<int32_t>& ids) const override {
    if (s.empty()) return;
    const double unk_score = min_score_ - 10.0;
    struct Node {
      int32_t id = -1;
      double score = 0;
      int64_t start = -1;
    };
    const size_t n = s.size();
    std::vector<Node> best(n + 1);
    best[0].start = 0;  // reached
    size_t len = 0;
    for (size_t i = 0; i < n; i += len) {
      len = unicode::lead_len(static_cast<unsigned char>(s[i]));
      if (i + len > n) len = n - i;
      if (best[i].start < 0) continue;
      double base = best[i].score;
      bool single = false;
      for (size_t l = 1; l <= max_len_ && i + l <= n; ++l) {
        int32_t id = vocab_.find(s.substr(i, l));
        if (id < 0) continue;
        Node& t = best[i + l];
        double cand = base + scores_[size_t(id)];
        if (t.start < 0 || cand > t.score) t = {id, cand, int64_t(i)};
        if (l == len) single = true;
      }
      if (!single) {
        Node& t = best[i + len];
        double cand = base + unk_score;
        if (t.start < 0 || cand > t.score) t = {unk_id_, cand, int64_t(i)};
      }
    }
    // Backtrack into (start, end, id) spans, fusing consecutive unks.
    std::vector<std::pair<size_t, int32_t>> spans;  // start, id (end = previous start)
    std::vector<size_t> ends;
    for (size_t e = n; e > 0;) {
      const Node& nd = best[e];
      size_t st = size_t(nd.start);
      if (nd.id == unk_id_ && !spans.empty() && spans.back().second == unk_id_ && unk_id_ >= 0) {
        spans.back().first = st;
      } else {
        spans.emplace_back(st, nd.id);
        ends.push_back(e);
      }
      e = st;
    }
    for (size_t k = spans.size(); k-- > 0;) {
      auto [st, id] = spans[k];
      std::string_view piece = s.substr(st, ends[k] - st);
      emit(piece, id, ids);
    }
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int32_t id = vocab_.find(token);
    return id < 0 ? std::nullopt : std::optional<int32_t>(id);
  }
  std::optional<std::string_view> id_to_token(int32_t id) const override { return inverse_lookup(pieces_, present_, id); }
  size_t vocab_size() const override { return pieces_.size(); }

 private:
  void emit(std::string_view piece, int32_t id, std::vector<int32_t>& ids) const {
    int32_t found = vocab_.find(piece);
    if (found >= 0) {
      ids.push_back(found);
      return;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      for (unsigned char b : piece) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        int32_t bt = vocab_.find(std::string_view(name));
        if (bt < 0) break;
        bytes.push_back(bt);
      }
      if (bytes.size() == piece.size()) {
        ids.insert(ids.end(), bytes.begin(), bytes.end());
        return;
      }
    }
    if (unk_id_ < 0) throw ValueError(format_error("tokenizer", "Unigram: text needs unk but the model has no unk_id"));
    ids.push_back(unk_id_);
  }

  VocabMap vocab_;
  std::vector<std::string> pieces_;
  std::vector<double> scores_;
  std::vector<bool> present_;
  size_t max_len_ = 0;
  double min_score_ = 0;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
};
}  // namespace

std::unique_ptr<Model> make_unigram(const Json& j) { return std::make_unique<Unigram>(j); }

}  // namespace loom::tokenizer::detail
