// `loom tokenize`: JSONL in, JSONL out, one output line per input line.
//   loom tokenize --model DIR --input FILE.jsonl [--add-special-tokens]
//       {"text": "..."} -> {"ids": [...]}
//   loom tokenize --model DIR --input FILE.jsonl --decode [--skip-special-tokens]
//       {"ids": [...]} -> {"text": "..."}   (invalid UTF-8 becomes U+FFFD, as in HF)
// Other tools check loom's tokenizer through exactly this interface.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "loom/common/error.h"
#include "loom/tokenizer/tokenizer.h"
#include "tools/cli/commands.h"

namespace loom::cli {

namespace {
struct TokenizeOptions {
  std::string model;
  std::string input;
  bool add_special_tokens = false;
  bool decode = false;
  bool skip_special_tokens = false;
};

std::string where(size_t line) { return "line " + std::to_string(line) + ": "; }

void run_tokenize(const TokenizeOptions& o, std::ostream& out) {
  auto tok = tokenizer::Tokenizer::from_folder(o.model);
  std::ifstream in(o.input, std::ios::binary);
  if (!in) throw IoError(format_error("tokenize", "cannot open " + o.input));
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw ValueError(format_error("tokenize", where(n) + "invalid JSON: " + e.what()));
    }
    nlohmann::json result;
    if (o.decode) {
      if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array()) {
        throw ValueError(format_error("tokenize", where(n) + "expected {\"ids\": [...]}"));
      }
      std::vector<int32_t> ids;
      for (const auto& v : j["ids"]) {
        if (!v.is_number_integer()) throw ValueError(format_error("tokenize", where(n) + "ids must be integers"));
        ids.push_back(v.get<int32_t>());
      }
      result["text"] = tok.decode(ids, o.skip_special_tokens);
    } else {
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        throw ValueError(format_error("tokenize", where(n) + "expected {\"text\": \"...\"}"));
      }
      result["ids"] = tok.encode(j["text"].get<std::string>(), o.add_special_tokens);
    }
    out << result.dump() << '\n';
  }
  out.flush();
}
}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Encode {\"text\"} JSONL lines to {\"ids\"}, or decode ids to text");
  cmd->add_option("--model", opts->model, "Model folder (tokenizer.json or tokenizer.model)")->required();
  cmd->add_option("--input", opts->input, "JSONL input file")->required();
  cmd->add_flag("--add-special-tokens", opts->add_special_tokens, "Apply the post-processor's special tokens");
  cmd->add_flag("--decode", opts->decode, "Decode {\"ids\"} lines instead of encoding");
  cmd->add_flag("--skip-special-tokens", opts->skip_special_tokens, "With --decode: drop special tokens");
  cmd->callback([opts] { run_tokenize(*opts, std::cout); });
}

}  // namespace loom::cli
