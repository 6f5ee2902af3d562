#include "dual_attention/model_utils.h"

#include <sstream>
#include <utility>

#include "lookup_tables.h"

namespace dual_attention {
namespace {

using torch::Tensor;

const std::vector<ActivationFunction>& activation_table() {
  static const std::vector<ActivationFunction> table = {
      {"relu", [](const Tensor& x) { return torch::relu(x); },
       [](Tensor& g, const Tensor&, const Tensor& r) {
         return at::threshold_backward_out(g, g, r, 0);
       }},
      {"sigmoid", [](const Tensor& x) { return torch::sigmoid(x); },
       [](Tensor& g, const Tensor&, const Tensor& r) { return at::sigmoid_backward_out(g, g, r); }},
      {"tanh", [](const Tensor& x) { return torch::tanh(x); },
       [](Tensor& g, const Tensor&, const Tensor& r) { return at::tanh_backward_out(g, g, r); }},
      {"gelu", [](const Tensor& x) { return torch::gelu(x, "tanh"); },
       [](Tensor& g, const Tensor& t, const Tensor&) {
         return at::gelu_backward_out(g, g, t, "tanh");
       },
       /*needs_input=*/true},
      {"silu", [](const Tensor& x) { return torch::silu(x); },
       [](Tensor& g, const Tensor& t, const Tensor&) { return at::silu_backward_out(g, g, t); },
       /*needs_input=*/true},
      {"softmax", [](const Tensor& x) { return torch::softmax(x, -1); },
       [](Tensor& g, const Tensor&, const Tensor& r) {
         return at::_softmax_backward_data(g, r, -1, r.scalar_type());
       }},
      {"identity", [](const Tensor& x) { return x; },
       [](Tensor& g, const Tensor&, const Tensor&) { return g; }},
  };
  return table;
}

}  // namespace

const std::vector<std::string>& activation_names() {
  static const auto names = detail::names_in(activation_table(), &ActivationFunction::name);
  return names;
}

const ActivationFunction& get_activation(const std::string& name, const std::string& argument) {
  for (const auto& entry : activation_table()) {
    if (entry.name == name) return entry;
  }
  std::ostringstream valid;
  for (const auto& n : activation_names()) valid << (valid.tellp() ? ", " : "") << "'" << n << "'";
  TORCH_CHECK(false, argument, " '", name, "' is not a known activation; expected one of ",
              valid.str());
}

Activation get_activation_function(const std::string& name, const std::string& argument) {
  return get_activation(name, argument).forward;
}

}  // namespace dual_attention
