// Checkpoints in the layout that huggingface_hub's PyTorchModelHubMixin writes (the reference's
// dual_attention.hf.DualAttnTransformerLM_HFHub / TransformerLM_HFHub, and the published models):
//
//   <folder>/config.json         the constructor keywords, as a JSON object
//   <folder>/model.safetensors   the state_dict, shared tensors stored once (safetensors'
//   save_model)
//
// Any model class can use this machinery. Its Options struct needs, besides fields():
//   using required_types = std::tuple<...>;               // constructor arguments (kwargs.h)
//   static XxxOptions from_kwargs(const Kwargs& kwargs);  // Python's cls(**kwargs)
// and its holder a public `Impl` alias (TORCH_MODULE provides one); a model whose Impl has a
// non_persistent_buffers() member (the language models' RoPE tables) neither saves nor loads those.
// Then
//   auto model = from_pretrained<DualAttnTransformerLM>("path/to/folder");
//   save_pretrained(*model, model->options, "path/to/other");
// The model classes declare these as Xxx::from_pretrained and model->save_pretrained (without
// including this header, so that a model knows nothing of files or the Hub); their definitions, in
// src/pretrained.cpp, call the functions below. Include this header to pass PretrainedOptions.
//
// config.json: the mixin writes exactly the keywords its caller passed, so a key that is absent
// takes the reference's default; an unknown key, a missing required key or a value of the wrong
// type is an error naming the key, the value and what was expected. save_pretrained writes the
// required keywords and every keyword whose value differs from its default (what a caller passing
// only the non-defaults gets from the mixin), with sorted keys and two-space indents as
// json.dumps(..., sort_keys=True, indent=2) does.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dual_attention/hub/hub.h"
#include "dual_attention/kwargs.h"

