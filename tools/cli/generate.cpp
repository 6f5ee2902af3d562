// dual-attention generate MODEL --prompt-ids IDS: continue a prompt with a language model
// (DualAttnTransformerLM or TransformerLM, from a checkpoint folder or a Hub repo id), streaming
// the new token ids as they come and reporting tokens/s at the end (generation.h does the work).
#include <chrono>
#include <iostream>
#include <sstream>

#include "cli.h"
#include "dual_attention/generation.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"

namespace dual_attention::cli {
namespace {

std::vector<int64_t> parse_ids(const std::string& text, const std::string& option) {
  std::vector<int64_t> ids;
  std::string item;
  std::stringstream in(text);
  while (std::getline(in, item, ',')) {
    std::stringstream words(item);
    std::string word;
    while (words >> word) {
      try {
        size_t used = 0;
        ids.push_back(std::stoll(word, &used));
        if (used != word.size()) throw std::invalid_argument(word);
      } catch (const std::exception&) {
        throw UsageError(option +
                         ": expected integer token ids separated by commas or spaces, "
                         "got '" +
                         word + "'");
      }
    }
  }
  return ids;
}

template <class T>
T parse_number(const std::optional<std::string>& text, const std::string& option, T fallback) {
  if (!text) return fallback;
  std::stringstream in(*text);
  T value;
  if (!(in >> value) || !in.eof()) {
    throw UsageError(option + ": expected a number, got '" + *text + "'");
  }
  return value;
}

template <class Holder>
int run_model(const std::string& folder, const PretrainedOptions& load,
              const std::vector<int64_t>& prompt, const GenerationConfig& config) {
  auto model = Holder::from_pretrained(folder, load);
  auto start = std::chrono::steady_clock::now();
  double first_token_s = 0.0;
  int64_t count = 0;
  auto out = generate(
      *model, std::vector<std::vector<int64_t>>{prompt}, config, [&](const GenerationStep& step) {
        if (count++ == 0) {
          first_token_s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        std::cout << (step.index ? " " : "") << step.tokens[0] << std::flush;
        return true;
      });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << std::endl;
  const double decode_s = seconds - first_token_s;
  std::cerr << count << " tokens in " << seconds << " s (" << (count / seconds)
            << " tokens/s; first token after " << first_token_s * 1e3 << " ms, then "
            << (count > 1 ? (count - 1) / decode_s : 0.0) << " tokens/s), finish reason "
            << out.finish_reasons[0] << "\n";
  return 0;
}

int run_generate(const std::vector<std::string>& args) {
  ArgParser parser(
      "dual-attention generate",
      "Continues a prompt with a DualAttnTransformerLM or TransformerLM checkpoint (a folder with\n"
      "config.json and model.safetensors, or a Hugging Face Hub repo id), printing each new token\n"
      "id as it comes and the tokens/s at the end (on stderr). Greedy unless --do-sample.",
      {{"MODEL", "checkpoint folder or Hub repo id"}},
      {{"--prompt-ids", "IDS", "prompt token ids, separated by commas or spaces (required)"},
       {"--max-new-tokens", "N", "new tokens at most (default 64)"},
       {"--do-sample", "", "sample instead of greedy decoding"},
       {"--temperature", "T", "softmax temperature for sampling; 0 = greedy (default 1)"},
       {"--top-k", "K", "sample from the K most likely tokens"},
       {"--top-p", "P", "nucleus sampling mass in (0, 1]"},
       {"--min-p", "P", "drop tokens below P times the most likely one's probability"},
       {"--repetition-penalty", "R", "penalty on tokens already seen (default 1 = off)"},
       {"--seed", "S", "seed for reproducible sampling"},
       {"--eos-token-id", "IDS", "stop after any of these token ids"},
       {"--no-cache", "", "recompute the whole context each step (the reference's way)"},
       {"--dtype", "D", "float32 or bfloat16 (default: the checkpoint's)"},
       {"--device", "D", "cpu or cuda (default cpu)"},
       {"--threads", "N", "intra-op threads (default: torch's)"},
       {"--revision", "R", "Hub revision (default main)"},
       {"--cache-dir", "D", "Hub cache folder"},
       {"--local-files-only", "", "use the Hub cache only, make no request"}});
  parser.parse(args);
  if (parser.help_requested) {
    std::cout << parser.help();
    return 0;
  }
  if (!parser.value("--prompt-ids")) throw UsageError("--prompt-ids is required");
  const auto prompt = parse_ids(*parser.value("--prompt-ids"), "--prompt-ids");
  if (prompt.empty()) throw UsageError("--prompt-ids: the prompt is empty");

  GenerationConfig config;
  config
      .max_new_tokens(
          parse_number<int64_t>(parser.value("--max-new-tokens"), "--max-new-tokens", 64))
      .do_sample(parser.flag("--do-sample"))
      .temperature(parse_number<double>(parser.value("--temperature"), "--temperature", 1.0))
      .repetition_penalty(
          parse_number<double>(parser.value("--repetition-penalty"), "--repetition-penalty", 1.0))
      .use_cache(!parser.flag("--no-cache"));
  if (parser.value("--top-k"))
    config.top_k(parse_number<int64_t>(parser.value("--top-k"), "--top-k", 0));
  if (parser.value("--top-p"))
    config.top_p(parse_number<double>(parser.value("--top-p"), "--top-p", 1.0));
  if (parser.value("--min-p"))
    config.min_p(parse_number<double>(parser.value("--min-p"), "--min-p", 0.0));
  if (parser.value("--seed"))
    config.seed(parse_number<uint64_t>(parser.value("--seed"), "--seed", 0));
  if (parser.value("--eos-token-id")) {
    config.eos_token_id(parse_ids(*parser.value("--eos-token-id"), "--eos-token-id"));
  }
  if (parser.value("--threads")) {
    const auto threads = parse_number<int>(parser.value("--threads"), "--threads", 1);
    if (threads < 1) throw UsageError("--threads: expected a positive number");
    torch::set_num_threads(threads);
  }

  PretrainedOptions load;
  if (auto dtype = parser.value("--dtype")) {
    if (*dtype == "float32") {
      load.dtype(torch::kFloat32);
    } else if (*dtype == "bfloat16") {
      load.dtype(torch::kBFloat16);
    } else {
      throw UsageError("--dtype: expected float32 or bfloat16, got '" + *dtype + "'");
    }
  }
  if (auto device = parser.value("--device")) load.device(torch::Device(*device));
  hub::DownloadOptions download;
  download.revision = parser.value("--revision");
  download.cache_dir = parser.value("--cache-dir");
  download.local_files_only = parser.flag("--local-files-only");
  load.download(download);

  const std::string folder = resolve_pretrained(parser.positionals()[0], load);
  const Kwargs config_json = read_config_json(folder + "/config.json");
  if (config_json.contains("n_heads_sa")) {
    return run_model<DualAttnTransformerLM>(folder, load, prompt, config);
  }
  return run_model<TransformerLM>(folder, load, prompt, config);
}

}  // namespace

Command generate_command() {
  return {"generate", "continue a prompt with a language model, streaming the tokens",
          run_generate};
}

}  // namespace dual_attention::cli
