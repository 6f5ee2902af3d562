#include "server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "views.h"

namespace dual_attention::app {

using json = nlohmann::json;

struct Server::State {
  LanguageModelSession& session;
  ServerOptions options;
  httplib::Server http;
  std::mutex model;  // one request at a time uses the model
  std::atomic<int64_t> next_id{0};
  int port = -1;

  State(LanguageModelSession& s, ServerOptions o) : session(s), options(std::move(o)) {}
};

namespace {

std::string dump(const json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, const RequestError& error) {
  res.status = error.status;
  res.set_content(error.to_json(), "application/json");
}

RequestError error(int status, std::string message, std::string param = "",
                   std::string type = "invalid_request_error") {
  RequestError e;
  e.status = status;
  e.message = std::move(message);
  e.param = std::move(param);
  e.type = std::move(type);
  return e;
}

// The prompt's token ids: the ids given, or the text encoded; an error when there are none, when
// an id is not in the vocabulary, or when there are more than the model's context.
std::variant<std::vector<int64_t>, RequestError> prompt_ids(
    LanguageModelSession& session, const std::string& text,
    const std::optional<std::vector<int64_t>>& tokens) {
  std::vector<int64_t> ids;
  if (tokens) {
    ids = *tokens;
    for (auto id : ids)
      if (id >= session.vocab_size())
        return error(400,
                     "'prompt' token id " + std::to_string(id) + " is not in [0, " +
                         std::to_string(session.vocab_size()) + ")",
                     "prompt");
  } else {
    try {
      ids = session.codec->encode(text);
    } catch (const std::exception& e) {
      return error(400, std::string("'prompt' cannot be tokenized: ") + e.what(), "prompt");
    }
  }
  if (ids.empty()) return error(400, "'prompt' has no tokens", "prompt");
  if (static_cast<int64_t>(ids.size()) > session.max_block_size())
    return error(400,
                 "'prompt' is " + std::to_string(ids.size()) +
                     " tokens, more than the model's context of " +
                     std::to_string(session.max_block_size()),
                 "prompt");
  return ids;
}

// 404 when the request names another model than the one served.
std::optional<RequestError> check_model(const LanguageModelSession& session,
                                        const std::optional<std::string>& model) {
  if (!model || *model == session.name) return std::nullopt;
  return error(
      404, "the model '" + *model + "' does not exist; this server serves '" + session.name + "'",
      "model", "invalid_request_error");
}

json completion_object(const std::string& id, int64_t created, const std::string& model,
                       const std::string& text, const json& finish_reason) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"text", text},
                                    {"index", 0},
                                    {"logprobs", nullptr},
                                    {"finish_reason", finish_reason}}})}};
}

json usage(const Completion& c) {
  return {{"prompt_tokens", c.prompt_tokens},
          {"completion_tokens", c.completion_tokens},
          {"total_tokens", c.prompt_tokens + c.completion_tokens}};
}

}  // namespace

