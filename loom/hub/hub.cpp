// snapshot_download and friends: the huggingface_hub protocol on top of http.h and cache_layout.h.
#include "loom/hub/hub.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "loom/common/log.h"
#include "loom/hub/cache_layout.h"
#include "loom/hub/http.h"

namespace fs = std::filesystem;

namespace loom::hub {
namespace {

using detail::HttpClient;
using detail::HttpResponse;
using detail::TransferResult;
using detail::TransferStatus;

long env_seconds(const char* name, long fallback) {
  auto v = detail::env(name);
  if (!v) return fallback;
  try {
    double d = std::stod(*v);
    return d > 0 ? std::max(1L, static_cast<long>(d + 0.5)) : fallback;
  } catch (...) {
    return fallback;
  }
}

std::string trim_copy(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

// One line on stderr, redrawn at most ten times a second; only used when stderr is a terminal, so logs and
// pipes never receive carriage returns.
class Progress {
 public:
  Progress(bool enabled, std::string repo) : enabled_(enabled), repo_(std::move(repo)) {}
  ~Progress() { finish(); }

  void begin_file(const std::string& name, size_t index, size_t count, uint64_t total, uint64_t have) {
    name_ = name;
    index_ = index;
    count_ = count;
    total_ = total;
    have_ = have;
    start_have_ = have;
    start_ = Clock::now();
    last_draw_ = {};
    draw(true);
  }
  void add(uint64_t n) {
    have_ += n;
    draw(false);
  }
  void rewind(uint64_t n) {
    have_ -= std::min(have_, n);
    start_have_ = std::min(start_have_, have_);
  }
  void end_file() { draw(true); }
  void finish() {
    if (enabled_ && drawn_) std::fputs("\n", stderr);
    drawn_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  void draw(bool force) {
    if (!enabled_) return;
    auto now = Clock::now();
    if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(have_ - start_have_) / secs : 0;
    int pct = total_ ? static_cast<int>(100.0 * static_cast<double>(have_) / static_cast<double>(total_)) : 100;
    std::fprintf(stderr, "\r[hub] %s [%zu/%zu] %s  %s / %s  %d%%  %s/s\033[K", repo_.c_str(), index_, count_,
                 name_.c_str(), human_bytes(static_cast<double>(have_)).c_str(),
                 human_bytes(static_cast<double>(total_)).c_str(), pct, human_bytes(rate).c_str());
    std::fflush(stderr);
    drawn_ = true;
  }

  bool enabled_;
  std::string repo_;
  std::string name_;
  size_t index_ = 0, count_ = 0;
  uint64_t total_ = 0, have_ = 0, start_have_ = 0;
  Clock::time_point start_{}, last_draw_{};
  bool drawn_ = false;
};

// Closes a file descriptor on every path out of a scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Thrown from inside a transfer when the server's 206 does not start where the partial file ends.
struct RangeMismatch {};

struct FileMeta {
  std::string etag;
  uint64_t size = 0;
  std::string url;  // where the bytes are (the CDN for LFS files)
  bool send_auth = false;
};

struct Listing {
  std::string commit;
  std::vector<std::string> files;
};

// Everything one snapshot_download call needs.
class Session {
 public:
  Session(std::string repo_id, std::string revision, HubConfig cfg, const HubOptions& options)
      : repo_(std::move(repo_id)),
        revision_(std::move(revision)),
        cfg_(std::move(cfg)),
        options_(options),
        paths_{cfg_.cache_dir + "/" + detail::repo_folder_name(repo_)},
        etag_timeout_s_(env_seconds("HF_HUB_ETAG_TIMEOUT", 10)) {}

  const detail::RepoPaths& paths() const { return paths_; }

  HttpClient& client() {
    if (!client_) client_ = std::make_unique<HttpClient>(10, env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10));
    return *client_;
  }

  std::vector<std::string> auth_headers() const {
    if (cfg_.token.empty()) return {};
    return {"Authorization: Bearer " + cfg_.token};
  }

  [[noreturn]] void throw_unreachable(const TransferResult& r) const {
    throw HubError(HubErrorKind::kNetwork, "cannot reach " + r.response.url + ": " + r.error);
  }

  // Maps a Hub error answer to a HubError saying what to do about it.
  [[noreturn]] void throw_http(const HttpResponse& r, const std::string& file, const std::string& commit) const {
    std::string code = r.headers.get("x-error-code");
    std::string server = r.headers.get("x-error-message");
    if (server.empty() && !r.body.empty()) {
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      if (j.is_object() && j.contains("error") && j["error"].is_string()) {
        server = j["error"].get<std::string>();
      } else if (r.body.size() < 300 && r.body.find('<') == std::string::npos) {
        server = trim_copy(r.body);
      }
    }
    int status = static_cast<int>(r.status);
    std::string http = " (HTTP " + std::to_string(status) + (server.empty() ? "" : ": " + server) + ")";
    std::string sent = cfg_.token.empty() ? "no token was sent" : "the token from " + cfg_.token_source;
    if (code == "GatedRepo") {
      throw HubError(HubErrorKind::kAuth,
                     "'" + repo_ + "' is a gated repository: accept its conditions at " + cfg_.endpoint + "/" + repo_ +
                         ", then set HF_TOKEN to an access token of that account (" +
                         (cfg_.token.empty() ? sent : sent + " was not accepted") + ")" + http,
                     status, code);
    }
    if (status == 401) {
      throw HubError(
          HubErrorKind::kAuth,
          "repository '" + repo_ + "' was not found on " + cfg_.endpoint +
              ", or it is private or gated and needs authentication: " +
              (cfg_.token.empty() ? sent + "; set HF_TOKEN to an access token" : sent + " was not accepted") + http,
          status, code);
    }
    if (status == 403) {
      throw HubError(
          HubErrorKind::kAuth,
          "access to '" + repo_ + "' is forbidden: " +
              (cfg_.token.empty() ? sent + "; set HF_TOKEN to an access token" : sent + " lacks permission") + http,
          status, code);
    }
    if (code == "RevisionNotFound") {
      throw HubError(HubErrorKind::kNotFound, "revision '" + revision_ + "' not found in '" + repo_ + "'" + http,
                     status, code);
    }
    if (status == 404 && !file.empty() && code != "RepoNotFound") {
      throw HubError(HubErrorKind::kNotFound,
                     "file '" + file + "' not found in '" + repo_ + "' at commit " + commit + http, status, code);
    }
    if (status == 404) {
      // Without X-Error-Code the 404 may as well be about the revision.
      std::string what = code == "RepoNotFound" ? "repository '" + repo_ + "'"
                                                : "repository '" + repo_ + "' or its revision '" + revision_ + "'";
      throw HubError(HubErrorKind::kNotFound, what + " not found on " + cfg_.endpoint + http, status, code);
    }
    throw HubError(HubErrorKind::kHttp,
                   "HTTP " + std::to_string(status) + " from " + r.url + (server.empty() ? "" : ": " + server), status,
                   code);
  }

  // GET /api/models/{repo}/revision/{revision}: the commit and the file names.
  Listing list_files() {
    std::string url = cfg_.endpoint + "/api/models/" + repo_ + "/revision/" + detail::url_quote(revision_, /*safe=*/"");
    // Redirects are followed: a renamed repository answers its old name with one.
    TransferResult r = client().request(url, auth_headers(), /*head=*/false, /*follow=*/true, /*total_timeout_s=*/0);
    if (r.status != TransferStatus::kOk) throw_unreachable(r);
    if (r.response.status != 200) throw_http(r.response, "", "");
    auto j = nlohmann::json::parse(r.response.body, nullptr, false);
    if (!j.is_object() || !j.contains("sha") || !j["sha"].is_string() || !j.contains("siblings") ||
        !j["siblings"].is_array()) {
      throw HubError(HubErrorKind::kProtocol, "unexpected answer from " + url +
                                                  " (no 'sha' and 'siblings'): is HF_ENDPOINT a Hugging Face Hub?");
    }
    Listing out;
    out.commit = j["sha"].get<std::string>();
    detail::check_single_name(out.commit, "commit hash");
    for (const auto& s : j["siblings"]) {
      if (s.is_object() && s.contains("rfilename") && s["rfilename"].is_string()) {
        out.files.push_back(s["rfilename"].get<std::string>());
      }
    }
    return out;
  }

  // HEAD {endpoint}/{repo}/resolve/{commit}/{path}, following only same-host (relative) redirects, as
  // huggingface_hub does: a renamed repository answers with a relative redirect, an LFS file with an absolute
  // one to the CDN whose own headers would hide X-Linked-Etag and X-Linked-Size.
  FileMeta file_metadata(const std::string& commit, const std::string& file) {
    std::string resolve_url =
        cfg_.endpoint + "/" + repo_ + "/resolve/" + detail::url_quote(commit, "") + "/" + detail::url_quote(file, "/");
    std::vector<std::string> headers = auth_headers();
    headers.push_back("Accept-Encoding: identity");  // the real size, not a compressed one
    std::string url = resolve_url;
    TransferResult r;
    for (int hops = 0;; ++hops) {
      r = client().request(url, headers, /*head=*/true, /*follow=*/false, etag_timeout_s_);
      if (r.status != TransferStatus::kOk) throw_unreachable(r);
      long st = r.response.status;
      std::string location = r.response.headers.get("location");
      if (st >= 300 && st < 400 && !location.empty() && location[0] == '/' &&
          (location.size() < 2 || location[1] != '/') && hops < 10) {
        url = detail::url_origin(url) + location;
        continue;
      }
      break;
    }
    const HttpResponse& resp = r.response;
    bool redirect = resp.status >= 300 && resp.status < 400;
    if (!(resp.status >= 200 && resp.status < 300) && !redirect) throw_http(resp, file, commit);
    std::string got_commit = resp.headers.get("x-repo-commit");
    if (got_commit.empty()) {
      throw HubError(HubErrorKind::kProtocol,
                     "no X-Repo-Commit header from " + url +
                         ": the answer did not come from a Hugging Face Hub (check HF_ENDPOINT, proxy, firewall)");
    }
    if (got_commit != commit) {
      throw HubError(HubErrorKind::kProtocol, "asked for '" + file + "' at commit " + commit + " but " + url +
                                                  " answered for commit " + got_commit);
    }
    const std::string* etag = resp.headers.find("x-linked-etag");
    if (!etag) etag = resp.headers.find("etag");
    FileMeta m;
    m.etag = etag ? detail::normalize_etag(*etag) : std::string();
    if (m.etag.empty()) {
      throw HubError(HubErrorKind::kProtocol,
                     "no ETag for '" + file + "' from " + url + ": cannot name its blob reproducibly");
    }
    detail::check_single_name(m.etag, "ETag");
    std::string size = resp.headers.get("x-linked-size");
    if (size.empty() && !redirect) size = resp.headers.get("content-length");
    try {
      size_t used = 0;
      m.size = std::stoull(size, &used);
      if (used != size.size()) throw std::invalid_argument("trailing characters");
    } catch (...) {
      throw HubError(HubErrorKind::kProtocol,
                     "no usable size (X-Linked-Size / Content-Length) for '" + file + "' from " + url);
    }
    std::string location = resp.headers.get("location");
    m.url = redirect && !location.empty() ? location : url;
    // The CDN URL is pre-signed; the user's token only goes back to the endpoint's own host.
    m.send_auth = detail::url_origin(m.url) == detail::url_origin(resolve_url);
    return m;
  }

  // Fetches one blob into blobs/<etag>.incomplete (resuming what is there), checks its size, renames it into
  // place. Call with the blob's lock held.
  void download_blob(const FileMeta& m, const std::string& file, size_t index, size_t count, Progress& progress) {
    std::string blob = paths_.blob(m.etag);
    std::string part = paths_.incomplete(m.etag);
    std::error_code ec;
    fs::create_directories(paths_.blobs(), ec);
    if (ec) throw HubError(HubErrorKind::kFilesystem, "cannot create " + paths_.blobs() + ": " + ec.message());
    Fd fd{::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666)};  // 0666 & umask, like Python's open()
    if (fd.fd < 0) {
      throw HubError(HubErrorKind::kFilesystem, "cannot open " + part + ": " + std::strerror(errno));
    }
    off_t end = ::lseek(fd.fd, 0, SEEK_END);
    uint64_t have = end > 0 ? static_cast<uint64_t>(end) : 0;
    auto truncate_all = [&] {
      if (::ftruncate(fd.fd, 0) != 0 || ::lseek(fd.fd, 0, SEEK_SET) != 0) {
        throw HubError(HubErrorKind::kFilesystem, "cannot truncate " + part + ": " + std::strerror(errno));
      }
      progress.rewind(have);
      have = 0;
    };
    if (have > m.size) truncate_all();  // not a prefix of this blob: start over
    warn_if_low_disk(m.size - have);
    progress.begin_file(file, index, count, m.size, have);

    int retries_left = options_.max_retries;
    int idle_failures = 0;  // consecutive attempts that received nothing, for the back-off
    while (have < m.size) {
      std::vector<std::string> headers = m.send_auth ? auth_headers() : std::vector<std::string>{};
      if (have > 0) headers.push_back("Range: bytes=" + std::to_string(have) + "-");
      uint64_t before = have;
      std::string failure;
      auto on_start = [&](long status, const detail::HttpHeaders& h) {
        if (status == 206) {
          // "bytes <first>-<last>/<total>": it must continue exactly where the partial file ends.
          std::string cr = h.get("content-range");
          size_t sp = cr.find(' '), dash = cr.find('-');
          uint64_t first = UINT64_MAX;
          if (sp != std::string::npos && dash != std::string::npos && dash > sp) {
            try {
              first = std::stoull(cr.substr(sp + 1, dash - sp - 1));
            } catch (...) {
            }
          }
          if (first != have) throw RangeMismatch{};
        } else if (have > 0) {
          truncate_all();  // the server ignored the Range header and sends the whole file
          before = 0;
        }
      };
      auto on_data = [&](const char* data, size_t n) {
        if (have + n > m.size) {
          throw HubError(HubErrorKind::kProtocol,
                         "'" + file + "' is larger than the " + std::to_string(m.size) + " bytes the Hub announced");
        }
        write_all(fd.fd, data, n, part);
        have += n;
        progress.add(n);
      };
      TransferResult r;
      try {
        r = client().stream(m.url, headers, on_start, on_data);
      } catch (const RangeMismatch&) {
        truncate_all();
        before = 0;
        r.status = TransferStatus::kBroken;
        r.error = "the server resumed at the wrong offset";
      } catch (const HubError& e) {
        if (e.kind() == HubErrorKind::kProtocol) {
          // Too many bytes: the partial file is not this blob's prefix; drop it so a retry starts clean.
          (void)::ftruncate(fd.fd, 0);
        }
        throw;
      }
      long st = r.response.status;
      if (r.status == TransferStatus::kOk && st >= 200 && st < 300) {
        if (have == m.size) break;
        failure = "the answer ended after " + std::to_string(have) + " of " + std::to_string(m.size) + " bytes";
      } else if (r.status == TransferStatus::kOk && st == 416 && have > 0) {
        truncate_all();  // our partial file is not a prefix the server can continue
        failure = "HTTP 416 on resume";
      } else if (r.status == TransferStatus::kOk && (st == 408 || st == 429 || st >= 500)) {
        failure = "HTTP " + std::to_string(st);
      } else if (r.status == TransferStatus::kOk) {
        throw_http(r.response, file, "");
      } else if (r.status == TransferStatus::kFatal) {
        throw HubError(HubErrorKind::kNetwork, "downloading '" + file + "' from " + m.url + " failed: " + r.error);
      } else {
        failure = r.error;
      }
      bool progressed = have > before;
      if (progressed) {
        retries_left = options_.max_retries;
        idle_failures = 0;
      }
      if (retries_left-- <= 0) {
        throw HubError(HubErrorKind::kNetwork, "download of '" + file + "' from " + m.url + " broke off at " +
                                                   std::to_string(have) + " of " + std::to_string(m.size) + " bytes (" +
                                                   failure + "); the partial file " + part +
                                                   " is kept and the next call resumes it");
      }
      log::info("[hub] " + file + ": " + failure + "; resuming at byte " + std::to_string(have));
      if (!progressed) {
        // Nothing arrived: wait 1, 2, 4, 8, 8... seconds before asking again.
        std::this_thread::sleep_for(std::chrono::seconds(1L << std::min(idle_failures, 3)));
        ++idle_failures;
      }
    }
    // The data must be on disk before the name says the blob is complete.
    if (::fdatasync(fd.fd) != 0) {
      throw HubError(HubErrorKind::kFilesystem, "cannot flush " + part + ": " + std::strerror(errno));
    }
    ::close(fd.fd);
    fd.fd = -1;
    fs::rename(part, blob, ec);
    if (ec) throw HubError(HubErrorKind::kFilesystem, "cannot rename " + part + " to " + blob + ": " + ec.message());
    progress.end_file();
  }

 private:
  static void write_all(int fd, const char* data, size_t n, const std::string& path) {
    while (n > 0) {
      ssize_t w = ::write(fd, data, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw HubError(HubErrorKind::kFilesystem, "cannot write " + path + ": " + std::strerror(errno));
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
  }

  void warn_if_low_disk(uint64_t needed) const {
    struct statvfs st {};
    if (::statvfs(paths_.blobs().c_str(), &st) != 0) return;
    uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
    if (free_bytes < needed) {
      log::warn("[hub] " + paths_.blobs() + " has " + human_bytes(static_cast<double>(free_bytes)) + " free but " +
                human_bytes(static_cast<double>(needed)) + " are still to download");
    }
  }

  std::string repo_;
  std::string revision_;
  HubConfig cfg_;
  const HubOptions& options_;
  detail::RepoPaths paths_;
  long etag_timeout_s_;
  std::unique_ptr<HttpClient> client_;
};

// What the cache alone can serve: the snapshot folder, or why not.
struct CacheLookup {
  std::string snapshot;
  std::string missing;
};

CacheLookup lookup_cache(const detail::RepoPaths& paths, const std::string& revision, const HubOptions& options) {
  CacheLookup out;
  std::string commit;
  if (detail::is_commit_hash(revision)) {
    commit = revision;
  } else if (auto ref = detail::read_ref(paths.ref(revision))) {
    commit = *ref;
  } else {
    out.missing = "no ref " + paths.ref(revision) + " (revision '" + revision + "' was never downloaded)";
    return out;
  }
  try {
    detail::check_single_name(commit, "commit hash");
  } catch (const HubError&) {
    out.missing = "the ref " + paths.ref(revision) + " holds no commit hash";
    return out;
  }
  std::string snapshot = paths.snapshot(commit);
  std::error_code ec;
  if (!fs::is_directory(snapshot, ec)) {
    out.missing = "no snapshot folder " + snapshot;
    return out;
  }
  std::vector<std::string> absent;
  // huggingface_hub >= 1.x records each commit's file list in trees/<commit>.json: when Python wrote one,
  // it tells exactly which allowed files must be there.
  std::ifstream tree(paths.storage + "/trees/" + commit + ".json", std::ios::binary);
  if (tree) {
    auto j = nlohmann::json::parse(tree, nullptr, false);
    if (j.is_object() && j.value("format_version", 0) == 1 && j.contains("files") && j["files"].is_object()) {
      for (const auto& [name, info] : j["files"].items()) {
        if (!is_allowed(name, options.allow_patterns, options.ignore_patterns)) continue;
        if (!fs::is_regular_file(snapshot + "/" + name, ec)) absent.push_back(name);
      }
    }
  }
  // Without that list, at least every allowed file present must resolve to a blob, and one must exist.
  size_t usable = 0;
  for (auto it = fs::recursive_directory_iterator(snapshot, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    std::string rel = fs::path(it->path()).lexically_relative(snapshot).generic_string();
    bool is_link = it->is_symlink(ec);
    if (!is_link && !it->is_regular_file(ec)) continue;
    if (!is_allowed(rel, options.allow_patterns, options.ignore_patterns)) continue;
    if (fs::is_regular_file(it->path(), ec)) {
      ++usable;
    } else if (std::find(absent.begin(), absent.end(), rel) == absent.end()) {
      absent.push_back(rel + " (its blob is gone)");
    }
  }
  if (!absent.empty()) {
    std::sort(absent.begin(), absent.end());
    std::string list;
    for (size_t i = 0; i < absent.size() && i < 5; ++i) list += (i ? ", " : "") + absent[i];
    if (absent.size() > 5) list += ", ... (" + std::to_string(absent.size() - 5) + " more)";
    out.missing = "the snapshot " + snapshot + " is incomplete: " + list;
    return out;
  }
  if (usable == 0) {
    out.missing = "the snapshot " + snapshot + " has no file the allow patterns select";
    return out;
  }
  out.snapshot = snapshot;
  return out;
}

std::string patterns_text(const std::vector<std::string>& patterns) {
  std::string s;
  for (const auto& p : patterns) s += (s.empty() ? "" : ", ") + p;
  return "[" + s + "]";
}

}  // namespace

HubConfig resolve_config(const HubOptions& options) {
  using detail::env;
  HubConfig c;
  c.endpoint = !options.endpoint.empty() ? options.endpoint : env("HF_ENDPOINT").value_or("https://huggingface.co");
  while (!c.endpoint.empty() && c.endpoint.back() == '/') c.endpoint.pop_back();

  std::string hf_home = detail::expand_user(
      env("HF_HOME").value_or(detail::expand_user(env("XDG_CACHE_HOME").value_or("~/.cache")) + "/huggingface"));
  std::string cache = !options.cache_dir.empty()
                          ? options.cache_dir
                          : env("HF_HUB_CACHE").value_or(env("HUGGINGFACE_HUB_CACHE").value_or(hf_home + "/hub"));
  std::error_code ec;
  fs::path abs = fs::absolute(detail::expand_user(cache), ec);
  // Symlinks resolved like huggingface_hub's Path.resolve(), so both report the same snapshot path.
  fs::path canon = fs::weakly_canonical(abs, ec);
  c.cache_dir = (ec ? abs.lexically_normal() : canon).string();
  while (c.cache_dir.size() > 1 && c.cache_dir.back() == '/') c.cache_dir.pop_back();

  if (!options.token.empty()) {
    c.token = options.token;
    c.token_source = "the token option";
  } else if (auto t = env("HF_TOKEN")) {
    c.token = trim_copy(*t);
    c.token_source = "HF_TOKEN";
  } else if (auto t2 = env("HUGGING_FACE_HUB_TOKEN")) {
    c.token = trim_copy(*t2);
    c.token_source = "HUGGING_FACE_HUB_TOKEN";
  } else {
    std::string path = detail::expand_user(env("HF_TOKEN_PATH").value_or(hf_home + "/token"));
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      c.token = trim_copy(ss.str());
      if (!c.token.empty()) c.token_source = path;
    }
  }

  // huggingface_hub reads HF_HUB_OFFLINE and only falls back to TRANSFORMERS_OFFLINE when it is unset.
  c.offline = options.offline.value_or(env("HF_HUB_OFFLINE") ? detail::env_true("HF_HUB_OFFLINE")
                                                             : detail::env_true("TRANSFORMERS_OFFLINE"));
  c.progress = options.progress.value_or(::isatty(STDERR_FILENO) && !detail::env_true("HF_HUB_DISABLE_PROGRESS_BARS"));
  return c;
}

std::string repo_cache_folder(const std::string& cache_dir, const std::string& repo_id) {
  return cache_dir + "/" + detail::repo_folder_name(repo_id);
}

std::string snapshot_download(const std::string& repo_id, const HubOptions& options) {
  detail::check_repo_id(repo_id);
  std::string revision = options.revision.empty() ? "main" : options.revision;
  detail::check_repo_path(revision, "revision");
  HubConfig cfg = resolve_config(options);
  Session session(repo_id, revision, cfg, options);
  const detail::RepoPaths& paths = session.paths();
  std::string where = "'" + repo_id + "' (revision '" + revision + "')";

  if (cfg.offline) {
    CacheLookup hit = lookup_cache(paths, revision, options);
    if (hit.snapshot.empty()) {
      throw HubError(HubErrorKind::kOffline, "offline (HF_HUB_OFFLINE or the offline option) and the cache " +
                                                 cfg.cache_dir + " cannot serve " + where + ": " + hit.missing);
    }
    return hit.snapshot;
  }

  Listing listing;
  try {
    listing = session.list_files();
  } catch (const HubError& e) {
    // As huggingface_hub: without the Hub (down, unreachable, or refusing a token) a complete cached snapshot
    // still serves; a revision the Hub says does not exist never does.
    if (e.hub_error_code() == "RevisionNotFound" || e.kind() == HubErrorKind::kProtocol) throw;
    CacheLookup hit = lookup_cache(paths, revision, options);
    if (!hit.snapshot.empty()) {
      log::warn(std::string(e.what()) + "; using the cached snapshot " + hit.snapshot);
      return hit.snapshot;
    }
    if (e.kind() == HubErrorKind::kNetwork) {
      std::string reason = e.what();
      if (reason.rfind("[hub] ", 0) == 0) reason = reason.substr(6);
      throw HubError(HubErrorKind::kNetwork,
                     reason + "; and the cache cannot serve " + where + " either: " + hit.missing);
    }
    throw;
  }

  std::vector<std::string> files;
  for (const auto& f : listing.files) {
    if (is_allowed(f, options.allow_patterns, options.ignore_patterns)) files.push_back(f);
  }
  if (files.empty()) {
    throw HubError(HubErrorKind::kNotFound, "no file of " + where + " matches the allow patterns " +
                                                patterns_text(options.allow_patterns) + " (it has " +
                                                std::to_string(listing.files.size()) + " files)");
  }
  for (const auto& f : files) detail::check_repo_path(f, "file name");

  std::string snapshot = paths.snapshot(listing.commit);
  Progress progress(cfg.progress, repo_id);
  bool tagged = false;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& file = files[i];
    std::string pointer = snapshot + "/" + file;
    std::error_code ec;
    if (fs::exists(pointer, ec)) continue;  // cached: no request at all
    if (!tagged) {
      std::error_code mk;
      fs::create_directories(cfg.cache_dir, mk);
      detail::ensure_cachedir_tag(cfg.cache_dir);
      tagged = true;
    }
    FileMeta meta = session.file_metadata(listing.commit, file);
    std::string blob = paths.blob(meta.etag);
    if (!fs::exists(blob, ec)) {
      detail::FileLock lock(paths.lock(cfg.cache_dir, detail::repo_folder_name(repo_id), meta.etag), file);
      // Another process may have finished this blob while we waited for the lock.
      if (!fs::exists(blob, ec)) session.download_blob(meta, file, i + 1, files.size(), progress);
    }
    detail::create_pointer(blob, pointer);
  }
  progress.finish();
  // The ref is written last, so a branch never points at a snapshot a broken run left half-filled.
  if (revision != listing.commit) detail::write_ref(paths.ref(revision), listing.commit);
  return snapshot;
}

bool looks_like_repo_id(const std::string& s) {
  if (std::count(s.begin(), s.end(), '/') != 1) return false;
  try {
    detail::check_repo_id(s);
  } catch (const HubError&) {
    return false;
  }
  std::error_code ec;
  return !fs::exists(fs::symlink_status(s, ec));
}

std::string resolve_model_path(const std::string& model, const HubOptions& options) {
  std::error_code ec;
  if (fs::exists(model, ec)) return model;
  if (looks_like_repo_id(model)) return snapshot_download(model, options);
  throw HubError(HubErrorKind::kNotFound,
                 "model '" + model + "' is neither an existing local folder nor a Hugging Face repo id (org/name)");
}

}  // namespace loom::hub
