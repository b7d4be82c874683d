#include "loom/models/registry.h"

#include <algorithm>

#include "loom/common/error.h"
#include "loom/common/strings.h"

namespace loom::models {

std::vector<ModelRegistration> generated_model_table();  // registry_table.cpp (generated)

const std::vector<ModelRegistration>& registered_models() {
  static const std::vector<ModelRegistration> table = generated_model_table();
  return table;
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const auto& r : registered_models()) {
    out.push_back(r.model_type);
    out.insert(out.end(), r.aliases.begin(), r.aliases.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

const ModelRegistration& find_model(const std::string& model_type) {
  for (const auto& r : registered_models()) {
    if (r.model_type == model_type) return r;
    if (std::find(r.aliases.begin(), r.aliases.end(), model_type) != r.aliases.end()) return r;
  }
  throw NotSupportedError(format_error("models", "unsupported model_type '" + model_type +
                                                     "'; supported: " + join(supported_model_types(), ", ")));
}

}  // namespace loom::models
