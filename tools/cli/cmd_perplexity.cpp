// `loom perplexity --model DIR --file TEXT`: perplexity of a model on real text, for quality checks.
// The text is tokenized once and cut into windows of --sequence-length tokens; each window is one
// forward pass from an empty cache, and every position after the first predicts the next token.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "loom/common/error.h"
#include "loom/core/thread_pool.h"
#include "loom/generate/session.h"
#include "loom/ops/ops.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace loom::cli {

void add_perplexity_command(CLI::App& app) {
  struct Opts {
    std::string model, file, dtype = "auto", device = "auto";
    int sequence_length = 512, threads = 0;
    int64_t max_tokens = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a model on a text file");
  cmd->add_option("--model", o->model, "Local model folder")->required();
  cmd->add_option("--file", o->file, "UTF-8 text file")->required();
  cmd->add_option("--sequence-length", o->sequence_length, "Tokens per window (default 512)");
  cmd->add_option("--max-tokens", o->max_tokens, "Evaluate at most this many tokens (0 = all)");
  cmd->add_option("--dtype", o->dtype, kDtypeHelp);
  cmd->add_option("--device", o->device, kDeviceHelp);
  add_qmm_option(cmd);
  cmd->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  cmd->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    if (o->sequence_length < 2) throw ValueError(format_error("perplexity", "--sequence-length must be >= 2"));
    std::ifstream in(o->file, std::ios::binary);
    if (!in) throw IoError(format_error("perplexity", "cannot read '" + o->file + "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    generate::SessionOptions so;
    so.device = resolve_device(o->device);
    so.dtype = resolve_dtype(o->dtype, so.device);
    generate::ModelSession s = generate::load_session(o->model, so);
    std::vector<int32_t> ids = s.tokenizer.encode(ss.str(), /*add_special_tokens=*/true);
    if (o->max_tokens > 0 && static_cast<int64_t>(ids.size()) > o->max_tokens) ids.resize(o->max_tokens);
    if (ids.size() < 2) throw ValueError(format_error("perplexity", "the text has fewer than 2 tokens"));
    double nll = 0;
    int64_t count = 0;
    for (size_t b = 0; b + 1 < ids.size(); b += o->sequence_length) {
      size_t e = std::min(ids.size(), b + o->sequence_length);
      int64_t L = static_cast<int64_t>(e - b);
      if (L < 2) break;
      std::vector<int32_t> window(ids.begin() + b, ids.begin() + e);
      models::Cache cache = s.loaded.model->make_cache();
      Array logits = s.loaded.model->forward(Array::from(window, {1, L}), cache, models::LogitsMode::all);
      logits = astype(reshape(logits, {L, logits.shape(-1)}), Dtype::f32);
      Array lse = logsumexp(logits, -1);  // [L]
      std::vector<float> l = logits.to_float_vector(), z = lse.to_float_vector();
      int64_t V = logits.shape(-1);
      for (int64_t t = 0; t + 1 < L; ++t) nll += z[t] - l[t * V + window[t + 1]], ++count;
    }
    double ppl = std::exp(nll / static_cast<double>(count));
    std::printf("Perplexity: %.3f (%lld tokens, mean NLL %.4f)\n", ppl, static_cast<long long>(count),
                nll / static_cast<double>(count));
  });
}

}  // namespace loom::cli
