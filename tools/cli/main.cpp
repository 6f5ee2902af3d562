// dual-attention: the command-line program. `dual-attention <command> [arguments]`; each command
// lives in its own file (download.cpp, ...) and is listed in commands() below.
//
// Exit status: 0 success, 1 the command failed, 2 the command line is wrong.
#include <exception>
#include <iostream>

#include "cli.h"

namespace dual_attention::cli {
namespace {

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
    download_command(),
    generate_command(),
    train_command(),
#if DUAL_ATTENTION_WITH_APPS
    viz_command(),
    serve_command(),
#endif
  };
  return all;
}

void print_help(std::ostream& out) {
  out << "usage: dual-attention <command> [arguments]\n\n"
         "The Dual Attention Transformer in C++.\n\ncommands:\n";
  for (const auto& c : commands())
    out << "  " << c.name << std::string(12 - c.name.size(), ' ') << c.summary << "\n";
  out << "\nRun `dual-attention <command> --help` for the arguments of a command.\n";
}

}  // namespace
}  // namespace dual_attention::cli

int main(int argc, char** argv) {
  using namespace dual_attention::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_help(std::cerr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help(std::cout);
    return 0;
  }
  for (const auto& command : commands()) {
    if (command.name != args[0]) continue;
    try {
      return command.run(std::vector<std::string>(args.begin() + 1, args.end()));
    } catch (const UsageError& e) {
      std::cerr << "dual-attention " << command.name << ": " << e.what() << "\n"
                << "Run `dual-attention " << command.name << " --help` for usage.\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "dual-attention " << command.name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "dual-attention: unknown command '" << args[0] << "'\n";
  print_help(std::cerr);
  return 2;
}
