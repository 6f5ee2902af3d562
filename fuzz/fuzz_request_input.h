// What fuzz_completion_request does with one input (see fuzz_inputs.h, which includes this):
// apart, because the request parsers need neither LibTorch nor the library, so that target links
// without them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>

#include "completion_request.h"

namespace dual_attention::fuzz {

// An invariant a fuzz target checks failed: print it and abort, so that libFuzzer (or the
// regression test) reports the input as a finding.
[[noreturn]] inline void invariant_failed(const char* what) {
  std::fprintf(stderr, "fuzz invariant failed: %s\n", what);
  std::abort();
}

// A request body of `dual-attention serve`'s JSON API (tools/app/completion_request.h), through
// both parsers with the default limits and with small ones. The parsers return errors as values;
// each error's to_json() must be a JSON object holding the message.
inline void parse_request_input(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  app::RequestLimits small;
  small.max_body_bytes = 256;
  small.max_prompt_bytes = 16;
  small.max_prompt_tokens = 4;
  small.max_tokens = 8;
  small.max_stop = 1;
  small.max_stop_bytes = 4;
  small.max_depth = 3;
  auto check_error = [](const app::RequestError& error) {
    if (error.status != 400 && error.status != 413) invariant_failed("request error status");
    const auto json = nlohmann::json::parse(error.to_json(), nullptr, false);
    if (!json.is_object() || !json.contains("error") || !json["error"].is_object() ||
        json["error"].value("message", std::string()) != error.message)
      invariant_failed("RequestError::to_json() is not {\"error\": {\"message\": ...}}");
  };
  for (const app::RequestLimits& limits : {app::RequestLimits(), small}) {
    auto completion = app::parse_completion_request(body, limits);
    if (auto* error = std::get_if<app::RequestError>(&completion)) {
      check_error(*error);
    } else {
      const auto& request = std::get<app::CompletionRequest>(completion);
      if (request.max_tokens < 0 || request.max_tokens > limits.max_tokens)
        invariant_failed("max_tokens outside [0, limit] accepted");
      if (!(request.temperature >= 0) || !(request.top_p > 0 && request.top_p <= 1))
        invariant_failed("temperature or top_p out of range accepted");
      if (request.stop.size() > limits.max_stop)
        invariant_failed("too many stop sequences accepted");
      for (const auto& stop : request.stop)
        if (stop.size() > limits.max_stop_bytes)
          invariant_failed("stop sequence over the limit accepted");
      if (request.prompt.size() > limits.max_prompt_bytes)
        invariant_failed("prompt over the limit accepted");
      if (request.prompt_tokens && request.prompt_tokens->size() > limits.max_prompt_tokens)
        invariant_failed("token prompt over the limit accepted");
    }
    auto visualize = app::parse_visualize_request(body, limits);
    if (auto* error = std::get_if<app::RequestError>(&visualize)) check_error(*error);
  }
}

}  // namespace dual_attention::fuzz
