#include "session.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>

#include "dual_attention/generation.h"
#include "dual_attention/model_analysis.h"
#include "dual_attention/pretrained.h"
#include "views.h"
#if __has_include("dual_attention/tokenizer.h")
#include "dual_attention/tokenizer.h"
#define DUAL_ATTENTION_APP_HAS_TOKENIZER 1
#endif

namespace fs = std::filesystem;

namespace dual_attention::app {

std::string default_model_path() {
  const fs::path relative = fs::path("build") / "demo" / "shakespeare-dat";
  std::vector<fs::path> candidates = {relative};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / "demo" / "shakespeare-dat");
  for (const auto& c : candidates) {
    if (fs::exists(c / "config.json")) return c.string();
  }
  throw std::runtime_error(
      "no MODEL given and the default model (" + relative.string() +
      ", trained by scripts/demo.sh) does not exist: run scripts/demo.sh first, or name a model "
      "folder or Hugging Face Hub repo id");
}

namespace {

#if DUAL_ATTENTION_APP_HAS_TOKENIZER
class TokenizerCodec : public TextCodec {
 public:
  explicit TokenizerCodec(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
  std::vector<int64_t> encode(const std::string& text) const override {
    return tokenizer_.encode_ordinary(text);
  }
  // Ids the tokenizer does not have (a model's vocabulary is often padded beyond it, as GPT-2's
  // 50257 tokens to 50304) become U+FFFD.
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string bytes;
    for (auto id : ids)
      bytes += tokenizer_.contains(id) ? tokenizer_.decode_single_token_bytes(id) : "\xEF\xBF\xBD";
    return utf8_replace_invalid(bytes);
  }
  std::string token_text(int64_t id) const override { return decode({id}); }
  std::optional<int64_t> eot_token() const override {
    if (!tokenizer_.special_tokens().count(std::string(kEndOfText))) return std::nullopt;
    return tokenizer_.eot_token();
  }
  std::string name() const override { return tokenizer_.name(); }

 private:
  Tokenizer tokenizer_;
};
#else
// Without a tokenizer in this build: text is token ids separated by spaces or commas.
class TokenIdCodec : public TextCodec {
 public:
  std::vector<int64_t> encode(const std::string& text) const override {
    std::string spaced = text;
    for (char& c : spaced)
      if (c == ',') c = ' ';
    std::istringstream in(spaced);
    std::vector<int64_t> ids;
    std::string word;
    while (in >> word) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(word, &used);
      } catch (const std::exception&) {
      }
      if (used != word.size() || id < 0)
        throw std::invalid_argument(
            "this build has no tokenizer: the text must be token ids "
            "separated by spaces or commas, got '" +
            word + "'");
      ids.push_back(id);
    }
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    for (auto id : ids) out += " " + std::to_string(id);
    return out;
  }
  std::string token_text(int64_t id) const override { return std::to_string(id); }
  std::optional<int64_t> eot_token() const override { return std::nullopt; }
  std::string name() const override { return "token ids"; }
};
#endif

bool has_config_key(const std::string& folder, const char* key) {
  return read_config_json(folder + "/config.json").contains(key);
}

// Bytes at the end of `text` that may still change or be cut: the longest tail that begins a stop
// sequence, or trailing U+FFFD (a UTF-8 character whose last bytes are still to come).
size_t unsettled_tail(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const auto& s : stop) {
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  static const std::string replacement = "\xEF\xBF\xBD";
  size_t replaced = 0;
  while (text.size() >= replaced + 3 &&
         text.compare(text.size() - replaced - 3, 3, replacement) == 0)
    replaced += 3;
  return std::max(hold, replaced);
}

}  // namespace

std::unique_ptr<TextCodec> load_text_codec(const std::optional<std::string>& tokenizer_path,
                                           const std::string& model_folder) {
#if DUAL_ATTENTION_APP_HAS_TOKENIZER
  return std::make_unique<TokenizerCodec>(tokenizer_for_model(model_folder, tokenizer_path));
#else
  if (tokenizer_path)
    throw std::invalid_argument("--tokenizer: this build has no tokenizer (give token ids)");
  (void)model_folder;
  return std::make_unique<TokenIdCodec>();
#endif
}

LanguageModelSession::LanguageModelSession(const std::string& name_or_path,
                                           const std::optional<std::string>& tokenizer_path) {
  name = name_or_path.empty() ? default_model_path() : name_or_path;
  folder = resolve_pretrained(name);
  if (has_config_key(folder, "n_heads_sa")) {
    model = DualAttnTransformerLM::from_pretrained(folder);
  } else if (has_config_key(folder, "n_heads")) {
    model = TransformerLM::from_pretrained(folder);
  } else {
    throw std::invalid_argument(
        folder +
        "/config.json: not a language model's config "
        "(expected the keywords of DualAttnTransformerLM or TransformerLM)");
  }
  codec = load_text_codec(tokenizer_path, folder);
}

