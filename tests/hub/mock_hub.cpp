#include "tests/hub/mock_hub.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace loom::hub::test {

std::string fake_hex(const std::string& seed, size_t chars) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (uint64_t round = 0; out.size() < chars; ++round) {
    uint64_t h = 1469598103934665603ull ^ (round * 0x9e3779b97f4a7c15ull);
    for (unsigned char c : seed) h = (h ^ c) * 1099511628211ull;
    for (int i = 0; i < 16 && out.size() < chars; ++i) out += kHex[(h >> (4 * i)) & 15];
  }
  return out;
}

MockHub::MockHub() {
  // Short keep-alive: a worker waiting on an idle connection would otherwise delay stop() by seconds.
  for (httplib::Server* s : {&hub_, &cdn_}) {
    s->set_keep_alive_timeout(1);
    s->set_tcp_nodelay(true);  // no Nagle + delayed-ACK stalls of 40 ms per answer
    s->set_read_timeout(5, 0);
    s->set_write_timeout(5, 0);
  }
  hub_.Get(R"(/api/models/(.*))", [this](const httplib::Request& req, httplib::Response& res) {
    record("hub", req);
    handle_api(req, res);
  });
  hub_.Get(R"(/([^/]+)/([^/]+)/resolve/(.*))", [this](const httplib::Request& req, httplib::Response& res) {
    record("hub", req);
    handle_resolve(req, res);
  });
  cdn_.Get(R"(/blobs-cdn/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
    record("cdn", req);
    handle_cdn(req, res);
  });
  for (httplib::Server* s : {&hub_, &cdn_}) {
    s->set_error_handler([this, s](const httplib::Request& req, httplib::Response& res) {
      // Unrouted paths still count as requests the client made.
      if (res.status == 404 && res.body.empty()) {
        record(s == &hub_ ? "hub" : "cdn", req);
        res.set_content("no route", "text/plain");
      }
    });
  }
  hub_port_ = hub_.bind_to_any_port("127.0.0.1");
  cdn_port_ = cdn_.bind_to_any_port("127.0.0.1");
  if (hub_port_ <= 0 || cdn_port_ <= 0) throw std::runtime_error("mock hub: cannot bind 127.0.0.1");
  hub_thread_ = std::thread([this] { hub_.listen_after_bind(); });
  cdn_thread_ = std::thread([this] { cdn_.listen_after_bind(); });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(hub_.is_running() && cdn_.is_running())) {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("mock hub: servers did not start");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

MockHub::~MockHub() {
  hub_.stop();
  cdn_.stop();
  if (hub_thread_.joinable()) hub_thread_.join();
  if (cdn_thread_.joinable()) cdn_thread_.join();
}

void MockHub::add_repo(MockRepo repo) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [commit, files] : repo.commits) {
    for (auto& f : files) {
      if (f.etag.empty()) f.etag = fake_hex((f.lfs ? "lfs:" : "git:") + f.content, f.lfs ? 64 : 40);
      if (f.lfs) blobs_[f.etag] = f.content;
    }
  }
  for (auto& r : repos_) {
    if (r.id == repo.id) {
      r = std::move(repo);
      return;
    }
  }
  repos_.push_back(std::move(repo));
}

std::string MockHub::etag(const std::string& repo, const std::string& commit, const std::string& path) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : repos_) {
    if (r.id != repo) continue;
    auto it = r.commits.find(commit);
    if (it == r.commits.end()) break;
    for (const auto& f : it->second) {
      if (f.path == path) return f.etag;
    }
  }
  throw std::runtime_error("mock hub: no file " + path + " in " + repo + "@" + commit);
}

std::vector<SeenRequest> MockHub::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_;
}

void MockHub::clear_requests() {
  std::lock_guard<std::mutex> lock(mu_);
  seen_.clear();
}

size_t MockHub::count(const std::string& server, const std::string& method) const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& r : seen_) n += r.server == server && (method.empty() || r.method == method);
  return n;
}

void MockHub::interrupt(const std::string& etag, size_t after_bytes, int times) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_[etag].interrupt_times = times;
  faults_[etag].after_bytes = after_bytes;
}

void MockHub::fail_with(const std::string& etag, int status, int times) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_[etag].fail_times = times;
  faults_[etag].fail_status = status;
}

void MockHub::on_cdn_chunk(std::function<void(const std::string&, size_t)> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  chunk_hook_ = std::move(fn);
}

void MockHub::record(const std::string& server, const httplib::Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  seen_.push_back({server, req.method, req.path, req.get_header_value("Range"), req.get_header_value("Authorization")});
}

const MockRepo* MockHub::find_repo(const std::string& id) const {
  for (const auto& r : repos_) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

namespace {

void hub_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  res.status = status;
  if (!code.empty()) res.set_header("X-Error-Code", code);
  res.set_header("X-Error-Message", message);
  res.set_content(nlohmann::json{{"error", message}}.dump(), "application/json");
}

}  // namespace

bool MockHub::check_access(const MockRepo* repo, const httplib::Request& req, httplib::Response& res) const {
  std::string auth = req.get_header_value("Authorization");
  if (!repo) {
    // The real Hub does not tell anonymous callers whether a repository exists: 401 without a token.
    if (auth.empty()) {
      hub_error(res, 401, "RepoNotFound", "Repository Not Found");
    } else {
      hub_error(res, 404, "RepoNotFound", "Repository Not Found");
    }
    return false;
  }
  if (repo->gated && auth != "Bearer " + repo->token) {
    std::string msg = "Access to model " + repo->id + " is restricted and you are not in the authorized list.";
    hub_error(res, auth.empty() ? 401 : 403, "GatedRepo", msg);
    return false;
  }
  return true;
}

