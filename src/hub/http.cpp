#include "http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <memory>
#include <mutex>

namespace dual_attention::hub::detail {
namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;

bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-' || c == '~';
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// State shared by the libcurl callbacks of one transfer.
struct Transfer {
  CURL* curl = nullptr;
  const HttpRequest* request = nullptr;
  HttpResponse response;
  bool body_started = false;  // begin() called for the current response
  bool sink_refused = false;  // write() returned false
  std::exception_ptr error;   // thrown by a callback: carried across libcurl, rethrown after

  long current_status() const {
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    return status;
  }
  bool streams_to_sink() const {
    return request->sink && (response.status == 200 || response.status == 206);
  }
  void start_body() {
    if (body_started) return;
    body_started = true;
    response.status = current_status();
    char* url = nullptr;
    curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &url);
    if (url) response.url = url;
    if (streams_to_sink() && request->sink->begin) request->sink->begin(response);
  }
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a redirect or a 100 Continue)
    t->response.headers.clear();
    t->body_started = false;
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    t->response.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * count;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  try {  // no exception may unwind through libcurl's C frames
    t->start_body();
    if (t->streams_to_sink()) {
      if (!t->request->sink->write(data, n)) {
        t->sink_refused = true;
        return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
      }
    } else if (t->response.body.size() < kMaxErrorBody) {
      t->response.body.append(data, std::min(n, kMaxErrorBody - t->response.body.size()));
    }
  } catch (...) {
    t->error = std::current_exception();
    return 0;
  }
  return n;
}

TransferError::Kind classify(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return TransferError::Kind::kUnreachable;
    case CURLE_OPERATION_TIMEDOUT:
      return TransferError::Kind::kTimeout;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
      return TransferError::Kind::kDropped;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
      return TransferError::Kind::kAborted;
    default:
      return TransferError::Kind::kOther;
  }
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

bool HttpResponse::is_redirect() const {
  return (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) &&
         header("location") != nullptr;
}

HttpResponse http_request(const HttpRequest& request) {
  global_init();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw TransferError(TransferError::Kind::kOther, "curl_easy_init failed");
  struct curl_slist* header_list = nullptr;
  for (const auto& h : request.headers) header_list = curl_slist_append(header_list, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(header_list,
                                                                      curl_slist_free_all);

  Transfer t;
  t.curl = curl.get();
  t.request = &request;
  char error_buffer[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(c, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
  if (request.method == "HEAD") curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  // libcurl drops a custom Authorization header when a redirect leaves the host (unless
  // CURLOPT_UNRESTRICTED_AUTH), which is what the Hub's CDN redirects need.
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, request.connect_timeout_s);
  if (request.total_timeout_s > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT, request.total_timeout_s);
  if (request.stall_timeout_s > 0) {
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, request.stall_timeout_s);
  }
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

  CURLcode code = curl_easy_perform(c);
  if (t.error) std::rethrow_exception(t.error);
  if (code == CURLE_OK) {
    t.start_body();  // a response without a body still gets its begin()
    return std::move(t.response);
  }
  std::string message = error_buffer[0] ? error_buffer : curl_easy_strerror(code);
  if (t.sink_refused) throw TransferError(TransferError::Kind::kAborted, message);
  throw TransferError(classify(code), message);
}

std::string libcurl_version() {
  return std::string("libcurl/") + curl_version_info(CURLVERSION_NOW)->version;
}

// ---- URLs --------------------------------------------------------------------------------------

Origin url_origin(const std::string& url) {
  Origin o;
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return o;
  o.scheme = lower(url.substr(0, scheme_end));
  size_t host_begin = scheme_end + 3;
  size_t authority_end = url.find_first_of("/?#", host_begin);
  std::string authority =
      url.substr(host_begin, authority_end == std::string::npos ? std::string::npos
                                                                : authority_end - host_begin);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  std::string port;
  if (!authority.empty() && authority[0] == '[') {  // [IPv6]:port
    size_t close = authority.find(']');
    o.host = authority.substr(0, close + 1);
    if (close != std::string::npos && close + 1 < authority.size() && authority[close + 1] == ':')
      port = authority.substr(close + 2);
  } else if (auto colon = authority.rfind(':'); colon != std::string::npos) {
    o.host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  } else {
    o.host = authority;
  }
  o.host = lower(o.host);
  if (!port.empty() && std::all_of(port.begin(), port.end(), ::isdigit) && port.size() < 6) {
    o.port = std::stoi(port);
  } else {
    o.port = o.scheme == "https" ? 443 : o.scheme == "http" ? 80 : 0;
  }
  return o;
}

std::string url_join(const std::string& base, const std::string& location) {
  if (location.find("://") != std::string::npos &&
      location.find("://") < location.find_first_of("/?#"))
    return location;
  size_t scheme_end = base.find("://");
  std::string scheme = base.substr(0, scheme_end);
  if (location.rfind("//", 0) == 0) return scheme + ":" + location;
  size_t path_begin = base.find('/', scheme_end + 3);
  std::string origin = path_begin == std::string::npos ? base : base.substr(0, path_begin);
  if (!location.empty() && location[0] == '/') return origin + location;
  std::string path = path_begin == std::string::npos ? "/" : base.substr(path_begin);
  path = path.substr(0, path.find_first_of("?#"));
  return origin + path.substr(0, path.rfind('/') + 1) + location;
}

std::string url_quote(const std::string& text, const std::string& safe) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (is_unreserved(c) || safe.find(static_cast<char>(c)) != std::string::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace dual_attention::hub::detail