std::string LanguageModelSession::model_class() const {
  return model.index() == 0 ? "DualAttnTransformerLM" : "TransformerLM";
}

int64_t LanguageModelSession::max_block_size() const {
  return std::visit([](const auto& m) { return m->options.max_block_size(); }, model);
}

int64_t LanguageModelSession::vocab_size() const {
  return std::visit([](const auto& m) { return m->options.vocab_size(); }, model);
}

torch::nn::Module& LanguageModelSession::module() {
  return std::visit([](auto& m) -> torch::nn::Module& { return *m; }, model);
}

Completion LanguageModelSession::complete(const std::vector<int64_t>& prompt,
                                          const SamplingOptions& sampling,
                                          const std::function<bool(const std::string&)>& on_text) {
  TORCH_CHECK(!prompt.empty(), "complete: the prompt has no tokens");
  for (const auto& s : sampling.stop)
    TORCH_CHECK(!s.empty(), "complete: stop sequences must not be empty");
  TORCH_CHECK(sampling.temperature >= 0.0 && std::isfinite(sampling.temperature),
              "complete: temperature must be finite and >= 0, got ", sampling.temperature);
  TORCH_CHECK(sampling.top_p > 0.0 && sampling.top_p <= 1.0,
              "complete: top_p must be in (0, 1], got ", sampling.top_p);
  TORCH_CHECK(!sampling.top_k || *sampling.top_k >= 1, "complete: top_k must be >= 1, got ",
              sampling.top_k.value_or(0));
  for (auto id : prompt)
    TORCH_CHECK(id >= 0 && id < vocab_size(), "complete: prompt token id ", id, " is not in [0, ",
                vocab_size(), ")");
  // The library's generate (KV cache, the cropping past max_block_size of the reference), with
  // the end-of-text token as its eos; the callback turns tokens into settled text.
  GenerationConfig config;
  config.max_new_tokens(sampling.max_new_tokens)
      .do_sample(sampling.temperature > 0.0)
      .temperature(sampling.temperature)
      .top_k(sampling.top_k)
      .seed(sampling.seed ? static_cast<uint64_t>(*sampling.seed)
                          : static_cast<uint64_t>(std::random_device()()));
  if (sampling.top_p < 1.0) config.top_p(sampling.top_p);
  const auto eot = codec->eot_token();
  // A model whose vocabulary stops below the tokenizer's end-of-text id never produces it.
  if (eot && *eot < vocab_size()) config.eos_token_id({*eot});
  Completion c;
  c.prompt_tokens = static_cast<int64_t>(prompt.size());
  c.finish_reason = "length";
  std::string text;
  size_t emitted = 0;
  auto emit = [&](size_t upto) {
    if (upto <= emitted) return true;
    const bool go_on = !on_text || on_text(text.substr(emitted, upto - emitted));
    emitted = upto;
    return go_on;
  };
  auto on_step = [&](const GenerationStep& step) {
    const int64_t next = step.tokens[0];
    if (eot && next == *eot) {
      c.finish_reason = "stop";
      return false;
    }
    c.tokens.push_back(next);
    text = codec->decode(c.tokens);
    size_t cut = std::string::npos;
    for (const auto& s : sampling.stop) cut = std::min(cut, text.find(s));
    if (cut != std::string::npos) {
      text.resize(cut);
      c.finish_reason = "stop";
      return false;
    }
    if (!emit(text.size() - unsettled_tail(text, sampling.stop))) {
      c.finish_reason = "abort";
      return false;
    }
    return true;
  };
  std::visit(
      [&](auto& m) { generate(*m, std::vector<std::vector<int64_t>>{prompt}, config, on_step); },
      model);
  if (c.finish_reason != "abort") emit(text.size());
  c.text = text;
  c.completion_tokens = static_cast<int64_t>(c.tokens.size());
  return c;
}

nlohmann::json LanguageModelSession::visualize(const std::vector<int64_t>& ids, int64_t n_prompt) {
  TORCH_CHECK(!ids.empty(), "visualize: the text has no tokens");
  TORCH_CHECK(static_cast<int64_t>(ids.size()) <= max_block_size(), "visualize: the text is ",
              ids.size(), " tokens, more than the model's max_block_size ", max_block_size());
  torch::NoGradGuard no_grad;
  auto idx = torch::tensor(ids, torch::kLong).unsqueeze(0);
  VisualizationInput input;
  if (auto* dat = std::get_if<DualAttnTransformerLM>(&model)) {
    auto [logits, results] = datlm_forward_w_intermediate_results(**dat, idx);
    input = visualization_input(results, 0, (*dat)->options.ra_type() == "relational_attention");
  } else {
    auto [logits, results] =
        transformerlm_forward_w_intermediate_results(*std::get<TransformerLM>(model), idx);
    input = visualization_input(results, 0, true);
  }
  input.model = name;
  input.model_class = model_class();
  input.n_prompt = n_prompt;
  for (auto id : ids) input.tokens.push_back(codec->token_text(id));
  return visualization_payload(input);
}

}  // namespace dual_attention::app
