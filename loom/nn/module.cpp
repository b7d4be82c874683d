#include "loom/nn/module.h"

namespace loom::nn {

Members& Members::param(const std::string& name, Array& value, const Shape& shape) {
  if (params_) params_->push_back({join(name), &value, shape});
  return *this;
}

Members& Members::child(const std::string& name, Module& m) {
  m.walk(join(name), params_, modules_);
  return *this;
}

void Module::walk(const std::string& prefix, std::vector<ParamSlot>* params,
                  std::vector<std::pair<std::string, Module*>>* mods) {
  if (mods) mods->push_back({prefix, this});
  Members m(prefix, params, mods);
  members(m);
}

std::vector<ParamSlot> Module::parameters(const std::string& prefix) {
  std::vector<ParamSlot> out;
  walk(prefix, &out, nullptr);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out;
  walk(prefix, nullptr, &out);
  return out;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (auto& p : parameters()) n += shape_size(p.shape);
  return n;
}

}  // namespace loom::nn
