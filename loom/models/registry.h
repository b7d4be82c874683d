// The architecture registry, generated from the CMake model list (LOOM_MODELS in
// loom/models/CMakeLists.txt): no static self-registration that a static link could drop.
#pragma once

#include <string>
#include <vector>

#include "loom/models/model.h"

namespace loom::models {

const std::vector<ModelRegistration>& registered_models();
// The registration for a model_type or alias; throws NotSupportedError listing the supported ones.
const ModelRegistration& find_model(const std::string& model_type);
// Every accepted model_type string (names and aliases), sorted.
std::vector<std::string> supported_model_types();

}  // namespace loom::models
