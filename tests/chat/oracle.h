// Helpers shared by the chat tests: the oracle files written by render_reference.py (run by ctest's
// chat_oracle fixture), the fixed clock both sides use, and the shared template folder.
#pragma once

#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

#include "loom/chat/template.h"

namespace loom::chat::testing {

// ${PROJECT_SOURCE_DIR}/../shared/chat-templates; the tests fail when it is missing.
std::string shared_templates_dir();
// ${PROJECT_SOURCE_DIR}/.cache/tokenizers (scripts/fetch-test-tokenizers.sh), or $LOOM_TEST_TOKENIZERS.
std::string tokenizers_dir();
// Reads an oracle file written into the build dir by the chat_oracle* ctest fixtures.
nlohmann::ordered_json load_oracle(const std::string& name);
// 2024-07-26 10:30:00, the FIXED_NOW of render_reference.py.
std::tm fixed_now();
RenderOptions fixed_clock_options();
// First differing position and a short excerpt of both strings, for failure messages.
std::string describe_diff(const std::string& expected, const std::string& actual);

}  // namespace loom::chat::testing
