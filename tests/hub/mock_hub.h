// A stand-in for the Hugging Face Hub for the loom_hub tests: two real HTTP servers on 127.0.0.1 (ephemeral
// ports) speaking the Hub's URL scheme and headers. The "hub" server answers the revision API and
// /resolve/; LFS files redirect (302, absolute URL) to the "cdn" server, which sits on another port so it is
// another origin, as the real CDN is. Every request is recorded, and faults can be injected.
#pragma once

#include <httplib.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace loom::hub::test {

struct MockFile {
  std::string path;
  std::string content;
  bool lfs = false;  // served through a 302 to the CDN with X-Linked-Etag / X-Linked-Size
  // The blob name the Hub reports: a 64-hex "sha256" for LFS files, a 40-hex "git sha1" otherwise. Derived
  // from the content (same content, same ETag, as on the real Hub) unless set.
  std::string etag;
};

struct MockRepo {
  std::string id;                                        // "org/name"
  std::map<std::string, std::vector<MockFile>> commits;  // commit hash -> files
  std::map<std::string, std::string> refs;               // branch or tag -> commit hash
  bool gated = false;                                    // needs "Authorization: Bearer <token>"
  std::string token;
  std::string renamed_to;  // answers with relative redirects to this id
};

struct SeenRequest {
  std::string server;  // "hub" or "cdn"
  std::string method;  // GET or HEAD
  std::string path;    // percent-decoded
  std::string range;   // the Range header, or empty
  std::string authorization;
};

// A 40- or 64-character lower-case hex string derived from `seed` (FNV-1a based; only needs to be stable).
std::string fake_hex(const std::string& seed, size_t chars);

class MockHub {
 public:
  MockHub();
  ~MockHub();
  MockHub(const MockHub&) = delete;
  MockHub& operator=(const MockHub&) = delete;

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(hub_port_); }
  std::string cdn_origin() const { return "http://127.0.0.1:" + std::to_string(cdn_port_); }

  // Fills in missing ETags and registers the repository (replacing one of the same id).
  void add_repo(MockRepo repo);
  // The ETag (without quotes) the hub reports for a file of a registered repository at a commit.
  std::string etag(const std::string& repo, const std::string& commit, const std::string& path) const;

  std::vector<SeenRequest> requests() const;
  void clear_requests();
  size_t count(const std::string& server, const std::string& method = "") const;

  // Faults of the CDN for one blob: the next `times` GETs close the connection after `after_bytes` bytes of
  // body; answer `status` (e.g. 503) to the next `times` GETs; ignore Range headers (answer 200, full body).
  void interrupt(const std::string& etag, size_t after_bytes, int times);
  void fail_with(const std::string& etag, int status, int times);
  void ignore_range(bool on) { ignore_range_ = on; }
  // Runs inside the CDN before each chunk it sends (the client is mid-download then).
  void on_cdn_chunk(std::function<void(const std::string& etag, size_t offset)> fn);

 private:
  void record(const std::string& server, const httplib::Request& req);
  const MockRepo* find_repo(const std::string& id) const;
  // Writes the Hub's error answer when the request may not see the repository; true when it did.
  bool check_access(const MockRepo* repo, const httplib::Request& req, httplib::Response& res) const;
  void handle_api(const httplib::Request& req, httplib::Response& res);
  void handle_resolve(const httplib::Request& req, httplib::Response& res);
  void handle_cdn(const httplib::Request& req, httplib::Response& res);

  httplib::Server hub_, cdn_;
  std::thread hub_thread_, cdn_thread_;
  int hub_port_ = 0, cdn_port_ = 0;

  mutable std::mutex mu_;
  std::vector<MockRepo> repos_;
  std::map<std::string, std::string> blobs_;  // LFS etag -> content
  std::vector<SeenRequest> seen_;
  struct Fault {
    int interrupt_times = 0;
    size_t after_bytes = 0;
    int fail_times = 0;
    int fail_status = 0;
  };
  std::map<std::string, Fault> faults_;
  std::function<void(const std::string&, size_t)> chunk_hook_;
  std::atomic<bool> ignore_range_{false};
};

}  // namespace loom::hub::test
