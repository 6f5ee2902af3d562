// Drives the C++ side of tests/python/test_safetensors_interop.py:
//   safetensors_roundtrip copy IN OUT          read IN, write its tensors and metadata to OUT
//   safetensors_roundtrip module-copy IN OUT   load_module(TiedModel, IN), save_module to OUT
//   safetensors_roundtrip write-tied OUT       save_module of a TiedModel filled by fill_tied()
#include <torch/torch.h>

#include <iostream>
#include <set>

#include "dual_attention/io/state_dict.h"
#include "io_test_modules.h"

using namespace dual_attention::io;

namespace {

// Tensor i of the state (first name of each shared tensor) holds arange(numel) / 4 - i; integer
// tensors hold i. The Python test fills its twin the same way.
void fill_tied(io_test::TiedModel& model) {
  torch::NoGradGuard no_grad;
  std::set<const c10::TensorImpl*> done;
  int64_t i = 0;
  for (const auto& [name, t] : named_state(*model)) {
    if (done.insert(t.unsafeGetTensorImpl()).second) {
      if (t.is_floating_point())
        t.copy_(torch::arange(t.numel(), torch::kFloat64).reshape(t.sizes()) / 4 - i);
      else
        t.fill_(i);
    }
    ++i;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 3 && args[0] == "copy") {
      const auto loaded = load_safetensors(args[1], LoadOptions().resolve_aliases(false));
      save_safetensors(args[2], loaded.tensors, loaded.metadata);
    } else if (args.size() == 3 && args[0] == "module-copy") {
      io_test::TiedModel model;
      load_module(*model, args[1]);
      save_module(*model, args[2], {{"format", "pt"}});
    } else if (args.size() == 2 && args[0] == "write-tied") {
      io_test::TiedModel model;
      fill_tied(model);
      save_module(*model, args[1], {{"format", "pt"}});
    } else {
      std::cerr
          << "usage: safetensors_roundtrip copy IN OUT | module-copy IN OUT | write-tied OUT\n";
      return 2;
    }
  } catch (const c10::Error& e) {
    std::cerr << e.what_without_backtrace() << "\n";
    return 1;
  }
  return 0;
}
