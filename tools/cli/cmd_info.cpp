// `loom info`: what a model folder holds — architecture, parameter count, dtypes, quantization,
// context length — as text or JSON.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "loom/io/safetensors.h"
#include "loom/models/loader.h"
#include "loom/nn/layers.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace loom::cli {

void add_info_command(CLI::App& app) {
  struct Opts {
    std::string model;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model folder");
  cmd->add_option("--model", o->model, "Model folder")->required();
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] {
    const std::string dir = model_path(o->model);
    models::LoadedModel lm = models::load_model(dir);
    io::WeightStore store = io::WeightStore::open_folder(dir);
    std::map<std::string, int64_t> dtypes;
    for (const auto& n : store.names()) dtypes[std::string(name(store.info(n).dtype))] += shape_size(store.info(n).shape);
    nlohmann::ordered_json j;
    j["model_type"] = lm.model_type;
    j["parameters"] = nn::logical_parameters(*lm.model);
    j["dtypes"] = dtypes;
    j["quantization"] = lm.config.is_object("quantization") ? nlohmann::json::parse(lm.config.sub("quantization").dump())
                                                             : nlohmann::json(nullptr);
    j["context_length"] = lm.model->context_length();
    j["layers"] = lm.model->num_layers();
    j["vocab_size"] = lm.model->vocab_size();
    j["files"] = store.files().size();
    if (o->json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    for (auto& [k, v] : j.items()) std::printf("%-15s %s\n", k.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
  });
}

}  // namespace loom::cli
