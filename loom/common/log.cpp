#include "loom/common/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace loom::log {
namespace {

Level initial_level() {
  const char* env = std::getenv("LOOM_LOG_LEVEL");
  if (!env) return Level::warn;
  if (!std::strcmp(env, "debug")) return Level::debug;
  if (!std::strcmp(env, "info")) return Level::info;
  if (!std::strcmp(env, "error")) return Level::error;
  return Level::warn;
}

Level& threshold() {
  static Level lvl = initial_level();
  return lvl;
}

}  // namespace

Level level() { return threshold(); }
void set_level(Level lvl) { threshold() = lvl; }

void write(Level lvl, std::string_view msg) {
  if (lvl < threshold()) return;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "loom: %.*s\n", static_cast<int>(msg.size()), msg.data());
}

}  // namespace loom::log
