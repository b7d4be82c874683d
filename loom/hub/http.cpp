#include "loom/hub/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <mutex>

#include "loom/common/version.h"
#include "loom/hub/hub.h"

namespace loom::hub::detail {
namespace {

// API listings of repositories with thousands of files are a few MiB; anything far larger is not an answer
// the Hub gives, so stop instead of filling memory.
constexpr size_t kMaxBodyBytes = size_t{64} << 20;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

void global_init() {
  // curl_global_init is not thread-safe; do it once before the first handle exists.
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw HubError(HubErrorKind::kNetwork, "libcurl failed to initialise");
    }
  });
}

}  // namespace

const std::string* HttpHeaders::find(std::string_view name) const {
  std::string key = lower(name);
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::string HttpHeaders::get(std::string_view name) const {
  const std::string* v = find(name);
  return v ? *v : std::string();
}

struct HttpClient::State {
  CURL* curl = nullptr;
  long connect_timeout_s = 10;
  long stall_timeout_s = 10;
  char errbuf[CURL_ERROR_SIZE] = {};

  // Per-transfer context, reset by begin().
  HttpResponse response;
  bool got_status = false;  // some status line arrived: the server answered
  bool streaming = false;
  bool started = false;
  bool too_large = false;
  const StartFn* on_start = nullptr;
  const DataFn* on_data = nullptr;
  std::exception_ptr error;

  void begin(const std::string& url) {
    response = HttpResponse();
    response.url = url;
    got_status = false;
    streaming = false;
    started = false;
    too_large = false;
    on_start = nullptr;
    on_data = nullptr;
    error = nullptr;
    errbuf[0] = '\0';
  }

  bool final_2xx() const { return response.status >= 200 && response.status < 300; }

  void start_stream() {
    if (streaming && !started && final_2xx()) {
      started = true;
      (*on_start)(response.status, response.headers);
    }
  }

  static size_t on_header(char* buf, size_t size, size_t n, void* userp) {
    auto* s = static_cast<State*>(userp);
    std::string_view line(buf, size * n);
    line = trim(line);
    if (line.size() >= 5 && line.substr(0, 5) == "HTTP/") {
      // A new response begins (the next hop of a redirect, or the answer after a 100 Continue).
      s->response.headers.items.clear();
      s->response.status = 0;
      size_t sp = line.find(' ');
      if (sp != std::string_view::npos) {
        std::string_view rest = trim(line.substr(sp + 1));
        long code = 0;
        for (char c : rest.substr(0, 3)) {
          if (c < '0' || c > '9') break;
          code = code * 10 + (c - '0');
        }
        s->response.status = code;
      }
      s->got_status = true;
    } else if (!line.empty()) {
      size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        s->response.headers.items.emplace_back(lower(trim(line.substr(0, colon))),
                                               std::string(trim(line.substr(colon + 1))));
      }
    }
    return size * n;
  }

  static size_t on_write(char* buf, size_t size, size_t n, void* userp) {
    auto* s = static_cast<State*>(userp);
    size_t bytes = size * n;
    // Exceptions must not cross libcurl's C frames: park them and stop the transfer by returning 0.
    try {
      if (s->response.status >= 300 && s->response.status < 400) return bytes;  // a redirect's own body
      if (s->streaming && s->final_2xx()) {
        s->start_stream();
        (*s->on_data)(buf, bytes);
        return bytes;
      }
      if (s->response.body.size() + bytes > kMaxBodyBytes) {
        s->too_large = true;
        return 0;
      }
      s->response.body.append(buf, bytes);
      return bytes;
    } catch (...) {
      s->error = std::current_exception();
      return 0;
    }
  }
};

HttpClient::HttpClient(long connect_timeout_s, long stall_timeout_s) : state_(std::make_unique<State>()) {
  global_init();
  state_->curl = curl_easy_init();
  if (!state_->curl) throw HubError(HubErrorKind::kNetwork, "libcurl could not create a handle");
  state_->connect_timeout_s = connect_timeout_s;
  state_->stall_timeout_s = stall_timeout_s;
}

HttpClient::~HttpClient() {
  if (state_ && state_->curl) curl_easy_cleanup(state_->curl);
}

