// The request bodies of `dual-attention serve`'s JSON API, parsed and validated without any server
// state (so that a fuzzer can call the parsers directly):
//
//   POST /v1/completions  OpenAI's legacy completions request (what llama.cpp's server also takes):
//     {"model": str, "prompt": str | [token ids], "max_tokens": int >= 0 (default 16),
//      "temperature": number >= 0 (default 1; 0 = greedy), "top_k": int >= 0 (0 = off),
//      "top_p": number in (0, 1] (default 1), "seed": int, "stop": str | [str, ...] (at most 4),
//      "stream": bool (default false)}
//     Other fields are ignored, as OpenAI-compatible servers do, except "n" and "best_of", which
//     must be 1 when given (one completion per request).
//   POST /v1/visualize    {"model": str, "prompt": str | [token ids]}
//
// Errors are values (never exceptions): a status (400 bad request, 413 body too large) and an
// OpenAI-style error object {"error": {"message", "type", "param", "code"}}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace dual_attention::app {

struct RequestLimits {
  size_t max_body_bytes = 1 << 20;     // 413 above
  size_t max_prompt_bytes = 1 << 16;   // UTF-8 bytes of a text prompt
  size_t max_prompt_tokens = 1 << 14;  // entries of a token-id prompt
  int64_t max_tokens = 4096;           // the largest max_tokens accepted
  size_t max_stop = 4;                 // stop sequences
  size_t max_stop_bytes = 256;         // bytes of one stop sequence
  int max_depth = 32;                  // JSON nesting
};

struct CompletionRequest {
  std::optional<std::string> model;
  std::string prompt;                                 // the text prompt, or
  std::optional<std::vector<int64_t>> prompt_tokens;  // token ids given instead
  int64_t max_tokens = 16;
  double temperature = 1.0;
  std::optional<int64_t> top_k;  // unset or 0: no top-k
  double top_p = 1.0;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
};

struct VisualizeRequest {
  std::optional<std::string> model;
  std::string prompt;
  std::optional<std::vector<int64_t>> prompt_tokens;
};

struct RequestError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, or empty
  // {"error": {"message", "type", "param" (null when empty), "code": null}} as JSON text.
  std::string to_json() const;
};

std::variant<CompletionRequest, RequestError> parse_completion_request(
    std::string_view body, const RequestLimits& limits = {});

std::variant<VisualizeRequest, RequestError> parse_visualize_request(
    std::string_view body, const RequestLimits& limits = {});

}  // namespace dual_attention::app
