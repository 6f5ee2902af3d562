// Activation functions by name: the one lookup table for every `activation` / `rel_activation`
// keyword of the library (reference: dual_attention.model_utils).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace dual_attention {

using Activation = std::function<torch::Tensor(const torch::Tensor&)>;

// relu, sigmoid, tanh, gelu (tanh approximation), silu, softmax (last dim), identity.
// An unknown name is a c10::Error listing the valid names; `argument` names the keyword in it.
Activation get_activation_function(const std::string& name,
                                   const std::string& argument = "activation");

// The names get_activation_function accepts, in the reference's order.
const std::vector<std::string>& activation_names();

}  // namespace dual_attention
