#include "loom/hub/cache_layout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "loom/common/log.h"
#include "loom/hub/hub.h"

namespace fs = std::filesystem;

namespace loom::hub::detail {
namespace {

[[noreturn]] void throw_fs(const std::string& what, const std::error_code& ec) {
  throw HubError(HubErrorKind::kFilesystem, what + ": " + ec.message());
}

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// One part of a repo id: huggingface_hub's \b[\w\-.]+\b (ASCII), at most 96 characters.
bool valid_repo_part(std::string_view p) {
  if (p.empty() || p.size() > 96) return false;
  for (char c : p) {
    if (!is_word_char(c) && c != '-' && c != '.') return false;
  }
  return is_word_char(p.front()) && is_word_char(p.back());
}

}  // namespace

bool is_commit_hash(std::string_view s) {
  if (s.size() != 40) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void check_repo_path(std::string_view name, std::string_view what) {
  bool ok = !name.empty() && name.front() != '/' && name.find('\\') == std::string_view::npos &&
            name.find('\0') == std::string_view::npos;
  for (size_t start = 0; ok && start <= name.size();) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view part = name.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") ok = false;
    start = end + 1;
  }
  if (!ok)
    throw HubError(HubErrorKind::kProtocol, "refusing unsafe " + std::string(what) + " '" + std::string(name) + "'");
}

void check_single_name(std::string_view name, std::string_view what) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\\') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    throw HubError(HubErrorKind::kProtocol, "refusing unsafe " + std::string(what) + " '" + std::string(name) + "'");
  }
}

void check_repo_id(std::string_view repo_id) {
  size_t slash = repo_id.find('/');
  bool ok = slash == std::string_view::npos
                ? valid_repo_part(repo_id)
                : repo_id.find('/', slash + 1) == std::string_view::npos && valid_repo_part(repo_id.substr(0, slash)) &&
                      valid_repo_part(repo_id.substr(slash + 1));
  ok = ok && repo_id.find("--") == std::string_view::npos && repo_id.find("..") == std::string_view::npos &&
       !(repo_id.size() >= 4 && repo_id.substr(repo_id.size() - 4) == ".git");
  if (!ok) {
    throw HubError(HubErrorKind::kNotFound, "'" + std::string(repo_id) +
                                                "' is not a Hub repository id (org/name: letters, digits, '-', '_' "
                                                "and '.', no '--' or '..')");
  }
}

std::string normalize_etag(std::string_view etag) {
  // Python's etag.lstrip("W/").strip('"'): lstrip drops any leading run of 'W' and '/' characters.
  while (!etag.empty() && (etag.front() == 'W' || etag.front() == '/')) etag.remove_prefix(1);
  while (!etag.empty() && etag.front() == '"') etag.remove_prefix(1);
  while (!etag.empty() && etag.back() == '"') etag.remove_suffix(1);
  return std::string(etag);
}

std::string repo_folder_name(const std::string& repo_id) {
  std::string out = "models";
  size_t start = 0;
  while (true) {
    size_t slash = repo_id.find('/', start);
    out += "--";
    out += repo_id.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return out;
}

std::optional<std::string> read_ref(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  // huggingface_hub writes the bare hash; tolerate a trailing newline from hand-made caches.
  std::string commit = ss.str();
  while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
  if (commit.empty()) return std::nullopt;
  return commit;
}

void write_ref(const std::string& path, const std::string& commit) {
  if (read_ref(path) == commit) return;  // unchanged: do not touch a cache that may be read-only
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) throw_fs("cannot create the folder of " + path, ec);
  // Unique per process and call, so concurrent writers never share a temporary file.
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".loom-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << commit;
    if (!out) throw HubError(HubErrorKind::kFilesystem, "cannot write " + tmp);
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    throw_fs("cannot write " + path, ec);
  }
}

void create_pointer(const std::string& blob, const std::string& pointer) {
  std::error_code ec;
  fs::path abs_blob = fs::absolute(blob, ec).lexically_normal();
  fs::path abs_pointer = fs::absolute(pointer, ec).lexically_normal();
  fs::create_directories(abs_pointer.parent_path(), ec);
  if (ec) throw_fs("cannot create " + abs_pointer.parent_path().string(), ec);
  // Relative like huggingface_hub's os.path.relpath, so a moved or mounted-elsewhere cache keeps working.
  // lexically_relative does not resolve symlinks, exactly as relpath does not.
  fs::path target = abs_blob.lexically_relative(abs_pointer.parent_path());
  if (fs::is_symlink(fs::symlink_status(abs_pointer, ec)) || fs::exists(fs::symlink_status(abs_pointer, ec))) {
    fs::remove(abs_pointer, ec);
    if (ec) throw_fs("cannot replace " + abs_pointer.string(), ec);
  }
  fs::create_symlink(target, abs_pointer, ec);
  if (ec) {
    // Another process linked the same file between our remove and create: fine if it points to our blob.
    std::error_code ec2;
    if (ec == std::errc::file_exists && fs::equivalent(abs_pointer, abs_blob, ec2)) return;
    throw_fs("cannot create the symlink " + abs_pointer.string() + " -> " + target.string(), ec);
  }
}

void ensure_cachedir_tag(const std::string& cache_dir) {
  fs::path tag = fs::path(cache_dir) / "CACHEDIR.TAG";
  std::error_code ec;
  if (fs::exists(tag, ec)) return;
  // Best effort, as in huggingface_hub: a missing tag only means backups include the cache.
  std::ofstream out(tag, std::ios::binary);
  out << "Signature: 8a477f597d28d172789f06886806bc55\n"
         "# This file is a cache directory tag created by huggingface_hub.\n"
         "# For information about cache directory tags, see:\n"
         "#\thttps://bford.info/cachedir/\n";
}

FileLock::FileLock(const std::string& path, const std::string& what_for) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) throw_fs("cannot create " + fs::path(path).parent_path().string(), ec);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw HubError(HubErrorKind::kFilesystem, "cannot open the lock " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  if (errno == EWOULDBLOCK) {
    log::info("[hub] waiting for another process downloading " + what_for + " (lock " + path + ")");
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) break;
    }
    return;
  }
  // flock unsupported (some network file systems): go on unlocked, as filelock's "weak" lock would.
  log::warn("[hub] cannot lock " + path + ": " + std::strerror(errno));
}

FileLock::~FileLock() {
  // The lock file stays: deleting it would let a third process lock a new inode while one waits on the old.
  if (fd_ >= 0) ::close(fd_);
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

bool env_true(const char* name) {
  auto v = env(name);
  if (!v) return false;
  std::string up;
  for (char c : *v) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return up == "1" || up == "ON" || up == "YES" || up == "TRUE";
}

std::string expand_user(const std::string& path) {
  if (path.empty() || path[0] != '~' || (path.size() > 1 && path[1] != '/')) return path;
  auto home = env("HOME");
  return home ? *home + path.substr(1) : path;
}

}  // namespace loom::hub::detail
