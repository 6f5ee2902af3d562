// What the model files (language, seq2seq and vision models) share: the holder with
// from_pretrained (declared here, defined with the checkpoint code in src/pretrained.cpp), and
// counting and copying a model whose parameters may be tied. Internal: not part of the public API.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace dual_attention {
// What from_pretrained takes besides the name: dtype, device, Hub download options
// (pretrained.h, which a caller passing them includes).
struct PretrainedOptions;
}  // namespace dual_attention

namespace dual_attention::detail {

// The holder of a model class, as TORCH_MODULE gives a layer's, plus the loader of its checkpoints:
//   class Xxx : public detail::PretrainedModelHolder<Xxx, XxxImpl> { ... };
template <class Holder, class ModelImpl>
class PretrainedModelHolder : public torch::nn::ModuleHolder<ModelImpl> {
 public:
  using torch::nn::ModuleHolder<ModelImpl>::ModuleHolder;
  using Impl = ModelImpl;

  // The model saved by save_pretrained (or by the reference: safetensors' save_model plus a
  // config.json of its constructor keywords, or the language models' Hub mixin), in eval mode:
  // `name_or_path` is a local folder or a Hugging Face Hub repo id (pretrained.h's
  // from_pretrained). Without options: the checkpoint's dtype, on the CPU, the Hub's defaults.
  static Holder from_pretrained(const std::string& name_or_path);
  static Holder from_pretrained(const std::string& name_or_path, const PretrainedOptions& options);
};

// The children of a model's `layers` ModuleDict, in registration order.
using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>;

// Each tensor once, in named_parameters() order (Python's parameters() skips repeats the same way):
// a tied weight or a module registered under two names is one parameter.
inline std::vector<torch::Tensor> unique_parameters(const torch::nn::Module& model) {
  std::vector<torch::Tensor> unique;
  std::unordered_set<const void*> seen;
  for (const auto& p : model.named_parameters()) {
    if (seen.insert(p.value().unsafeGetTensorImpl()).second) unique.push_back(p.value());
  }
  return unique;
}

// Number of parameters, each shared tensor counted once.
inline int64_t count_unique_parameters(const torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : unique_parameters(model)) n += p.numel();
  return n;
}

// A fresh model of the same options holding copies of `source`'s parameters and buffers (on
// `device` if given). The fresh model's constructor re-creates the ties (shared weights, modules
// registered twice), which Cloneable's member-wise copy would break.
template <class Impl>
std::shared_ptr<torch::nn::Module> clone_model(const Impl& source,
                                               const std::optional<torch::Device>& device) {
  torch::NoGradGuard no_grad;
  auto copy = std::make_shared<Impl>(source.options);
  auto copy_into = [&](const auto& from, const auto& to) {
    for (const auto& item : from) {
      const auto& value = item.value();
      to[item.key()].set_data(device ? value.to(*device, /*non_blocking=*/false, /*copy=*/true)
                                     : value.clone());
    }
  };
  copy_into(source.named_parameters(), copy->named_parameters());
  copy_into(source.named_buffers(), copy->named_buffers());
  copy->train(source.is_training());
  return copy;
}

}  // namespace dual_attention::detail
