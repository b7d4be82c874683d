// loom errors: every failure the library reports is a loom::Error whose message starts with
// "[where] ", so a user sees which component failed and why. Library code never exits or aborts.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace loom {

// Base class of every error loom throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// A caller passed an argument an op or function cannot take (shape, dtype, device, range).
class ValueError : public Error {
  using Error::Error;
};

// A file could not be read or written, or its content is malformed.
class IoError : public Error {
  using Error::Error;
};

// A config.json (or other configuration) lacks a key or holds an unusable value.
class ConfigError : public Error {
  using Error::Error;
};

// Something is recognised but not implemented (an op on a device, a model_type, a dtype).
class NotSupportedError : public Error {
  using Error::Error;
};

// Builds "[where] what" messages without iostream in headers.
std::string format_error(std::string_view where, std::string_view what);

}  // namespace loom

// Checks a condition at an API boundary and throws ErrorType("[where] message") when it fails.
#define LOOM_CHECK(cond, ErrorType, where, msg)                       \
  do {                                                                \
    if (!(cond)) throw ErrorType(::loom::format_error((where), (msg))); \
  } while (0)
