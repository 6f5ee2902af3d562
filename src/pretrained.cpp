#include "dual_attention/pretrained.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/io/state_dict.h"
#include "dual_attention/io/torch_checkpoint.h"
#include "dual_attention/language_models.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"

namespace dual_attention {
namespace fs = std::filesystem;

namespace {

std::string no_local_folder(const std::string& name) {
  std::error_code ec;
  return "nor is '" + name + "' a local folder (no such directory in " +
         fs::current_path(ec).string() + ")";
}

}  // namespace

std::string resolve_pretrained(const std::string& name_or_path, const PretrainedOptions& options) {
  std::error_code ec;
  if (fs::is_directory(name_or_path, ec)) return name_or_path;
  TORCH_CHECK(!fs::exists(name_or_path, ec), "from_pretrained: '", name_or_path,
              "' is a file; expected a folder holding config.json and model.safetensors, or a "
              "Hugging Face Hub repo id");
  // A path-like name (absolute, relative with ./ or ../, or ~) that does not exist is a missing
  // folder, not a repo id.
  const bool path_like = name_or_path.empty() || name_or_path[0] == '/' || name_or_path[0] == '~' ||
                         name_or_path.rfind("./", 0) == 0 || name_or_path.rfind("../", 0) == 0;
  TORCH_CHECK(!path_like, "from_pretrained: '", name_or_path,
              "' is not a local folder (expected a folder holding config.json and "
              "model.safetensors, or a Hugging Face Hub repo id 'org/name')");
#if DUAL_ATTENTION_WITH_HUB
  const hub::DownloadOptions& download = options.download();
  try {
    const std::string folder = hub::snapshot_download(name_or_path, {"config.json"}, download);
    // The weights from the same commit: model.safetensors, else pytorch_model.bin, as
    // huggingface_hub's mixin falls back when the repository has no model.safetensors.
    hub::DownloadOptions pinned = download;
    pinned.revision = fs::path(folder).filename().string();
    try {
      hub::hf_hub_download(name_or_path, kSafetensorsWeightsName, pinned);
    } catch (const hub::EntryNotFoundError&) {
      hub::hf_hub_download(name_or_path, kPytorchWeightsName, pinned);
    } catch (const hub::LocalEntryNotFoundError&) {
      // Offline, the cache may hold the fallback; if not, the first error is the one to see.
      if (!hub::try_to_load_from_cache(name_or_path, kPytorchWeightsName, *pinned.revision,
                                       download.cache_dir.value_or("")))
        throw;
    }
    return folder;
  } catch (hub::HubError& e) {
    // huggingface_hub's mixin says both: a mistyped local folder looks like a repo id.
    e.add_note(no_local_folder(name_or_path));
    throw;
  } catch (const std::invalid_argument& e) {  // not even a valid repo id
    throw std::invalid_argument(std::string(e.what()) + "; " + no_local_folder(name_or_path));
  }
#else
  (void)options;
  TORCH_CHECK(false, "from_pretrained: '", name_or_path,
              "' is not a local folder, and this build has no Hub client "
              "(DUAL_ATTENTION_BUILD_HUB=OFF); download the repository and pass its folder");
#endif
}

void check_parameter_budget(double parameter_count, const PretrainedOptions& options,
                            double n_blocks) {
  const double bytes_per_parameter =
      options.dtype() ? std::max<double>(4, c10::elementSize(*options.dtype())) : 4.0;
  const double bytes = parameter_count * bytes_per_parameter + n_blocks * kBytesPerBlock;
  TORCH_CHECK(options.max_parameter_bytes() > 0, "from_pretrained: max_parameter_bytes must be ",
              "positive, got ", options.max_parameter_bytes());
  if (bytes <= static_cast<double>(options.max_parameter_bytes())) return;
  std::ostringstream what;
  what.precision(3);
  what << "the model would hold about " << parameter_count << " parameters in " << n_blocks
       << " blocks (" << bytes / (1 << 30) << " GiB as built, " << bytes_per_parameter
       << " bytes each and " << kBytesPerBlock / 1024
       << " KiB of module bookkeeping per block), above max_parameter_bytes "
       << options.max_parameter_bytes() << " (" << options.max_parameter_bytes() / double(1 << 30)
       << " GiB); nothing was allocated. Check the config's sizes, or raise max_parameter_bytes "
          "to load a model this large";
  TORCH_CHECK(false, what.str());
}

Kwargs read_config_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, path,
              ": cannot open the model config (expected config.json next to "
              "model.safetensors)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config_json(text.str(), path);
}

Kwargs parse_config_json(const std::string& text, const std::string& path) {
  // Keyword dicts nest a few levels (ra_kwargs inside encoder_kwargs); error messages print values
  // recursively, so depth is bounded as Python's json bounds it (by the recursion limit).
  constexpr int kMaxDepth = 100;
  bool too_deep = false;
  nlohmann::json::parser_callback_t check = [&](int depth, nlohmann::json::parse_event_t, Kwargs&) {
    too_deep |= depth > kMaxDepth;
    return !too_deep;
  };
  Kwargs config;
  try {
    config = Kwargs::parse(text, check);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e400
    TORCH_CHECK(false, path, ": invalid JSON: ", e.what());
  }
  TORCH_CHECK(!too_deep, path, ": JSON values nest more than ", kMaxDepth, " deep");
  TORCH_CHECK(config.is_object(), path, ": expected a JSON object of constructor keywords, got ",
              detail::json_type_name(config));
  return config;
}

