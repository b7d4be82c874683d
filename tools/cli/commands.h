// Subcommands of the `loom` binary. Each lives in its own cmd_<name>.cpp and adds itself to the app;
// the callback it installs throws loom::Error on failure, which main() turns into one line on stderr.
#pragma once

namespace CLI {
class App;
}

namespace loom::cli {

void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_chat_template_command(CLI::App& app);
void add_random_model_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
void add_cache_prompt_command(CLI::App& app);
void add_convert_command(CLI::App& app);

}  // namespace loom::cli