Server::Server(LanguageModelSession& session, ServerOptions options)
    : state_(std::make_unique<State>(session, std::move(options))) {
  State& s = *state_;
  auto& http = s.http;
  const int threads = std::max(2, s.options.threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(s.options.limits.max_body_bytes);

  // Any error response without a body of its own (unknown path: 404, body too large: 413, ...)
  // gets an OpenAI-style JSON error.
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string message = "HTTP status " + std::to_string(res.status);
        if (res.status == 404) message = "no such endpoint: " + req.method + " " + req.path;
        if (res.status == 413) message = "request body is larger than the limit";
        send_error(res, error(res.status, message));
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const c10::Error& e) {
          message = e.what_without_backtrace();
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_error(res, error(500, message, "", "server_error"));
      });
  if (s.options.log) {
    http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      std::cerr << req.method << " " << req.path << " " << res.status << "\n";
    });
  }

  http.Get("/", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_content(app_html({{"model", s.session.name}}, "dual-attention: " + s.session.name),
                    "text/html; charset=utf-8");
  });
  http.Get("/health", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"status", "ok"},
                          {"model", s.session.name},
                          {"model_class", s.session.model_class()},
                          {"tokenizer", s.session.codec->name()}}),
                    "application/json");
  });
  http.Get("/v1/models", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"object", "list"},
                          {"data", json::array({{{"id", s.session.name},
                                                 {"object", "model"},
                                                 {"created", 0},
                                                 {"owned_by", "dual-attention"}}})}}),
                    "application/json");
  });

  http.Post("/v1/completions", [&s](const httplib::Request& req, httplib::Response& res) {
    auto parsed = parse_completion_request(req.body, s.options.limits);
    if (auto* e = std::get_if<RequestError>(&parsed)) return send_error(res, *e);
    const auto request = std::get<CompletionRequest>(std::move(parsed));
    if (auto e = check_model(s.session, request.model)) return send_error(res, *e);
    auto ids = prompt_ids(s.session, request.prompt, request.prompt_tokens);
    if (auto* e = std::get_if<RequestError>(&ids)) return send_error(res, *e);
    const auto prompt = std::get<std::vector<int64_t>>(std::move(ids));

    SamplingOptions sampling;
    sampling.max_new_tokens = request.max_tokens;
    sampling.temperature = request.temperature;
    sampling.top_k = request.top_k;
    sampling.top_p = request.top_p;
    sampling.seed = request.seed;
    sampling.stop = request.stop;
    const std::string id = "cmpl-" + std::to_string(s.next_id++);
    const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
    const std::string model = s.session.name;

    if (!request.stream) {
      std::lock_guard<std::mutex> lock(s.model);
      const auto c = s.session.complete(prompt, sampling);
      auto body = completion_object(id, created, model, c.text, c.finish_reason);
      body["usage"] = usage(c);
      return res.set_content(dump(body), "application/json");
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [&s, prompt, sampling, id, created,
                                                           model](size_t, httplib::DataSink& sink) {
      auto send = [&sink](const std::string& data) {
        const std::string event = "data: " + data + "\n\n";
        return sink.write(event.data(), event.size());
      };
      std::lock_guard<std::mutex> lock(s.model);
      try {
        const auto c = s.session.complete(prompt, sampling, [&](const std::string& piece) {
          return send(dump(completion_object(id, created, model, piece, nullptr)));
        });
        if (c.finish_reason != "abort") {
          auto last = completion_object(id, created, model, "", c.finish_reason);
          last["usage"] = usage(c);
          send(dump(last));
          send("[DONE]");
        }
      } catch (const std::exception& e) {
        send(error(500, e.what(), "", "server_error").to_json());
        send("[DONE]");
      }
      sink.done();
      return true;
    });
  });

  http.Post("/v1/visualize", [&s](const httplib::Request& req, httplib::Response& res) {
    auto parsed = parse_visualize_request(req.body, s.options.limits);
    if (auto* e = std::get_if<RequestError>(&parsed)) return send_error(res, *e);
    const auto request = std::get<VisualizeRequest>(std::move(parsed));
    if (auto e = check_model(s.session, request.model)) return send_error(res, *e);
    auto ids = prompt_ids(s.session, request.prompt, request.prompt_tokens);
    if (auto* e = std::get_if<RequestError>(&ids)) return send_error(res, *e);
    const auto& tokens = std::get<std::vector<int64_t>>(ids);
    std::lock_guard<std::mutex> lock(s.model);
    res.set_content(dump(s.session.visualize(tokens, static_cast<int64_t>(tokens.size()))),
                    "application/json");
  });
}

Server::~Server() = default;

int Server::bind() {
  auto& s = *state_;
  if (s.options.port == 0) {
    s.port = s.http.bind_to_any_port(s.options.host);
  } else {
    s.port = s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1;
  }
  if (s.port < 0)
    throw std::runtime_error("cannot listen on " + s.options.host + ":" +
                             std::to_string(s.options.port) +
                             " (address in use, or not an address of this machine)");
  return s.port;
}

bool Server::listen() { return state_->http.listen_after_bind(); }

void Server::stop() { state_->http.stop(); }

}  // namespace dual_attention::app
