#include "dual_attention/model_utils.h"

#include <sstream>
#include <utility>

namespace dual_attention {
namespace {

const std::vector<std::pair<std::string, Activation>>& activation_table() {
  static const std::vector<std::pair<std::string, Activation>> table = {
      {"relu", [](const torch::Tensor& x) { return torch::relu(x); }},
      {"sigmoid", [](const torch::Tensor& x) { return torch::sigmoid(x); }},
      {"tanh", [](const torch::Tensor& x) { return torch::tanh(x); }},
      {"gelu", [](const torch::Tensor& x) { return torch::gelu(x, "tanh"); }},
      {"silu", [](const torch::Tensor& x) { return torch::silu(x); }},
      {"softmax", [](const torch::Tensor& x) { return torch::softmax(x, -1); }},
      {"identity", [](const torch::Tensor& x) { return x; }},
  };
  return table;
}

}  // namespace

const std::vector<std::string>& activation_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& entry : activation_table()) out.push_back(entry.first);
    return out;
  }();
  return names;
}

Activation get_activation_function(const std::string& name, const std::string& argument) {
  for (const auto& entry : activation_table()) {
    if (entry.first == name) return entry.second;
  }
  std::ostringstream valid;
  for (const auto& n : activation_names()) valid << (valid.tellp() ? ", " : "") << "'" << n << "'";
  TORCH_CHECK(false, argument, " '", name, "' is not a known activation; expected one of ",
              valid.str());
}

}  // namespace dual_attention
