// Module tree. A module declares its members by weight-key name in members(); the walker turns that
// into dotted paths ("model.layers.3.self_attn.q_proj.weight") with the shape each parameter must
// have. The loader (models/loader) matches these slots strictly against a checkpoint.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/array.h"

namespace loom::nn {

class Module;

// One parameter slot: where it lives in the tree and what shape the checkpoint must supply.
struct ParamSlot {
  std::string path;
  Array* value;
  Shape shape;
};

// Collects a module's members; passed to Module::members.
class Members {
 public:
  Members(std::string prefix, std::vector<ParamSlot>* params, std::vector<std::pair<std::string, Module*>>* modules)
      : prefix_(std::move(prefix)), params_(params), modules_(modules) {}
  // A parameter `name` of the given shape.
  Members& param(const std::string& name, Array& value, const Shape& shape);
  // A child module.
  Members& child(const std::string& name, Module& m);
  // A list of child modules, named "<name>.<index>".
  template <typename M>
  Members& children(const std::string& name, std::vector<M>& list) {
    for (size_t i = 0; i < list.size(); ++i) child(name + "." + std::to_string(i), deref(list[i]));
    return *this;
  }

 private:
  template <typename M>
  static Module& deref(std::unique_ptr<M>& p) { return *p; }
  template <typename M>
  static Module& deref(M& m) { return m; }
  std::string join(const std::string& name) const { return prefix_.empty() ? name : prefix_ + "." + name; }
  std::string prefix_;
  std::vector<ParamSlot>* params_;
  std::vector<std::pair<std::string, Module*>>* modules_;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;

  // Every parameter slot of the subtree, in declaration order, with dotted paths under `prefix`.
  std::vector<ParamSlot> parameters(const std::string& prefix = "");
  // Every module of the subtree with its path (the root has path `prefix`).
  std::vector<std::pair<std::string, Module*>> modules(const std::string& prefix = "");
  // Total number of parameter elements.
  int64_t num_parameters();

 protected:
  // Declares this module's own parameters and children.
  virtual void members(Members& m) = 0;

 private:
  void walk(const std::string& prefix, std::vector<ParamSlot>* params, std::vector<std::pair<std::string, Module*>>* mods);
  friend class Members;
};

}  // namespace loom::nn
