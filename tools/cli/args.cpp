#include <algorithm>
#include <iostream>
#include <sstream>

#include "cli.h"

namespace dual_attention::cli {

const Positional kModelArgument = {
    "MODEL",
    "a model folder or Hugging Face Hub repo id (default: build/demo/shakespeare-dat, trained by "
    "scripts/demo.sh)",
    false};

const Option kTokenizerOption = {
    "--tokenizer", "PATH",
    "tokenizer file (tiktoken ranks, tokenizer.json, vocab.json + merges.txt); default: one in the "
    "model folder, else GPT-2's"};

ArgParser::ArgParser(std::string program, std::string description,
                     std::vector<Positional> positionals, std::vector<Option> options)
    : program_(std::move(program)),
      description_(std::move(description)),
      positionals_(std::move(positionals)),
      options_(std::move(options)) {}

const Option* ArgParser::find(const std::string& name) const {
  for (const auto& option : options_)
    if (option.name == name) return &option;
  return nullptr;
}

std::optional<std::string> ArgParser::value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  bool options_done = false;  // after "--" everything is positional
  bool help_requested = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!options_done && arg == "--") {
      options_done = true;
    } else if (!options_done && (arg == "--help" || arg == "-h")) {
      help_requested = true;
    } else if (!options_done && arg.size() > 1 && arg[0] == '-') {
      size_t eq = arg.find('=');
      std::string name = arg.substr(0, eq);
      const Option* option = find(name);
      if (!option) throw UsageError("unknown option '" + name + "'");
      if (option->metavar.empty()) {
        if (eq != std::string::npos) throw UsageError("option '" + name + "' takes no value");
        values_[name] = "";
      } else if (eq != std::string::npos) {
        values_[name] = arg.substr(eq + 1);
      } else if (i + 1 < args.size()) {
        values_[name] = args[++i];
      } else {
        throw UsageError("option '" + name + "' needs a value (" + option->metavar + ")");
      }
    } else {
      positional_values_.push_back(arg);
    }
  }
  if (help_requested) {
    std::cout << help();
    return false;
  }
  size_t required = std::count_if(positionals_.begin(), positionals_.end(),
                                  [](const Positional& p) { return p.required; });
  if (positional_values_.size() < required)
    throw UsageError("missing argument " + positionals_[positional_values_.size()].metavar);
  bool open_ended = !positionals_.empty() && positionals_.back().repeated;
  if (!open_ended && positional_values_.size() > positionals_.size())
    throw UsageError("unexpected argument '" + positional_values_[positionals_.size()] + "'");
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream out;
  out << "usage: " << program_;
  for (const auto& p : positionals_) {
    std::string m = p.metavar + (p.repeated ? "..." : "");
    out << ' ' << (p.required ? m : "[" + m + "]");
  }
  out << " [options]\n\n" << description_ << "\n";
  if (!positionals_.empty()) {
    out << "\narguments:\n";
    for (const auto& p : positionals_) out << "  " << p.metavar << "\n      " << p.help << "\n";
  }
  out << "\noptions:\n";
  for (const auto& o : options_)
    out << "  " << o.name << (o.metavar.empty() ? "" : " " + o.metavar) << "\n      " << o.help
        << "\n";
  out << "  -h, --help\n      show this help and exit\n";
  return out.str();
}

}  // namespace dual_attention::cli
