// dual-attention viz [MODEL] --prompt TEXT -o out.html: one self-contained HTML page showing the
// model's attention scores, relations and symbol assignments on the prompt (tools/app/views.h).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "../app/session.h"
#include "../app/views.h"
#include "cli.h"

namespace dual_attention::cli {
namespace {

// Writes `text` to a temporary file next to `path`, then renames it over `path`.
void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

int run_viz(const std::vector<std::string>& args) {
  ArgParser parser(
      "dual-attention viz",
      "Runs a language model on a prompt and writes one self-contained HTML page (no network "
      "needed\nto open it) with a head view, a model view and a symbol-assignment view of its "
      "self-attention\nscores, relational-attention scores and relations (four relation "
      "post-processors, a scale\nfactor, relations scaled by a chosen head's attention). "
      "Weights are quantised to 8 bits\nper matrix for display (docs/model_analysis.md).",
      {kModelArgument},
      {{"--prompt", "TEXT", "the text to run the model on"},
       {"--tokens", "IDS", "token ids instead of a prompt, e.g. 464,3290,318"},
       kTokenizerOption,
       {"-o", "FILE", "the HTML file to write (default: viz.html)"},
       {"--title", "TEXT", "the page title (default: the model name)"}});
  if (!parser.parse(args)) return 0;  // --help
  const auto prompt = parser.value("--prompt");
  const auto tokens = parser.value("--tokens");
  if (prompt.has_value() == tokens.has_value())
    throw UsageError("give exactly one of --prompt TEXT and --tokens IDS");
  const std::string model_name = parser.positionals().empty() ? "" : parser.positionals()[0];
  app::LanguageModelSession session(model_name, parser.value("--tokenizer"));

  std::vector<int64_t> ids;
  if (prompt) {
    ids = session.codec->encode(*prompt);
  } else {
    std::string list = *tokens;
    for (char& c : list)
      if (c == ',') c = ' ';
    std::istringstream in(list);
    std::string word;
    while (in >> word) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(word, &used);
      } catch (const std::exception&) {
      }
      if (used != word.size() || id < 0 || id >= session.vocab_size())
        throw UsageError("--tokens: '" + word + "' is not a token id in [0, " +
                         std::to_string(session.vocab_size()) + ")");
      ids.push_back(id);
    }
  }
  if (ids.empty()) throw UsageError("the prompt has no tokens");
  if (static_cast<int64_t>(ids.size()) > session.max_block_size())
    throw UsageError("the prompt is " + std::to_string(ids.size()) +
                     " tokens, more than the model's max_block_size " +
                     std::to_string(session.max_block_size()));
  const auto payload = session.visualize(ids, static_cast<int64_t>(ids.size()));
  const std::string out = parser.value("-o").value_or("viz.html");
  const std::string html =
      app::visualization_html(payload, parser.value("--title").value_or(session.name));
  write_file_atomically(out, html);
  std::cerr << "wrote " << out << " (" << html.size() / 1024 << " KiB: " << ids.size()
            << " tokens, " << payload["n_layers"].get<int64_t>() << " layers)\n";
  return 0;
}

}  // namespace

Command viz_command() {
  return {"viz", "write an HTML page of a model's attention, relations and symbols", run_viz};
}

}  // namespace dual_attention::cli