void MockHub::handle_api(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string rest = req.matches[1];  // org/name/revision/<revision, possibly with '/'>
  size_t at = rest.find("/revision/");
  if (at == std::string::npos) return hub_error(res, 404, "", "Not Found");
  std::string id = rest.substr(0, at), revision = rest.substr(at + 10);
  const MockRepo* repo = find_repo(id);
  if (repo && !repo->renamed_to.empty()) {
    res.status = 307;
    res.set_header("Location", "/api/models/" + repo->renamed_to + "/revision/" + revision);
    return;
  }
  if (!check_access(repo, req, res)) return;
  std::string commit = repo->commits.count(revision) ? revision : "";
  if (commit.empty() && repo->refs.count(revision)) commit = repo->refs.at(revision);
  if (commit.empty()) return hub_error(res, 404, "RevisionNotFound", "Invalid rev id: " + revision);
  nlohmann::json siblings = nlohmann::json::array();
  for (const auto& f : repo->commits.at(commit)) siblings.push_back({{"rfilename", f.path}});
  nlohmann::json body = {{"_id", fake_hex(id, 24)},
                         {"id", id},
                         {"modelId", id},
                         {"private", false},
                         {"gated", repo->gated ? nlohmann::json("manual") : nlohmann::json(false)},
                         {"sha", commit},
                         {"siblings", siblings}};
  res.set_content(body.dump(), "application/json");
}

void MockHub::handle_resolve(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string id = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
  std::string rest = req.matches[3];  // <revision>/<path>
  size_t slash = rest.find('/');
  if (slash == std::string::npos) return hub_error(res, 404, "", "Not Found");
  std::string revision = rest.substr(0, slash), path = rest.substr(slash + 1);
  const MockRepo* repo = find_repo(id);
  if (repo && !repo->renamed_to.empty()) {
    // A renamed repository: a relative redirect to the new name (the client must follow it for HEAD).
    res.status = 307;
    res.set_header("Location", "/" + repo->renamed_to + "/resolve/" + rest);
    return;
  }
  if (!check_access(repo, req, res)) return;
  std::string commit = repo->commits.count(revision) ? revision : "";
  if (commit.empty() && repo->refs.count(revision)) commit = repo->refs.at(revision);
  if (commit.empty()) return hub_error(res, 404, "RevisionNotFound", "Invalid rev id: " + revision);
  const MockFile* file = nullptr;
  for (const auto& f : repo->commits.at(commit)) {
    if (f.path == path) file = &f;
  }
  res.set_header("X-Repo-Commit", commit);
  if (!file) return hub_error(res, 404, "EntryNotFound", path + " does not exist on \"" + revision + "\"");
  if (file->lfs) {
    // As the real Hub: the redirect itself carries the blob's identity and size; the CDN URL is pre-signed.
    res.status = 302;
    res.set_header("Location", cdn_origin() + "/blobs-cdn/" + file->etag + "?X-Amz-Signature=mock");
    res.set_header("X-Linked-Etag", "\"" + file->etag + "\"");
    res.set_header("X-Linked-Size", std::to_string(file->content.size()));
    res.set_header("ETag", "\"" + fake_hex("pointer:" + file->etag, 40) + "\"");
    return;
  }
  res.set_header("ETag", "\"" + file->etag + "\"");
  res.set_content(file->content, "application/octet-stream");  // httplib answers a Range with 206 itself
}

void MockHub::handle_cdn(const httplib::Request& req, httplib::Response& res) {
  std::string etag = req.matches[1];
  std::shared_ptr<const std::string> content;
  size_t cut_after = SIZE_MAX;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blobs_.find(etag);
    if (it == blobs_.end()) {
      res.status = 404;
      res.set_content("NoSuchKey", "text/plain");
      return;
    }
    content = std::make_shared<const std::string>(it->second);
    Fault& f = faults_[etag];
    if (req.method == "GET" && f.fail_times > 0) {
      --f.fail_times;
      res.status = f.fail_status;
      res.set_content("injected failure", "text/plain");
      return;
    }
    if (req.method == "GET" && f.interrupt_times > 0) {
      --f.interrupt_times;
      cut_after = f.after_bytes;
    }
  }
  if (ignore_range_) {
    // A server that does not do ranges: httplib applies req.ranges itself, so drop them (the Request object
    // is httplib's own non-const one; the handler merely sees it through a const reference).
    const_cast<httplib::Request&>(req).ranges.clear();
  }
  res.set_header("ETag", "\"" + etag + "\"");
  auto sent = std::make_shared<size_t>(0);
  res.set_content_provider(
      content->size(), "application/octet-stream",
      [this, content, cut_after, sent, etag](size_t offset, size_t length, httplib::DataSink& sink) {
        std::function<void(const std::string&, size_t)> hook;
        {
          std::lock_guard<std::mutex> lock(mu_);
          hook = chunk_hook_;
        }
        if (hook) hook(etag, offset);
        if (*sent >= cut_after) return false;  // closes the connection mid-body
        size_t n = std::min<size_t>({length, 16384, cut_after - *sent});
        if (!sink.write(content->data() + offset, n)) return false;
        *sent += n;
        return true;
      });
}

}  // namespace loom::hub::test
