// The C++ twin of TiedModel in tests/fixtures/io/make_fixtures.py: tied weights (final_out.weight
// is token_embedder.weight) and a submodule registered twice (retrievers.0 and retrievers.1), the
// two kinds of sharing save_model turns into aliases.
#pragma once

#include <torch/torch.h>

namespace io_test {

struct RetrieverImpl : torch::nn::Module {
  RetrieverImpl() { proj = register_module("proj", torch::nn::Linear(4, 4)); }
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(Retriever);

// A Linear whose weight can become another module's parameter, as Python's
// `final_out.weight = token_embedder.weight` makes it: one tensor, registered under both names.
struct TiedLinearImpl : torch::nn::LinearImpl {
  using LinearImpl::LinearImpl;
  void tie_weight(const torch::Tensor& shared) { weight = parameters_["weight"] = shared; }
};
TORCH_MODULE(TiedLinear);

struct TiedModelImpl : torch::nn::Module {
  TiedModelImpl() {
    token_embedder = register_module("token_embedder", torch::nn::Embedding(7, 4));
    Retriever shared;
    retrievers = register_module("retrievers", torch::nn::ModuleList(shared, shared));
    norm = register_module("norm", torch::nn::BatchNorm1d(4));
    final_out =
        register_module("final_out", TiedLinear(torch::nn::LinearOptions(4, 7).bias(false)));
    final_out->tie_weight(token_embedder->weight);
  }
  torch::nn::Embedding token_embedder{nullptr};
  torch::nn::ModuleList retrievers{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  TiedLinear final_out{nullptr};
};
TORCH_MODULE(TiedModel);

}  // namespace io_test
