// dual-attention download REPO_ID [FILENAME...]: fetch a model's files into the Hugging Face cache
// and print the snapshot folder (the folder from_pretrained reads).
#include <iostream>

#include "cli.h"
#if DUAL_ATTENTION_WITH_HUB
#include "dual_attention/hub/hub.h"
#endif

namespace dual_attention::cli {
namespace {

#if !DUAL_ATTENTION_WITH_HUB
int run_download(const std::vector<std::string>&) {
  std::cerr << "dual-attention download: this build has no Hub client "
               "(configured with -DDUAL_ATTENTION_BUILD_HUB=OFF)\n";
  return 1;
}
#else

int run_download(const std::vector<std::string>& args) {
  ArgParser parser(
      "dual-attention download",
      "Downloads files of a Hugging Face Hub model repository into the cache shared with "
      "huggingface_hub\n(HF_HUB_CACHE, default ~/.cache/huggingface/hub) and prints the snapshot "
      "folder. Files already\ncached are not downloaded again. Honours HF_ENDPOINT, HF_TOKEN, "
      "HF_HOME and HF_HUB_OFFLINE.",
      {{"REPO_ID", "the repository, e.g. awni00/DAT-sa8-ra8-ns1024-sh8-nkvh4-343M"},
       {"FILENAME", "files to fetch (default: config.json model.safetensors)", false, true}},
      {{"--revision", "R", "branch, tag or commit hash (default: main)"},
       {"--cache-dir", "D", "cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)"},
       {"--token", "T", "access token for private or gated repositories (default: HF_TOKEN)"},
       {"--endpoint", "URL", "Hub address (default: HF_ENDPOINT or https://huggingface.co)"},
       {"--force-download", "", "download again even if the files are cached"},
       {"--local-files-only", "", "use the cache only, make no request"},
       {"--quiet", "", "no progress bar"}});
  if (!parser.parse(args)) return 0;  // --help
  hub::DownloadOptions options;
  options.revision = parser.value("--revision");
  options.cache_dir = parser.value("--cache-dir");
  options.token = parser.value("--token");
  options.endpoint = parser.value("--endpoint");
  options.force_download = parser.flag("--force-download");
  options.local_files_only = parser.flag("--local-files-only");
  options.progress = !parser.flag("--quiet");
  const auto& positionals = parser.positionals();
  std::vector<std::string> files(positionals.begin() + 1, positionals.end());
  if (files.empty()) files = {"config.json", "model.safetensors"};
  std::cout << hub::snapshot_download(positionals[0], files, options) << std::endl;
  return 0;
}
#endif

}  // namespace

Command download_command() {
  return {"download", "download a model's files into the Hugging Face cache", run_download};
}

}  // namespace dual_attention::cli
