#include "dual_attention/pretrained.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/io/state_dict.h"

namespace dual_attention {
namespace fs = std::filesystem;

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
  return hub::snapshot_download(name_or_path, {"config.json", "model.safetensors"},
                                options.download());
#else
  (void)options;
  TORCH_CHECK(false, "from_pretrained: '", name_or_path,
              "' is not a local folder, and this build has no Hub client "
              "(DUAL_ATTENTION_BUILD_HUB=OFF); download the repository and pass its folder");
#endif
}

Kwargs read_config_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, path,
              ": cannot open the model config (expected config.json next to "
              "model.safetensors)");
  std::stringstream text;
  text << in.rdbuf();
  Kwargs config;
  try {
    config = Kwargs::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    TORCH_CHECK(false, path, ": invalid JSON: ", e.what());
  }
  TORCH_CHECK(config.is_object(), path, ": expected a JSON object of constructor keywords, got ",
              config.dump());
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
                             const PretrainedOptions& options) {
  const std::string path = folder + "/model.safetensors";
  TORCH_CHECK(fs::is_regular_file(path), path,
              ": no such file (expected the model weights "
              "next to config.json)");
  // The model takes the checkpoint's floating-point dtype unless told otherwise.
  torch::Dtype dtype = torch::kFloat32;
  if (options.dtype()) {
    dtype = *options.dtype();
    TORCH_CHECK(c10::isFloatingType(dtype),
                "from_pretrained: dtype must be a floating-point type, got ", dtype);
  } else {
    const auto file = io::SafetensorsFile::open(path);
    std::set<torch::ScalarType> stored;
    for (const auto& name : file.keys()) {
      const auto type = file.info(name).scalar_type;
      if (c10::isFloatingType(type)) stored.insert(type);
    }
    if (stored.size() == 1) dtype = *stored.begin();
  }
  module.to(dtype);
  io::load_module(module, path, /*strict=*/true);  // its errors name the file and the tensors
  module.to(options.device());
  module.eval();
}

void save_pretrained_weights(const torch::nn::Module& module, const std::string& folder) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  TORCH_CHECK(!ec && fs::is_directory(folder), "save_pretrained: cannot create the folder '",
              folder, "': ", ec.message());
  io::save_module(module, folder + "/model.safetensors");
}

}  // namespace dual_attention