void write_config_json(const std::string& path, const Kwargs& config) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TORCH_CHECK(out, path, ": cannot open for writing");
  out << config.dump(2, ' ', /*ensure_ascii=*/true);
  out.close();
  TORCH_CHECK(out, path, ": write failed");
}

void load_pretrained_weights(torch::nn::Module& module, const std::string& folder,
                             const PretrainedOptions& options,
                             const std::vector<std::string>& skip) {
  const std::string safetensors_path = folder + "/" + kSafetensorsWeightsName;
  const std::string pytorch_path = folder + "/" + kPytorchWeightsName;
  const bool safetensors = fs::is_regular_file(safetensors_path);
  TORCH_CHECK(safetensors || fs::is_regular_file(pytorch_path), folder, ": no ",
              kSafetensorsWeightsName, " or ", kPytorchWeightsName,
              " (expected the model weights next to config.json)");
  std::map<std::string, torch::Tensor> pytorch_state;
  std::set<torch::ScalarType> stored;  // floating-point dtypes of the checkpoint
  if (safetensors) {
    const auto file = io::SafetensorsFile::open(safetensors_path);
    for (const auto& name : file.keys()) stored.insert(file.info(name).scalar_type);
  } else {
    pytorch_state = io::load_torch_state_dict(pytorch_path);
    for (const auto& [name, tensor] : pytorch_state) stored.insert(tensor.scalar_type());
  }
  // The model takes the checkpoint's floating-point dtype unless told otherwise.
  torch::Dtype dtype = torch::kFloat32;
  if (options.dtype()) {
    dtype = *options.dtype();
    TORCH_CHECK(c10::isFloatingType(dtype),
                "from_pretrained: dtype must be a floating-point type, got ", dtype);
  } else {
    for (auto it = stored.begin(); it != stored.end();)
      it = c10::isFloatingType(*it) ? std::next(it) : stored.erase(it);
    if (stored.size() == 1) dtype = *stored.begin();
  }
  module.to(dtype);
  if (safetensors) {
    io::load_module(module, safetensors_path, /*strict=*/true, skip);  // errors name file, tensors
  } else {
    try {
      io::load_state_dict(module, pytorch_state, /*strict=*/true, skip);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, pytorch_path, ": ", e.what_without_backtrace());
    }
  }
  module.to(options.device());
  module.eval();
}

void save_pretrained_weights(const torch::nn::Module& module, const std::string& folder,
                             const std::vector<std::string>& skip) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  TORCH_CHECK(!ec && fs::is_directory(folder), "save_pretrained: cannot create the folder '",
              folder, "': ", ec.message());
  io::save_module(module, folder + "/model.safetensors", /*metadata=*/{}, skip);
}

// ---- the models' from_pretrained and save_pretrained -----------------------------------------
// Declared by the model headers (detail/model_common.h and the XxxModelImpl classes) without this
// file's machinery, and defined here for the six models.

namespace detail {

template <class Holder, class ModelImpl>
Holder PretrainedModelHolder<Holder, ModelImpl>::from_pretrained(const std::string& name_or_path) {
  return dual_attention::from_pretrained<Holder>(name_or_path);
}

template <class Holder, class ModelImpl>
Holder PretrainedModelHolder<Holder, ModelImpl>::from_pretrained(const std::string& name_or_path,
                                                                 const PretrainedOptions& options) {
  return dual_attention::from_pretrained<Holder>(name_or_path, options);
}

template <class Derived, class Options>
void LanguageModelImpl<Derived, Options>::save_pretrained(const std::string& folder) const {
  dual_attention::save_pretrained(*this, options, folder);
}

template <class Derived, class Options>
void Seq2SeqModelImpl<Derived, Options>::save_pretrained(const std::string& folder) const {
  dual_attention::save_pretrained(*this, options, folder);
}

template <class Derived, class Options>
void VisionModelImpl<Derived, Options>::save_pretrained(const std::string& folder) const {
  dual_attention::save_pretrained(*this, options, folder);
}

template class PretrainedModelHolder<DualAttnTransformerLM, DualAttnTransformerLMImpl>;
template class PretrainedModelHolder<TransformerLM, TransformerLMImpl>;
template class PretrainedModelHolder<Seq2SeqTransformer, Seq2SeqTransformerImpl>;
template class PretrainedModelHolder<Seq2SeqDualAttnTransformer, Seq2SeqDualAttnTransformerImpl>;
template class PretrainedModelHolder<VisionTransformer, VisionTransformerImpl>;
template class PretrainedModelHolder<VisionDualAttnTransformer, VisionDualAttnTransformerImpl>;

// Each model class is instantiated in its own source file, save_pretrained excepted (defined here).
template void
LanguageModelImpl<DualAttnTransformerLMImpl, DualAttnTransformerLMOptions>::save_pretrained(
    const std::string&) const;
template void LanguageModelImpl<TransformerLMImpl, TransformerLMOptions>::save_pretrained(
    const std::string&) const;
template void Seq2SeqModelImpl<Seq2SeqTransformerImpl, Seq2SeqTransformerOptions>::save_pretrained(
    const std::string&) const;
template void
Seq2SeqModelImpl<Seq2SeqDualAttnTransformerImpl,
                 Seq2SeqDualAttnTransformerOptions>::save_pretrained(const std::string&) const;
template void VisionModelImpl<VisionTransformerImpl, VisionTransformerOptions>::save_pretrained(
    const std::string&) const;
template void
VisionModelImpl<VisionDualAttnTransformerImpl, VisionDualAttnTransformerOptions>::save_pretrained(
    const std::string&) const;

}  // namespace detail

}  // namespace dual_attention
