// A small blocking HTTP client on libcurl, just what the Hub download needs (private to src/hub).
#pragma once

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace dual_attention::hub::detail {

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased; of the last response only
  std::string url;                             // the URL that gave this response
  std::string body;                            // error bodies only (capped), never file contents

  const std::string* header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? nullptr : &it->second;
  }
  bool is_redirect() const;
};

// Receives the body of a 200 / 206 response. begin() is called once per response, before its first
// byte (or at its end when it has no body); a false return from write() aborts the transfer.
struct BodySink {
  std::function<void(const HttpResponse&)> begin;
  std::function<bool(const char* data, size_t size)> write;
};

struct HttpRequest {
  std::string method = "GET";  // GET or HEAD
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  bool follow_redirects = false;
  long connect_timeout_s = 10;
  long total_timeout_s = 0;  // 0: none
  long stall_timeout_s = 0;  // abort when no byte arrives for this long; 0: never
  BodySink* sink = nullptr;  // for GET
};

// The transfer itself failed (no HTTP answer, or the connection broke mid-body).
class TransferError : public std::runtime_error {
 public:
  enum class Kind { kUnreachable, kTimeout, kDropped, kAborted, kOther };
  TransferError(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  Kind kind;
};

// Performs the request; throws TransferError when no complete HTTP answer came back.
HttpResponse http_request(const HttpRequest& request);

// "libcurl/8.x.y", for the User-Agent.
std::string libcurl_version();

// ---- URLs --------------------------------------------------------------------------------------
struct Origin {
  std::string scheme, host;
  int port = 0;
  bool operator==(const Origin& o) const {
    return scheme == o.scheme && host == o.host && port == o.port;
  }
};
Origin url_origin(const std::string& url);
// `location` resolved against `base` (absolute, scheme-relative, absolute-path or relative).
std::string url_join(const std::string& base, const std::string& location);
// Percent-encodes every byte outside A-Z a-z 0-9 _ . - ~ and the characters in `safe`.
std::string url_quote(const std::string& text, const std::string& safe);

}  // namespace dual_attention::hub::detail
