// `loom logits`: f32 logits [T, vocab] of one token sequence, written as .npy — the interface others
// use to check loom against their own references. --chunk N feeds the tokens through the KV cache N at
// a time (1 = token by token), which must agree with one full pass.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "loom/common/error.h"
#include "loom/core/device.h"
#include "loom/io/npy.h"
#include "loom/models/loader.h"
#include "loom/ops/ops.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace loom::cli {

void add_logits_command(CLI::App& app) {
  struct Opts {
    std::string model, tokens, out, dtype = "float32", device = "auto";
    int chunk = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("logits", "Write f32 logits [T, vocab] of one token sequence to a .npy file");
  cmd->add_option("--model", o->model, "Model folder (config.json, *.safetensors)")->required();
  cmd->add_option("--tokens", o->tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_option("--out", o->out, "Output .npy file")->required();
  cmd->add_option("--chunk", o->chunk, "Feed tokens through the cache N at a time (0 = one full pass)");
  cmd->add_option("--dtype", o->dtype, "Compute dtype: float32 (default), bfloat16, float16");
  cmd->add_option("--device", o->device, kDeviceHelp);
  add_qmm_option(cmd);
  cmd->callback([o] {
    std::vector<int32_t> ids = parse_token_list(o->tokens);
    Device dev = resolve_device(o->device);
    if (o->chunk < 0) throw ValueError(format_error("logits", "--chunk must be >= 0"));
    models::LoadOptions opt;
    opt.dtype = parse_compute_dtype(o->dtype);
    opt.device = dev;
    models::LoadedModel lm = models::load_model(model_path(o->model), opt);
    for (int32_t id : ids)
      if (id >= lm.model->vocab_size())
        throw ValueError(format_error("logits", "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                                    std::to_string(lm.model->vocab_size())));
    std::fprintf(stderr, "loom: device %s, compute %s\n", describe_device(dev).c_str(), std::string(name(opt.dtype)).c_str());
    models::Cache cache = lm.model->make_cache();
    int64_t T = static_cast<int64_t>(ids.size());
    int64_t step = o->chunk > 0 ? o->chunk : T;
    std::vector<Array> parts;
    for (int64_t s = 0; s < T; s += step) {
      int64_t n = std::min(step, T - s);
      std::vector<int32_t> chunk(ids.begin() + s, ids.begin() + s + n);
      Array tokens = Array::from(chunk, {1, n});
      parts.push_back(lm.model->forward(tokens, cache, models::LogitsMode::all));
    }
    Array logits = parts.size() == 1 ? parts[0] : concatenate(parts, 1);
    io::save_npy(o->out, astype(reshape(logits, {T, logits.shape(-1)}), Dtype::f32));
  });
}

}  // namespace loom::cli