namespace {

// Options common to every request. curl_easy_reset keeps the connection cache, so keep-alive still works.
void setup(CURL* curl, HttpClient::State* s, const std::string& url, curl_slist* headers) {
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "loom/" LOOM_VERSION);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, s->errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM-based DNS timeouts: threads may call us
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, s->connect_timeout_s);
  // A transfer that receives less than 1 byte/s for stall_timeout_s seconds is broken; resuming is cheaper.
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, s->stall_timeout_s);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &HttpClient::State::on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, s);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &HttpClient::State::on_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, s);
}

struct SlistGuard {
  curl_slist* list = nullptr;
  explicit SlistGuard(const std::vector<std::string>& headers) {
    for (const auto& h : headers) {
      curl_slist* next = curl_slist_append(list, h.c_str());
      if (!next) throw HubError(HubErrorKind::kNetwork, "out of memory building request headers");
      list = next;
    }
  }
  ~SlistGuard() { curl_slist_free_all(list); }
};

TransferStatus classify(CURLcode code, bool got_status) {
  switch (code) {
    case CURLE_OK:
      return TransferStatus::kOk;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_NOT_BUILT_IN:
      return TransferStatus::kFatal;
    default:
      // Everything else is a network condition (resolve, connect, reset, stall, truncated body): whether
      // it is worth resuming depends on whether the server had started answering.
      return got_status ? TransferStatus::kBroken : TransferStatus::kUnreachable;
  }
}

TransferResult finish(CURLcode code, HttpClient::State* s) {
  if (s->error) std::rethrow_exception(s->error);
  TransferResult r;
  if (s->too_large) {
    r.status = TransferStatus::kFatal;
    r.error = "response body larger than " + std::to_string(kMaxBodyBytes >> 20) + " MiB";
  } else {
    r.status = classify(code, s->got_status);
    if (code != CURLE_OK) r.error = s->errbuf[0] ? std::string(s->errbuf) : std::string(curl_easy_strerror(code));
  }
  r.response = std::move(s->response);
  return r;
}

}  // namespace

TransferResult HttpClient::request(const std::string& url, const std::vector<std::string>& headers, bool head,
                                   bool follow, long total_timeout_s) {
  State* s = state_.get();
  SlistGuard list(headers);
  s->begin(url);
  setup(s->curl, s, url, list.list);
  if (head) curl_easy_setopt(s->curl, CURLOPT_NOBODY, 1L);
  if (follow) {
    curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(s->curl, CURLOPT_MAXREDIRS, 10L);
  }
  if (total_timeout_s > 0) curl_easy_setopt(s->curl, CURLOPT_TIMEOUT, total_timeout_s);
  CURLcode code = curl_easy_perform(s->curl);
  return finish(code, s);
}

TransferResult HttpClient::stream(const std::string& url, const std::vector<std::string>& headers,
                                  const StartFn& on_start, const DataFn& on_data) {
  State* s = state_.get();
  SlistGuard list(headers);
  s->begin(url);
  s->streaming = true;
  s->on_start = &on_start;
  s->on_data = &on_data;
  setup(s->curl, s, url, list.list);
  curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(s->curl, CURLOPT_MAXREDIRS, 10L);
  // Default, stated for the reader: a custom Authorization header never follows a redirect to another host
  // (the CDN URL is pre-signed and must not see the user's token).
  curl_easy_setopt(s->curl, CURLOPT_UNRESTRICTED_AUTH, 0L);
  CURLcode code = curl_easy_perform(s->curl);
  if (code == CURLE_OK && !s->error) {
    // An empty 2xx body never reached on_write; the caller still has to see the answer.
    try {
      s->start_stream();
    } catch (...) {
      s->error = std::current_exception();
    }
  }
  return finish(code, s);
}

std::string url_quote(std::string_view s, std::string_view safe) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    bool keep = std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~' ||
                (c < 0x80 && safe.find(static_cast<char>(c)) != std::string_view::npos);
    if (keep) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string url_origin(std::string_view url) {
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return std::string();
  std::string scheme = lower(url.substr(0, sep));
  std::string_view rest = url.substr(sep + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  std::string host = lower(rest);
  // A port is the digits after the last ':' outside an IPv6 literal's brackets.
  size_t colon = host.rfind(':');
  bool has_port = colon != std::string::npos && host.find(']', colon) == std::string::npos;
  if (!has_port) host += scheme == "https" ? ":443" : ":80";
  return scheme + "://" + host;
}

}  // namespace loom::hub::detail
