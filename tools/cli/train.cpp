// dual-attention train: examples/train_lm.cpp, compiled into the CLI (the same program, so the
// example a user copies and the command they run cannot drift apart).
#include "cli.h"

int train_lm_main(int argc, char** argv);  // examples/train_lm.cpp

namespace dual_attention::cli {
namespace {

int run_train(const std::vector<std::string>& args) {
  std::vector<std::string> storage = {"dual-attention train"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  return train_lm_main(static_cast<int>(storage.size()), argv.data());
}

}  // namespace

Command train_command() {
  return {"train", "train a language model on text files (examples/train_lm.cpp)", run_train};
}

}  // namespace dual_attention::cli
