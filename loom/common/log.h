// Minimal leveled logging to stderr. LOOM_LOG_LEVEL=debug|info|warn|error sets the threshold.
#pragma once

#include <string_view>

namespace loom::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

// Current threshold (read once from LOOM_LOG_LEVEL, default warn).
Level level();
void set_level(Level lvl);
// Writes "loom: <msg>\n" to stderr when lvl is at or above the threshold.
void write(Level lvl, std::string_view msg);

inline void debug(std::string_view m) { write(Level::debug, m); }
inline void info(std::string_view m) { write(Level::info, m); }
inline void warn(std::string_view m) { write(Level::warn, m); }

}  // namespace loom::log
