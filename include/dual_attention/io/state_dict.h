// A module's state as PyTorch's state_dict sees it, and checkpoints of it in safetensors files.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "dual_attention/io/safetensors.h"

namespace dual_attention::io {

// Each function below takes `skip`: the state_dict names (as named_state gives them) of buffers
// that are not part of the state, what PyTorch registers with persistent=False (e.g. a language
// model's RoPE tables, listed by its non_persistent_buffers()). They are left out of the state,
// neither saved nor loaded; a name in `skip` that the module does not have is ignored.
using SkipList = std::vector<std::string>;

// Parameters and persistent buffers under their state_dict names, in PyTorch's order (a module's
// own parameters, then its own buffers, then each child's in registration order). A tensor
// registered under several names (tied weights, a shared submodule) appears under each of them,
// as in PyTorch. The tensors are the module's own, not copies.
NamedTensors named_state(const torch::nn::Module& module, const SkipList& skip = {});

struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // in the module, not in the state dict
  std::vector<std::string> unexpected_keys;  // in the state dict, not in the module
};

// Copies `state` into the module's parameters and buffers in place (under NoGradGuard), so that
// their dtype, device and sharing are kept: values are converted to each tensor's dtype and device,
// and tensors registered under several names stay one tensor. Shape mismatches are always an
// error; with `strict`, missing and unexpected keys are too. Errors list every offending name and
// leave the module untouched. Two names of one shared tensor given different values are an error.
LoadStateDictResult load_state_dict(torch::nn::Module& module,
                                    const std::map<std::string, torch::Tensor>& state,
                                    bool strict = true, const SkipList& skip = {});

// Writes named_state(module) to a safetensors file the way safetensors.torch.save_model does: each
// shared tensor once, under its first name, with the other names recorded in __metadata__.
void save_module(const torch::nn::Module& module, const std::string& path,
                 const Metadata& metadata = {}, const SkipList& skip = {});

// Loads a safetensors file into the module, like safetensors.torch.load_model: a name missing from
// the file is taken from its __metadata__ alias (dropped -> kept), or else from another name of the
// same shared tensor in the module; an alias whose target is not in the file is an error.
LoadStateDictResult load_module(torch::nn::Module& module, const std::string& path,
                                bool strict = true, const SkipList& skip = {});

}  // namespace dual_attention::io
