// Small string helpers shared by every layer.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace loom {

// Joins the items with sep between them.
std::string join(const std::vector<std::string>& items, std::string_view sep);
// Reads a whole file as bytes; throws IoError naming the path when it cannot.
std::string read_file(const std::string& path);
bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);

}  // namespace loom
