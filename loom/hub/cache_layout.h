// Internal to loom_hub: the huggingface_hub cache layout on disk (paths, refs, pointer symlinks, locks) and
// the validation that keeps names from the network inside it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace loom::hub::detail {

// True for a 40-hex lower-case commit hash (huggingface_hub's REGEX_COMMIT_HASH).
bool is_commit_hash(std::string_view s);

// Throws HubError(kProtocol) unless `name` is a relative '/'-separated path without empty, "." or ".."
// components: repo file names come from the server and must not escape the snapshot folder.
void check_repo_path(std::string_view name, std::string_view what);
// Throws HubError(kProtocol) unless `name` can be one file name (an ETag or a commit hash).
void check_single_name(std::string_view name, std::string_view what);
// Throws HubError(kNotFound) unless repo_id is a valid Hub repository id ("name" or "org/name").
void check_repo_id(std::string_view repo_id);

// huggingface_hub's _normalize_etag: drops a weak "W/" prefix and the quotes.
std::string normalize_etag(std::string_view etag);

struct RepoPaths {
  std::string storage;  // <cache>/models--org--name
  std::string blobs() const { return storage + "/blobs"; }
  std::string snapshot(const std::string& commit) const { return storage + "/snapshots/" + commit; }
  std::string ref(const std::string& revision) const { return storage + "/refs/" + revision; }
  std::string blob(const std::string& etag) const { return blobs() + "/" + etag; }
  std::string incomplete(const std::string& etag) const { return blob(etag) + ".incomplete"; }
  // The lock huggingface_hub takes around a blob download, so loom and Python never write one blob at once.
  std::string lock(const std::string& cache_dir, const std::string& folder_name, const std::string& etag) const {
    return cache_dir + "/.locks/" + folder_name + "/" + etag + ".lock";
  }
};

// models--org--name
std::string repo_folder_name(const std::string& repo_id);

// The commit a ref file records, or nullopt when there is none.
std::optional<std::string> read_ref(const std::string& path);
// Writes a ref atomically (temporary file + rename) and only when its content changes, as huggingface_hub does.
void write_ref(const std::string& path, const std::string& commit);

// Makes `pointer` a relative symlink to `blob` (replacing whatever is there), creating parent folders.
void create_pointer(const std::string& blob, const std::string& pointer);

// Writes CACHEDIR.TAG into the cache folder once, so backup tools skip it (huggingface_hub does the same).
void ensure_cachedir_tag(const std::string& cache_dir);

// An exclusive flock(2) on a lock file, held until destruction. flock is what Python's filelock uses on
// POSIX, so the lock is shared with huggingface_hub.
class FileLock {
 public:
  // Blocks until the lock is free, saying once on stderr (log level info) what it waits for.
  FileLock(const std::string& path, const std::string& what_for);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// Environment helpers. env() returns nullopt for unset and empty variables.
std::optional<std::string> env(const char* name);
bool env_true(const char* name);  // huggingface_hub's _is_true: 1/ON/YES/TRUE in any case
std::string expand_user(const std::string& path);

}  // namespace loom::hub::detail
