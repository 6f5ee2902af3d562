// Tokenizer::from_file (format detection) and get_encoding (where the GPT-2 files are found).
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "tokenizer_impl.h"

#if DUAL_ATTENTION_WITH_HUB
#include "dual_attention/hub/hub.h"
#endif

namespace dual_attention {

namespace fs = std::filesystem;

namespace {

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw TokenizerError("tokenizer: cannot read '" + path.string() + "': " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad())
    throw TokenizerError("tokenizer: error reading '" + path.string() +
                         "': " + std::strerror(errno));
  return s.str();
}

void require_no_options(const TokenizerOptions& options, const std::string& path) {
  if (options.pat_str || options.special_tokens)
    throw TokenizerError("tokenizer: '" + path +
                         "' is a tokenizer.json, which carries its own pattern and special tokens; "
                         "pat_str / special_tokens are for rank files and vocab.json + merges.txt");
}

Tokenizer from_vocab_merges_files(const fs::path& vocab, const fs::path& merges,
                                  const TokenizerOptions& options) {
  for (const fs::path& p : {vocab, merges})
    if (!fs::exists(p))
      throw TokenizerError("tokenizer: '" + p.string() + "' does not exist (vocab.json and " +
                           "merges.txt are read from one folder)");
  return Tokenizer::from_vocab_merges(read_text_file(vocab), read_text_file(merges), options,
                                      vocab.string(), merges.string());
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path, const TokenizerOptions& options) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json"))
      return from_file((p / "tokenizer.json").string(), options);
    if (fs::exists(p / "vocab.json") || fs::exists(p / "merges.txt"))
      return from_vocab_merges_files(p / "vocab.json", p / "merges.txt", options);
    throw TokenizerError("tokenizer: the folder '" + path +
                         "' holds neither tokenizer.json nor vocab.json + merges.txt");
  }
  if (!fs::exists(p, ec)) throw TokenizerError("tokenizer: '" + path + "' does not exist");
  const std::string filename = p.filename().string();
  if (filename == "merges.txt")
    return from_vocab_merges_files(p.parent_path() / "vocab.json", p, options);
  std::string contents = read_text_file(p);
  const size_t first = contents.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && contents[first] == '{') {
    // tokenizer.json has a "model"; anything else JSON is a vocab.json.
    const bool has_model =
        contents.find("\"model\"") != std::string::npos && filename != "vocab.json";
    if (has_model) {
      require_no_options(options, path);
      return from_tokenizer_json(contents, path, options.name);
    }
    const fs::path merges = p.parent_path() / "merges.txt";
    return from_vocab_merges_files(p, merges, options);
  }
  return from_tiktoken_bpe(contents, options, path);
}

// ---- get_encoding -----------------------------------------------------------------------------

namespace {

constexpr const char* kHubRepo = "openai-community/gpt2";
constexpr const char* kHubFile = "tokenizer.json";

void check_name(const std::string& name) {
  if (name != "gpt2" && name != "r50k_base")
    throw TokenizerError("get_encoding: unknown encoding '" + name +
                         "' (this library ships the GPT-2 one: 'gpt2', alias 'r50k_base')");
}

std::string data_dir() {
  if (const char* d = std::getenv("DUAL_ATTENTION_DATA_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "dual-attention").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".cache" / "dual-attention").string();
}

}  // namespace

std::string find_encoding_file(const std::string& name, const std::optional<std::string>& path) {
  check_name(name);
  if (path) {
    if (!fs::exists(*path))
      throw TokenizerError("get_encoding: the path '" + *path + "' does not exist");
    return *path;
  }
  if (const char* env = std::getenv("DUAL_ATTENTION_GPT2_TOKENIZER"); env && *env) {
    if (!fs::exists(env))
      throw TokenizerError(std::string("get_encoding: DUAL_ATTENTION_GPT2_TOKENIZER is '") + env +
                           "', which does not exist");
    return env;
  }
  const fs::path cached = fs::path(data_dir()) / "gpt2.tiktoken";
  if (fs::exists(cached)) return cached.string();
  return std::string("hub:") + kHubRepo + "/" + kHubFile;
}

Tokenizer get_encoding(const std::string& name, const std::optional<std::string>& path) {
  std::string file = find_encoding_file(name, path);
  if (file.rfind("hub:", 0) == 0) {
#if DUAL_ATTENTION_WITH_HUB
    file = hub::hf_hub_download(kHubRepo, kHubFile);
#else
    throw TokenizerError(
        "get_encoding: no GPT-2 tokenizer file found (an explicit path, "
        "DUAL_ATTENTION_GPT2_TOKENIZER, " +
        (fs::path(data_dir()) / "gpt2.tiktoken").string() +
        ") and this build has no Hub client (DUAL_ATTENTION_BUILD_HUB=OFF)");
#endif
  }
  // One tokenizer per file and name, shared by every caller.
  static std::mutex mutex;
  static std::map<std::string, Tokenizer> loaded;
  std::error_code ec;
  const std::string key = name + "\n" + fs::weakly_canonical(file, ec).string();
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (const auto it = loaded.find(key); it != loaded.end()) return it->second;
  }
  TokenizerOptions options;
  options.name = name;
  Tokenizer tokenizer = Tokenizer::from_file(file, options);
  std::lock_guard<std::mutex> lock(mutex);
  return loaded.emplace(key, tokenizer).first->second;
}

Tokenizer tokenizer_for_model(const std::string& model_folder,
                              const std::optional<std::string>& path) {
  if (path) return Tokenizer::from_file(*path);
  const fs::path folder(model_folder);
  if (fs::exists(folder / "tokenizer.json") ||
      (fs::exists(folder / "vocab.json") && fs::exists(folder / "merges.txt")))
    return Tokenizer::from_file(folder.string());
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (entry.path().extension() == ".tiktoken") return Tokenizer::from_file(entry.path().string());
  }
  return get_encoding("gpt2");
}

}  // namespace dual_attention
