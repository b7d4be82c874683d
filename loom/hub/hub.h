// loom_hub: downloads Hugging Face Hub repositories into the huggingface_hub cache layout, so a model that
// Python (transformers, mlx-lm, huggingface_hub) already cached is reused as-is and the other way round:
//
//   $HF_HUB_CACHE/models--org--name/
//     blobs/<etag>                      file contents, named by ETag (sha256 for LFS files, git sha1 otherwise)
//     snapshots/<commit>/<path>         relative symlinks ../../blobs/<etag> (one more ../ per folder level)
//     refs/<revision>                   the commit hash a branch or tag resolved to (no newline)
//
// Protocol (huggingface_hub's): GET {endpoint}/api/models/{repo}/revision/{revision} lists the files and the
// commit; HEAD {endpoint}/{repo}/resolve/{commit}/{path} gives each file's ETag and size (X-Linked-Etag /
// X-Linked-Size on the redirect to the CDN for LFS files); the body is fetched into blobs/<etag>.incomplete,
// resumed with a Range header, size-checked, and only then renamed into place.
// Environment: HF_ENDPOINT, HF_HOME, HF_HUB_CACHE (and legacy HUGGINGFACE_HUB_CACHE), HF_TOKEN (else the token
// file HF_TOKEN_PATH or $HF_HOME/token), HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) = 1/ON/YES/TRUE,
// HF_HUB_DOWNLOAD_TIMEOUT and HF_HUB_ETAG_TIMEOUT (seconds), HF_HUB_DISABLE_PROGRESS_BARS.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/common/error.h"

namespace loom::hub {

// mlx-lm's DEFAULT_ALLOW_PATTERNS (mlx_lm/utils.py): what loading a model needs and nothing more, so
// pytorch_model.bin, original/consolidated.*.pth and similar are never fetched.
std::vector<std::string> default_allow_patterns();

struct HubOptions {
  // Branch, tag or 40-hex commit hash.
  std::string revision = "main";
  // Glob patterns with Python fnmatchcase semantics as huggingface_hub uses them: '*' also matches '/',
  // a pattern ending in '/' matches everything below that folder. Empty = every file of the repository.
  std::vector<std::string> allow_patterns = default_allow_patterns();
  // Files matching any of these are skipped even when allowed.
  std::vector<std::string> ignore_patterns;
  // No network at all: resolve from refs/ and snapshots/ only. Unset = HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE.
  std::optional<bool> offline;
  // Empty = HF_ENDPOINT, else https://huggingface.co.
  std::string endpoint;
  // The hub cache folder (the one holding models--*). Empty = HF_HUB_CACHE, else $HF_HOME/hub, with
  // HF_HOME defaulting to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface.
  std::string cache_dir;
  // Empty = HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the token file huggingface-cli login writes.
  std::string token;
  // A progress line on stderr. Unset = only when stderr is a terminal (and HF_HUB_DISABLE_PROGRESS_BARS unset).
  std::optional<bool> progress;
  // How many times a broken transfer is resumed before giving up; the counter restarts whenever bytes arrive.
  int max_retries = 5;
};

// HubOptions with every default filled in from the environment.
struct HubConfig {
  std::string endpoint;   // no trailing '/'
  std::string cache_dir;  // absolute
  std::string token;      // may be empty
  bool offline = false;
  bool progress = false;
  std::string token_source;  // "option", "HF_TOKEN", a token file path, or empty: named in auth errors
};
HubConfig resolve_config(const HubOptions& options);

// Why a Hub operation failed; every HubError is also a loom::IoError whose message starts with "[hub] ".
enum class HubErrorKind {
  kNetwork,    // the endpoint could not be reached or a transfer broke for good
  kAuth,       // 401/403: private, gated, or a token that was not accepted
  kNotFound,   // 404: repository, revision or file unknown, or nothing matched the allow patterns
  kOffline,    // offline (or the Hub unreachable) and the cache lacks what was asked for
  kProtocol,   // an unexpected answer: missing headers, malformed JSON, a size that does not match
  kHttp,       // any other HTTP error status
  kFilesystem  // the cache folder could not be written
};

class HubError : public IoError {
 public:
  HubError(HubErrorKind kind, const std::string& what, int http_status = 0, std::string hub_error_code = {})
      : IoError(format_error("hub", what)),
        kind_(kind),
        http_status_(http_status),
        hub_error_code_(std::move(hub_error_code)) {}
  HubErrorKind kind() const { return kind_; }
  int http_status() const { return http_status_; }  // 0 when no HTTP answer is involved
  // The Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), or empty.
  const std::string& hub_error_code() const { return hub_error_code_; }

 private:
  HubErrorKind kind_;
  int http_status_;
  std::string hub_error_code_;
};

// Makes sure every file of repo_id at options.revision that the patterns allow is in the cache, downloading
// what is missing, and returns the absolute snapshot folder (…/models--org--name/snapshots/<commit>).
// Online it asks the revision API once (a branch may have moved, as huggingface_hub does too) and sends no
// further request for files already cached. A network failure before any download falls back to the cache.
// Throws HubError; never returns a snapshot with a half-downloaded file in it.
std::string snapshot_download(const std::string& repo_id, const HubOptions& options = {});

// The cache folder of a repository: <cache_dir>/models--org--name.
std::string repo_cache_folder(const std::string& cache_dir, const std::string& repo_id);

// True for "org/name" shaped strings that are valid Hub repository ids and do not name an existing local
// path; "./org/name", "/abs/path", "a/b/c" and an existing folder "org/name" are all false.
bool looks_like_repo_id(const std::string& s);

// The local folder when `model` exists on disk, else (for a repo id) snapshot_download(model, options).
// Throws HubError(kNotFound) when it is neither.
std::string resolve_model_path(const std::string& model, const HubOptions& options = {});

// Python's fnmatch.fnmatchcase on code points (huggingface_hub's filter): '*' matches any run including '/',
// '?' one character, [seq] / [!seq] with ranges. Patterns ending in '/' get a '*' appended first.
bool match_pattern(std::string_view pattern, std::string_view path);
// huggingface_hub's filter_repo_objects: allowed (empty allow = all) and not ignored.
bool is_allowed(std::string_view path, const std::vector<std::string>& allow_patterns,
                const std::vector<std::string>& ignore_patterns);

}  // namespace loom::hub
