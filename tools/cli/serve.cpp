// dual-attention serve [MODEL] [--host 127.0.0.1] [--port 8080]: the local web app and the
// OpenAI-compatible JSON API (tools/app/server.h).
#include <csignal>
#include <iostream>

#include "../app/server.h"
#include "../app/session.h"
#include "cli.h"

namespace dual_attention::cli {
namespace {

app::Server* running = nullptr;

void stop_on_signal(int) {
  if (running) running->stop();
}

int64_t integer_option(const ArgParser& parser, const std::string& name, int64_t fallback,
                       int64_t lo, int64_t hi) {
  const auto value = parser.value(name);
  if (!value) return fallback;
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(*value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value->size() || v < lo || v > hi)
    throw UsageError(name + " must be an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got '" + *value + "'");
  return v;
}

int run_serve(const std::vector<std::string>& args) {
  ArgParser parser(
      "dual-attention serve",
      "Serves a language model: a web app (generation with streamed tokens, and the views of "
      "`viz`\non the prompt and its continuation) at http://HOST:PORT/, and an "
      "OpenAI-compatible API:\nGET /health, GET /v1/models, POST /v1/completions (stream: "
      "Server-Sent Events),\nPOST /v1/visualize. Requests are served one at a time in arrival "
      "order. See docs/model_analysis.md.",
      {kModelArgument},
      {{"--host", "HOST", "address to listen on (default: 127.0.0.1, this machine only)"},
       {"--port", "PORT", "port (default: 8080; 0 picks a free one)"},
       kTokenizerOption,
       {"--max-body-bytes", "N", "largest request body (default: 1048576)"},
       {"--max-prompt-bytes", "N", "largest text prompt (default: 65536)"},
       {"--max-tokens", "N", "largest max_tokens of a request (default: 4096)"},
       {"--threads", "N", "connections served at once (default: 16)"},
       {"--quiet", "", "no request log"}});
  if (!parser.parse(args)) return 0;  // --help
  app::ServerOptions options;
  options.host = parser.value("--host").value_or("127.0.0.1");
  options.port = static_cast<int>(integer_option(parser, "--port", 8080, 0, 65535));
  options.limits.max_body_bytes =
      integer_option(parser, "--max-body-bytes", options.limits.max_body_bytes, 64, 1LL << 30);
  options.limits.max_prompt_bytes =
      integer_option(parser, "--max-prompt-bytes", options.limits.max_prompt_bytes, 1, 1LL << 30);
  options.limits.max_tokens =
      integer_option(parser, "--max-tokens", options.limits.max_tokens, 0, 1LL << 20);
  options.threads = static_cast<int>(integer_option(parser, "--threads", 16, 2, 1024));
  options.log = !parser.flag("--quiet");

  const std::string model = parser.positionals().empty() ? "" : parser.positionals()[0];
  app::LanguageModelSession session(model, parser.value("--tokenizer"));
  app::Server server(session, options);
  const int port = server.bind();
  // The line a test (or a user) waits for.
  std::cout << "serving " << session.name << " (" << session.model_class() << ", tokenizer "
            << session.codec->name() << ") at http://" << options.host << ":" << port << "/"
            << std::endl;
  running = &server;
  std::signal(SIGINT, stop_on_signal);
  std::signal(SIGTERM, stop_on_signal);
  const bool ok = server.listen();
  running = nullptr;
  return ok ? 0 : 1;
}

}  // namespace

Command serve_command() {
  return {"serve", "serve a model: web app and OpenAI-compatible API", run_serve};
}

}  // namespace dual_attention::cli
