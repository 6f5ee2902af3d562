// The pieces every `dual-attention` subcommand shares: its entry in the command table and a small
// argument parser. A new subcommand is one file defining a `Command` plus one line in main.cpp.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dual_attention::cli {

// A mistake on the command line: the program prints it with a hint and exits with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Command {
  std::string name;
  std::string summary;  // one line, for `dual-attention --help`
  // Runs with the arguments after the subcommand name; returns the exit status.
  int (*run)(const std::vector<std::string>& args);
};

struct Option {
  std::string name;     // "--revision"
  std::string metavar;  // "R" for an option that takes a value, "" for a flag
  std::string help;
};

struct Positional {
  std::string metavar;  // "REPO_ID"
  std::string help;
  bool required = true;
  bool repeated = false;  // takes every remaining argument
};

// The arguments several subcommands take, written once.
extern const Positional kModelArgument;  // MODEL of viz and serve (optional: the demo's model)
extern const Option kTokenizerOption;    // --tokenizer PATH

// Parses `--name VALUE`, `--name=VALUE`, flags and positionals. Unknown options, missing values
// and missing or extra positionals throw UsageError.
class ArgParser {
 public:
  ArgParser(std::string program, std::string description, std::vector<Positional> positionals,
            std::vector<Option> options);
  // False when the arguments ask for `--help`/`-h`: the help is then printed on stdout, and the
  // command has nothing more to do (it returns 0).
  bool parse(const std::vector<std::string>& args);
  std::string help() const;

  std::optional<std::string> value(const std::string& name) const;
  bool flag(const std::string& name) const { return value(name).has_value(); }
  const std::vector<std::string>& positionals() const { return positional_values_; }

 private:
  const Option* find(const std::string& name) const;
  std::string program_, description_;
  std::vector<Positional> positionals_;
  std::vector<Option> options_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_values_;
};

// The subcommands, in the order `--help` lists them.
Command download_command();
Command generate_command();
Command train_command();
Command viz_command();
Command serve_command();

}  // namespace dual_attention::cli