namespace dual_attention {

struct PretrainedOptions {
  // Floating-point dtype of the loaded model. Unset: the dtype of the checkpoint's floating-point
  // tensors (a bf16 checkpoint gives a bf16 model), or float32 when they do not all agree. Note
  // that the reference's from_pretrained always gives float32.
  TORCH_ARG(std::optional<torch::Dtype>, dtype) = std::nullopt;
  // Where the loaded model lives.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  // For a Hub repo id: revision (branch, tag or commit), token, cache_dir, endpoint,
  // local_files_only, force_download, progress — as huggingface_hub's from_pretrained takes them.
  // Unset fields follow the environment (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE, HF_HUB_OFFLINE).
  TORCH_ARG(hub::DownloadOptions, download) = {};
  // The largest model config.json may ask for, in bytes of parameters (and positional tables) as
  // first built in float32 (float64: 8 bytes each): 16 GiB, four billion float32 parameters, well
  // above the largest published DAT (1.27B). The size is estimated from the options before
  // anything is allocated (estimate_parameter_count), so an absurd config (d_model 1e9, n_layers
  // 1e6) is an error instead of an out-of-memory kill. Raise it to load a larger model.
  TORCH_ARG(int64_t, max_parameter_bytes) = int64_t{16} << 30;
};

// The weights file of a checkpoint folder, in the order huggingface_hub's mixin tries them:
// model.safetensors, else pytorch_model.bin (torch.save's zip format; see
// io/torch_checkpoint.h: tensors only, no pickled code).
constexpr const char* kSafetensorsWeightsName = "model.safetensors";
constexpr const char* kPytorchWeightsName = "pytorch_model.bin";

// The number of parameters (plus positional-table elements) a model built from these options
// holds, computed from the options alone, nothing allocated; a double so that absurd options give
// a huge number rather than an overflow. Close to get_num_params() (tested), which it never
// needs to match exactly: it only bounds what from_pretrained will allocate.
struct DualAttnTransformerLMOptions;
struct TransformerLMOptions;
struct Seq2SeqTransformerOptions;
struct Seq2SeqDualAttnTransformerOptions;
struct VisionTransformerOptions;
struct VisionDualAttnTransformerOptions;
double estimate_parameter_count(const DualAttnTransformerLMOptions& options);
double estimate_parameter_count(const TransformerLMOptions& options);
double estimate_parameter_count(const Seq2SeqTransformerOptions& options);
double estimate_parameter_count(const Seq2SeqDualAttnTransformerOptions& options);
double estimate_parameter_count(const VisionTransformerOptions& options);
double estimate_parameter_count(const VisionDualAttnTransformerOptions& options);

// Raises, naming the estimate and the limit, when `parameter_count` parameters in `n_blocks`
// transformer blocks would take more than options.max_parameter_bytes. Each block also costs
// kBytesPerBlock of module and tensor bookkeeping, so that a config of a million tiny layers (whose
// parameters alone fit) is refused too instead of exhausting memory on module objects.
constexpr double kBytesPerBlock = 64 * 1024;
void check_parameter_budget(double parameter_count, const PretrainedOptions& options,
                            double n_blocks = 0);

namespace detail {
template <class T, class = void>
struct has_n_layers : std::false_type {};
template <class T>
struct has_n_layers<T, std::void_t<decltype(std::declval<const T&>().n_layers())>>
    : std::true_type {};
// The number of transformer blocks the options ask for (negative counts, refused later, count 0).
template <class Options>
double block_count(const Options& o) {
  if constexpr (has_n_layers<Options>::value) {
    return std::max<double>(0, static_cast<double>(o.n_layers()));
  } else {
    return std::max<double>(0, static_cast<double>(o.n_layers_enc())) +
           std::max<double>(0, static_cast<double>(o.n_layers_dec()));
  }
}

template <class T, class = void>
struct has_non_persistent_buffers : std::false_type {};
template <class T>
struct has_non_persistent_buffers<
    T, std::void_t<decltype(std::declval<const T&>().non_persistent_buffers())>> : std::true_type {
};
// The buffers of `model` that are not part of its state: its non_persistent_buffers(), if it has
// that member (io/state_dict.h's skip list).
template <class Model>
std::vector<std::string> non_persistent_buffers_of(const Model& model) {
  if constexpr (has_non_persistent_buffers<Model>::value) {
    return model.non_persistent_buffers();
  } else {
    return {};
  }
}
}  // namespace detail

// The local folder holding a checkpoint: `name_or_path` itself when it is a folder; otherwise a
// Hugging Face Hub repo id ("org/name"), whose config.json and weights (model.safetensors, or
// pytorch_model.bin when the repository has none) are fetched into (or found in) the cache shared
// with huggingface_hub, returning the snapshot folder. Hub failures raise the hub's exceptions
// (hub::RepositoryNotFoundError, ...), naming repo, file and revision, and adding that no local
// folder of that name exists (relative to the current directory), in case it was a mistyped path.
std::string resolve_pretrained(const std::string& name_or_path,
                               const PretrainedOptions& options = {});

// config.json as a JSON object; a missing file, invalid JSON or a non-object is an error naming
// the file.
Kwargs read_config_json(const std::string& path);
// The same from the file's text; `path` names it in errors.
Kwargs parse_config_json(const std::string& text, const std::string& path);
// Writes `config` as json.dumps(config, sort_keys=True, indent=2) would (ASCII, no final newline).
void write_config_json(const std::string& path, const Kwargs& config);

// Loads <folder>/model.safetensors, or else <folder>/pytorch_model.bin, into `module` strictly (a
// missing or unexpected tensor, or a shape mismatch, is an error naming it), after converting the
// module to the dtype chosen by `options`; then moves it to options.device and switches it to
// eval mode (as the mixin does). `skip`: the module's non-persistent buffers (io/state_dict.h).
void load_pretrained_weights(torch::nn::Module& module, const std::string& folder,
                             const PretrainedOptions& options,
                             const std::vector<std::string>& skip = {});
// Writes <folder>/model.safetensors (creating the folder) as safetensors' save_model does, without
// the buffers named in `skip`.
void save_pretrained_weights(const torch::nn::Module& module, const std::string& folder,
                             const std::vector<std::string>& skip = {});

// Options from a config dict: Python's cls(**config), including its errors.
template <class Options>
Options options_from_config(const Kwargs& config) {
  return Options::from_kwargs(config);
}

// The config dict save_pretrained writes: the required keywords, plus every other keyword whose
// value differs from its default.
template <class Options>
Kwargs config_from_options(const Options& options) {
  const Kwargs all = to_kwargs(options);
  Kwargs required = Kwargs::object();
  for (const std::string& key : required_keywords<Options>()) required[key] = all.at(key);
  const Kwargs defaults = to_kwargs(Options::from_kwargs(required));
  Kwargs config = required;
  for (const auto& item : all.items()) {
    if (item.value() != defaults.at(item.key())) config[item.key()] = item.value();
  }
  return config;
}

// The model a config dict describes, built the way from_pretrained builds it: Python's
// cls(**config), after its size has been estimated from the options and checked against
// options.max_parameter_bytes, so that nothing is allocated for an absurd config. Errors start
// with `config_path`.
template <class ModuleHolder>
ModuleHolder model_from_config(const Kwargs& config, const PretrainedOptions& options,
                               const std::string& config_path) {
  using Options = std::decay_t<decltype(std::declval<typename ModuleHolder::Impl>().options)>;
  try {
    const Options model_options = options_from_config<Options>(config);
    check_parameter_budget(estimate_parameter_count(model_options), options,
                           detail::block_count(model_options));
    return ModuleHolder(model_options);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, config_path, ": ", e.what_without_backtrace());
  }
}

// Builds the model described by <folder>/config.json (model_from_config) and loads its weights
// into it. Errors name the file they come from.
template <class ModuleHolder>
ModuleHolder from_pretrained(const std::string& name_or_path,
                             const PretrainedOptions& options = {}) {
  const std::string folder = resolve_pretrained(name_or_path, options);
  const std::string config_path = folder + "/config.json";
  auto model = model_from_config<ModuleHolder>(read_config_json(config_path), options, config_path);
  load_pretrained_weights(*model, folder, options, detail::non_persistent_buffers_of(*model));
  return model;
}

// Writes config.json and model.safetensors into `folder` (created if needed).
template <class Model, class Options>
void save_pretrained(const Model& model, const Options& options, const std::string& folder) {
  save_pretrained_weights(model, folder, detail::non_persistent_buffers_of(model));
  write_config_json(folder + "/config.json", config_from_options(options));
}

}  // namespace dual_attention
