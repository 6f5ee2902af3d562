// Activation functions by name: the one lookup table for every `activation` / `rel_activation`
// keyword of the library, each with its derivative (reference: dual_attention.model_utils).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace dual_attention {

using Activation = std::function<torch::Tensor(const torch::Tensor&)>;

// One row of the activation table: r = forward(t), and its derivative for hand-written backward
// passes (the blockwise relational attention): backward(grad, t, r) returns dL/dt from grad =
// dL/dr, writing over `grad` where the formula is elementwise (the formulas autograd uses). `t` is
// needed only when needs_input (gelu, silu); otherwise it may be undefined.
struct ActivationFunction {
  std::string name;
  Activation forward;
  std::function<torch::Tensor(torch::Tensor& grad, const torch::Tensor& t, const torch::Tensor& r)>
      backward;
  bool needs_input = false;
};

// The table's row called `name`: relu, sigmoid, tanh, gelu (tanh approximation), silu, softmax
// (last dim), identity. An unknown name is a c10::Error listing the valid names; `argument` names
// the keyword in it.
const ActivationFunction& get_activation(const std::string& name,
                                         const std::string& argument = "activation");

// get_activation(name, argument).forward.
Activation get_activation_function(const std::string& name,
                                   const std::string& argument = "activation");

// The names get_activation_function accepts, in the reference's order.
const std::vector<std::string>& activation_names();

}  // namespace dual_attention
