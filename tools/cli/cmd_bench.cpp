// `loom bench`: prompt processing (pp) and token generation (tg) throughput with llama-bench's
// meanings: -p N times one prefill of N tokens, -n N times N single-token decode steps after the
// prompt (or after -d DEPTH tokens of context). --bandwidth measures memory read bandwidth, the
// bound decode runs against. `loom random-model` writes a random-weight model at real dimensions.
// The last line gives peak memory: the device allocator's high-water mark over the run (loaded
// weights, KV cache and activations; on the CPU mmap'd weights are not allocator memory) and the
// process's peak resident set size.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <sys/resource.h>

#include "loom/common/error.h"
#include "loom/core/allocator.h"
#include "loom/core/thread_pool.h"
#include "loom/generate/decode_graph.h"
#include "loom/io/safetensors.h"
#include "tools/cli/common.h"
#include "loom/models/loader.h"
#include "loom/nn/layers.h"
#include "loom/ops/ops.h"
#include "tools/cli/commands.h"

namespace loom::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Read bandwidth in GB/s: best of several passes summing a buffer much larger than the caches.
double measure_bandwidth(size_t bytes) {
  std::vector<float> buf(bytes / sizeof(float), 1.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<double> partial(num_threads() * 16, 0.0);
    std::atomic<int> slot{0};
    auto t = Clock::now();
    parallel_for(static_cast<int64_t>(buf.size()), 1 << 16, [&](int64_t b, int64_t e) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4) s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
      for (; i < e; ++i) s0 += buf[i];
      partial[slot.fetch_add(1) % partial.size()] += s0 + s1 + s2 + s3;
    });
    double dt = seconds_since(t);
    double sum = 0;
    for (double p : partial) sum += p;
    if (sum < 0) std::printf("%f", sum);  // keep the reads alive
    best = std::max(best, static_cast<double>(bytes) / dt / 1e9);
  }
  return best;
}

Array random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& t : ids) t = static_cast<int32_t>(rng() % vocab);
  return Array::from(ids, {1, n});
}

int64_t weight_bytes(models::LanguageModel& m) {
  int64_t b = 0;
  for (auto& p : m.parameters()) b += static_cast<int64_t>(p.value->nbytes());
  return b;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Opts {
    std::string model, dtype = "auto", device = "auto";
    int p = 512, n = 128, d = 0, reps = 1, threads = 0;
    bool bandwidth = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Measure prompt processing (pp) and generation (tg) tokens/s, with llama-bench's meanings: -p N times one "
      "prefill of N tokens; -n N times N single-token decode steps (note: mlx_lm.benchmark's -n differs)");
  cmd->add_option("--model", o->model, "Model folder");
  cmd->add_option("-p,--n-prompt", o->p, "Prompt tokens for pp (0 = skip)");
  cmd->add_option("-n,--n-gen", o->n, "Generated tokens for tg (0 = skip)");
  cmd->add_option("-d,--depth", o->d, "Tokens of context already in the cache before each test");
  cmd->add_option("-r,--repetitions", o->reps, "Repetitions (best is reported)");
  cmd->add_option("-t,--threads", o->threads, "Threads (0 = all cores)");
  cmd->add_option("--dtype", o->dtype, kDtypeHelp);
  cmd->add_option("--device", o->device, kDeviceHelp);
  add_qmm_option(cmd);
  cmd->add_flag("--bandwidth", o->bandwidth, "Also measure memory read bandwidth and the tg bound it implies");
  cmd->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    double bw = 0;
    if (o->bandwidth) {
      bw = measure_bandwidth(size_t{1} << 30);
      std::printf("bandwidth: %.2f GB/s read (%d threads)\n", bw, num_threads());
    }
    if (o->model.empty()) {
      if (!o->bandwidth) throw ValueError(format_error("bench", "give --model DIR and/or --bandwidth"));
      return;
    }
    models::LoadOptions opt;
    opt.device = resolve_device(o->device);
    opt.dtype = resolve_dtype(o->dtype, opt.device);
    models::LoadedModel lm = models::load_model(model_path(o->model), opt);
    auto& m = *lm.model;
    int64_t wb = weight_bytes(m);
    std::printf("model: %s, %.2f B params, %.2f GB weights (%s), device %s, compute %s, %d threads\n",
                lm.model_type.c_str(), nn::logical_parameters(m) / 1e9, wb / 1e9,
                lm.config.is_object("quantization") ? "quantized" : std::string(name(lm.weight_dtype)).c_str(),
                describe_device(opt.device).c_str(), std::string(name(opt.dtype)).c_str(), num_threads());
    std::printf("| %-8s | %-12s | %10s |\n", "test", "depth", "t/s");
    auto prefill_depth = [&](models::Cache& c) {
      if (o->d > 0) m.forward(random_tokens(o->d, m.vocab_size(), 7), c, models::LogitsMode::none);
      synchronize(opt.device);
    };
    if (o->p > 0) {
      double best = 0;
      for (int r = 0; r < o->reps; ++r) {
        models::Cache c = m.make_cache();
        prefill_depth(c);
        Array toks = random_tokens(o->p, m.vocab_size(), 1 + r);
        auto t = Clock::now();
        m.forward(toks, c, models::LogitsMode::last);
        synchronize(opt.device);
        best = std::max(best, o->p / seconds_since(t));
      }
      std::printf("| pp%-6d | %-12d | %10.2f |\n", o->p, o->d, best);
    }
    if (o->n > 0) {
      double best = 0;
      std::string graphs;
      for (int r = 0; r < o->reps; ++r) {
        models::Cache c = m.make_cache();
        prefill_depth(c);
        // As loom generate decodes: the token stays on the device, steps replay a CUDA graph where
        // one applies. Two warm-up steps (the second records the graph).
        generate::DecodeGraph graph;
        Array tok = random_tokens(1, m.vocab_size(), 3);
        for (int i = 0; i < 2; ++i)
          tok = reshape(astype(argmax(graph.forward(m, c, tok), -1), Dtype::i32), {1, 1});
        synchronize(opt.device);
        auto t = Clock::now();
        for (int i = 0; i < o->n; ++i) {
          Array logits = graph.forward(m, c, tok);
          tok = reshape(astype(argmax(logits, -1), Dtype::i32), {1, 1});
        }
        synchronize(opt.device);
        best = std::max(best, o->n / seconds_since(t));
        if (opt.device.is_cuda())
          graphs = graph.replays() > 0 ? "cuda graphs: " + std::to_string(graph.captures()) + " recorded, " +
                                             std::to_string(graph.replays()) + " replays"
                                       : "cuda graphs: off" + (graph.failure().empty() ? std::string() : " (" + graph.failure() + ")");
      }
      std::printf("| tg%-6d | %-12d | %10.2f |\n", o->n, o->d, best);
      if (!graphs.empty()) std::printf("%s\n", graphs.c_str());
      if (bw > 0)
        std::printf("tg bound from bandwidth: %.2f t/s (weights read once per token); tg is %.0f%% of it\n", bw * 1e9 / wb,
                    100.0 * best / (bw * 1e9 / wb));
    }
    synchronize(opt.device);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("peak memory: %.3f GB allocated on %s, %.3f GB max RSS\n",
                static_cast<double>(allocator::stats(opt.device).peak_bytes) / 1e9, describe_device(opt.device).c_str(),
                static_cast<double>(ru.ru_maxrss) * 1024.0 / 1e9);
  });
}

}  // namespace loom::cli
