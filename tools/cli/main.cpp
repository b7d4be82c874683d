// The `loom` command-line tool: one binary, one subcommand per job (see commands.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "loom/common/error.h"
#include "loom/common/version.h"
#include "tools/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"loom: run mlx-lm model architectures in C++ on CPU and NVIDIA GPUs"};
  app.set_version_flag("--version", std::string("loom ") + LOOM_VERSION);
  app.require_subcommand(1);
  loom::cli::add_info_command(app);
  loom::cli::add_logits_command(app);
  loom::cli::add_bench_command(app);
  loom::cli::add_tokenize_command(app);
  loom::cli::add_chat_template_command(app);
  loom::cli::add_random_model_command(app);
  loom::cli::add_generate_command(app);
  loom::cli::add_chat_command(app);
  loom::cli::add_perplexity_command(app);
  loom::cli::add_cache_prompt_command(app);
  loom::cli::add_convert_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const loom::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
