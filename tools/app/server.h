// The local web app and JSON API of `dual-attention serve`, on cpp-httplib:
//
//   GET  /                 the app: a prompt, sampling settings, streamed generation, and the
//                          views of viz on the prompt and its continuation
//   GET  /health           {"status": "ok", "model": name}
//   GET  /v1/models        OpenAI's model list (the one model served)
//   POST /v1/completions   OpenAI's completions API (completion_request.h): returns
//                          {"id", "object": "text_completion", "created", "model",
//                           "choices": [{"text", "index": 0, "logprobs": null, "finish_reason"}],
//                           "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}};
//                          with "stream": true, Server-Sent Events "data: {chunk}\n\n", each chunk
//                          a text_completion object whose choices[0].text is the new text, the
//                          last one with finish_reason and usage, then "data: [DONE]\n\n"
//   POST /v1/visualize     {"prompt"} -> the views' payload (views.h) for the prompt's tokens
//
// One model, one request at a time: requests wait for the model in arrival order (a mutex), so
// their generations never interleave. Errors are JSON bodies {"error": {...}} with a 4xx/5xx
// status, and the server keeps serving.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "completion_request.h"
#include "session.h"

namespace dual_attention::app {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::bind)
  RequestLimits limits;
  int threads = 16;  // connections served at once (requests beyond the model's one wait)
  bool log = true;   // one line per request on stderr
};

class Server {
 public:
  Server(LanguageModelSession& session, ServerOptions options);
  ~Server();
  // Binds the socket; returns the port (the chosen one when options.port is 0). Throws
  // std::runtime_error when the address cannot be bound.
  int bind();
  // Serves until stop(); returns false if the server failed.
  bool listen();
  // Thread-safe; makes listen() return.
  void stop();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dual_attention::app
