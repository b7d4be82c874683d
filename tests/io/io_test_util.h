// Helpers shared by the io tests: a fresh temporary folder per test under the build dir, raw file
// writing, running /usr/bin/python3 and capturing its output, and error-message assertions.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace loom::io::test {

// An empty folder named after the running test, under <build>/tests/io/tmp.
inline std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path p = std::filesystem::path(LOOM_BINARY_DIR) / "tests" / "io" / "tmp" /
                            (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  // Unlink first: rewriting a truncated file makes ext4 flush it on close (auto_da_alloc), slowly.
  std::filesystem::remove(path);
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string fixture(const std::string& name) { return std::string(LOOM_SOURCE_DIR) + "/tests/io/data/" + name; }

// Runs a shell command and returns its stdout; fails the test on a non-zero exit.
inline std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    ADD_FAILURE() << "popen failed: " << cmd;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  return out;
}

// Asserts fn throws ErrorType whose message contains every one of `parts`.
template <typename ErrorType>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << (parts.empty() ? "" : parts[0]) << "'";
  } catch (const ErrorType& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace loom::io::test
