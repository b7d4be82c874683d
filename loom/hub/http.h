// Internal to loom_hub: a small libcurl wrapper. One HttpClient owns one easy handle, so consecutive
// requests to the same host reuse the connection. No libcurl type leaks out of this header.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom::hub::detail {

struct HttpHeaders {
  std::vector<std::pair<std::string, std::string>> items;  // names lower-cased, values trimmed
  // The first value of a header (name in any case), or nullptr.
  const std::string* find(std::string_view name) const;
  std::string get(std::string_view name) const;
};

struct HttpResponse {
  long status = 0;
  HttpHeaders headers;  // of the last response (after followed redirects)
  std::string body;     // at most a few hundred KiB are kept for error and API bodies
  std::string url;      // the URL that produced this response
};

// How a transfer ended, for the caller to decide between giving up and resuming.
enum class TransferStatus {
  kOk,           // an HTTP answer arrived completely (any status)
  kUnreachable,  // nothing came back: DNS, connect, TLS handshake, or a timeout before any answer
  kBroken,       // the answer started but the connection broke or stalled before its end
  kFatal         // misuse or a permanent failure (bad URL, certificate rejected, ...)
};

struct TransferResult {
  TransferStatus status = TransferStatus::kOk;
  std::string error;  // libcurl's explanation when status != kOk
  HttpResponse response;
};

class HttpClient {
 public:
  // connect_timeout_s bounds connection set-up; stall_timeout_s aborts a transfer receiving nothing for that
  // long (huggingface_hub's read timeout).
  HttpClient(long connect_timeout_s, long stall_timeout_s);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // A request whose body is kept in response.body; `head` sends a HEAD. `follow` follows redirects (a custom
  // Authorization header only to the first host). total_timeout_s = 0: no overall limit.
  TransferResult request(const std::string& url, const std::vector<std::string>& headers, bool head, bool follow,
                         long total_timeout_s);

  // A GET following redirects (a custom Authorization header is only sent to the first host). When the
  // final answer is a 2xx, on_start(status, headers) runs once before the first body byte (also for an empty
  // body) and on_data receives the body; other answers land in response.body. An exception thrown by a
  // callback stops the transfer and is rethrown from here.
  using StartFn = std::function<void(long status, const HttpHeaders& headers)>;
  using DataFn = std::function<void(const char* data, size_t size)>;
  TransferResult stream(const std::string& url, const std::vector<std::string>& headers, const StartFn& on_start,
                        const DataFn& on_data);

  struct State;  // defined in http.cpp (libcurl handle and per-transfer context)

 private:
  std::unique_ptr<State> state_;
};

// Percent-encodes like Python's urllib.parse.quote(s, safe=safe): letters, digits, "_.-~" and the
// characters of `safe` stay, every other byte becomes %XX.
std::string url_quote(std::string_view s, std::string_view safe);

// "scheme://host:port" of a URL (lower-cased scheme and host), for same-origin decisions.
std::string url_origin(std::string_view url);

}  // namespace loom::hub::detail
