// TemplateProcessing: the "single" template (e.g. [<s>, $A, </s>]) with each special token
// expanded to its ids from "special_tokens".
#include <map>

#include "loom/common/error.h"
#include "loom/tokenizer/processors/processors.h"

namespace loom::tokenizer::detail {

namespace {
class TemplateProcessing final : public PostProcessor {
 public:
  explicit TemplateProcessing(const Json& j) {
    std::map<std::string, std::vector<int32_t>> specials;
    if (j.contains("special_tokens") && j["special_tokens"].is_object()) {
      for (auto it = j["special_tokens"].begin(); it != j["special_tokens"].end(); ++it) {
        const Json& ids = field(it.value(), "ids", "TemplateProcessing special token");
        if (!ids.is_array()) throw ValueError(format_error("tokenizer", "TemplateProcessing: 'ids' must be a list"));
        std::vector<int32_t> v;
        for (const Json& id : ids) {
          if (!id.is_number_integer()) throw ValueError(format_error("tokenizer", "TemplateProcessing: ids must be integers"));
          v.push_back(id.get<int32_t>());
        }
        specials[it.key()] = std::move(v);
      }
    }
    const Json& single = field(j, "single", "TemplateProcessing");
    if (!single.is_array()) throw ValueError(format_error("tokenizer", "TemplateProcessing: 'single' must be a list"));
    for (const Json& item : single) {
      if (item.is_object() && item.contains("Sequence")) {
        steps_.push_back({true, {}});
      } else if (item.is_object() && item.contains("SpecialToken")) {
        std::string id = string_field(item["SpecialToken"], "id", "TemplateProcessing");
        auto it = specials.find(id);
        if (it == specials.end()) throw ValueError(format_error("tokenizer", "TemplateProcessing: missing special token '" + id + "'"));
        steps_.push_back({false, it->second});
      } else {
        throw ValueError(format_error("tokenizer", "TemplateProcessing: unknown template piece"));
      }
    }
  }

  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Step& s : steps_) {
      if (s.sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), s.ids.begin(), s.ids.end());
      }
    }
    ids = std::move(out);
  }

 private:
  struct Step {
    bool sequence;
    std::vector<int32_t> ids;
  };
  std::vector<Step> steps_;
};
}  // namespace

std::unique_ptr<PostProcessor> make_template_processing(const Json& j) { return std::make_unique<TemplateProcessing>(j); }

}  // namespace loom::tokenizer::detail
