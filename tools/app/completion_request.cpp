#include "completion_request.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <type_traits>

namespace dual_attention::app {
namespace {

using json = nlohmann::json;

RequestError bad(std::string message, std::string param = "", int status = 400) {
  RequestError e;
  e.status = status;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

// The JSON type of a value, as the error messages name it.
std::string type_name(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

// Nesting depth of the JSON text (brackets outside strings), checked before parsing so that no
// input can make the parser or the value's destructor recurse deeply.
bool nested_deeper_than(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// The body as a JSON object, or the error.
std::variant<json, RequestError> parse_object(std::string_view body, const RequestLimits& limits) {
  if (body.size() > limits.max_body_bytes)
    return bad("request body is " + std::to_string(body.size()) +
                   " bytes, more than the limit of " + std::to_string(limits.max_body_bytes),
               "", 413);
  if (nested_deeper_than(body, limits.max_depth))
    return bad("request body nests JSON deeper than " + std::to_string(limits.max_depth) +
               " levels");
  json value = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return bad("request body is not valid JSON");
  if (!value.is_object()) return bad("request body must be a JSON object, got " + type_name(value));
  return value;
}

// Reads the optional field `key` of `object` into `out` when present and not null; returns an
// error message when it has the wrong type.
template <class T>
std::optional<RequestError> read_field(const json& object, const char* key, T& out,
                                       const char* expected) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  bool ok = false;
  if constexpr (std::is_same_v<T, bool>)
    ok = it->is_boolean();
  else if constexpr (std::is_same_v<T, std::string>)
    ok = it->is_string();
  else if constexpr (std::is_same_v<T, double>)
    ok = it->is_number();
  else if constexpr (std::is_same_v<T, int64_t>) {
    // 3.0 is accepted as 3 (JSON has one number type); 3.5 is not.
    ok = it->is_number_integer() ||
         (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() &&
          std::abs(it->get<double>()) < 9e15);
  }
  if (!ok)
    return bad(std::string("'") + key + "' must be " + expected + ", got " + type_name(*it), key);
  if constexpr (std::is_same_v<T, int64_t>) {
    out = it->is_number_integer() ? it->get<int64_t>() : static_cast<int64_t>(it->get<double>());
  } else {
    out = it->get<T>();
  }
  return std::nullopt;
}

template <class T>
std::optional<RequestError> read_optional(const json& object, const char* key,
                                          std::optional<T>& out, const char* expected) {
  T value{};
  if (auto error = read_field(object, key, value, expected)) return error;
  auto it = object.find(key);
  if (it != object.end() && !it->is_null()) out = value;
  return std::nullopt;
}

// "prompt": a string (at most max_prompt_bytes) or an array of token ids (integers >= 0).
std::optional<RequestError> read_prompt(const json& object, std::string& text,
                                        std::optional<std::vector<int64_t>>& tokens,
                                        const RequestLimits& limits) {
  auto it = object.find("prompt");
  if (it == object.end() || it->is_null()) return bad("'prompt' is required", "prompt");
  if (it->is_string()) {
    text = it->get<std::string>();
    if (text.size() > limits.max_prompt_bytes)
      return bad("'prompt' is " + std::to_string(text.size()) + " bytes, more than the limit of " +
                     std::to_string(limits.max_prompt_bytes),
                 "prompt");
    return std::nullopt;
  }
  if (it->is_array()) {
    if (it->size() > limits.max_prompt_tokens)
      return bad("'prompt' has " + std::to_string(it->size()) +
                     " token ids, more than the limit of " +
                     std::to_string(limits.max_prompt_tokens),
                 "prompt");
    std::vector<int64_t> ids;
    for (const auto& v : *it) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        return bad(
            "'prompt' must be a string or an array of token ids (integers >= 0); the array "
            "holds " +
                v.dump(),
            "prompt");
      ids.push_back(v.get<int64_t>());
    }
    tokens = std::move(ids);
    return std::nullopt;
  }
  return bad("'prompt' must be a string or an array of token ids, got " + type_name(*it), "prompt");
}

}  // namespace

std::string RequestError::to_json() const {
  return json{{"error",
               {{"message", message},
                {"type", type},
                {"param", param.empty() ? json(nullptr) : json(param)},
                {"code", nullptr}}}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

std::variant<CompletionRequest, RequestError> parse_completion_request(
    std::string_view body, const RequestLimits& limits) {
  auto parsed = parse_object(body, limits);
  if (auto* error = std::get_if<RequestError>(&parsed)) return *error;
  const json& o = std::get<json>(parsed);
  CompletionRequest r;
  std::optional<int64_t> top_k, n, best_of;
  for (auto error :
       {read_optional(o, "model", r.model, "a string"),
        read_prompt(o, r.prompt, r.prompt_tokens, limits),
        read_field(o, "max_tokens", r.max_tokens, "an integer"),
        read_field(o, "temperature", r.temperature, "a number"),
        read_optional(o, "top_k", top_k, "an integer"), read_field(o, "top_p", r.top_p, "a number"),
        read_optional(o, "seed", r.seed, "an integer"),
        read_field(o, "stream", r.stream, "a boolean"), read_optional(o, "n", n, "an integer"),
        read_optional(o, "best_of", best_of, "an integer")}) {
    if (error) return *error;
  }
  if (r.max_tokens < 0)
    return bad("'max_tokens' must be >= 0, got " + std::to_string(r.max_tokens), "max_tokens");
  if (r.max_tokens > limits.max_tokens)
    return bad("'max_tokens' is " + std::to_string(r.max_tokens) + ", more than the limit of " +
                   std::to_string(limits.max_tokens),
               "max_tokens");
  if (!(r.temperature >= 0.0) || !std::isfinite(r.temperature))
    return bad("'temperature' must be a finite number >= 0 (0 = greedy), got " +
                   o.at("temperature").dump(),
               "temperature");
  if (!(r.top_p > 0.0 && r.top_p <= 1.0))
    return bad("'top_p' must be in (0, 1], got " + o.at("top_p").dump(), "top_p");
  if (top_k && *top_k < 0)
    return bad("'top_k' must be >= 0 (0 = no top-k), got " + std::to_string(*top_k), "top_k");
  if (top_k && *top_k > 0) r.top_k = top_k;
  if (n && *n != 1) return bad("'n' must be 1 (one completion per request)", "n");
  if (best_of && *best_of != 1) return bad("'best_of' must be 1", "best_of");

  if (auto it = o.find("stop"); it != o.end() && !it->is_null()) {
    if (it->is_string()) {
      r.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) return bad("'stop' must be a string or an array of strings", "stop");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      return bad("'stop' must be a string or an array of strings, got " + type_name(*it), "stop");
    }
    if (r.stop.size() > limits.max_stop)
      return bad("'stop' has " + std::to_string(r.stop.size()) +
                     " sequences, more than the limit of " + std::to_string(limits.max_stop),
                 "stop");
    for (const auto& s : r.stop) {
      if (s.empty()) return bad("'stop' sequences must not be empty", "stop");
      if (s.size() > limits.max_stop_bytes)
        return bad(
            "a 'stop' sequence is longer than " + std::to_string(limits.max_stop_bytes) + " bytes",
            "stop");
    }
  }
  return r;
}

std::variant<VisualizeRequest, RequestError> parse_visualize_request(std::string_view body,
                                                                     const RequestLimits& limits) {
  auto parsed = parse_object(body, limits);
  if (auto* error = std::get_if<RequestError>(&parsed)) return *error;
  const json& o = std::get<json>(parsed);
  VisualizeRequest r;
  if (auto error = read_optional(o, "model", r.model, "a string")) return *error;
  if (auto error = read_prompt(o, r.prompt, r.prompt_tokens, limits)) return *error;
  return r;
}

}  // namespace dual_attention::app
