// A language model loaded for the tools (`viz`, `serve`, the Python apps), with its tokenizer: a
// DualAttnTransformerLM or a TransformerLM, chosen by its config.json.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "dual_attention/language_models.h"

namespace dual_attention::app {

// The model `serve` and `viz` use when none is named: build/demo/shakespeare-dat, which
// scripts/demo.sh trains, looked for under the current folder and next to the program's build
// folder (<build>/tools/dual-attention -> <build>/demo/shakespeare-dat). Throws std::runtime_error
// telling to run scripts/demo.sh when it does not exist.
std::string default_model_path();

// Text to token ids and back.
class TextCodec {
 public:
  virtual ~TextCodec() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // The text of ids (invalid UTF-8 replaced by U+FFFD).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // The text of one token, as the views show it (its bytes, invalid UTF-8 replaced).
  virtual std::string token_text(int64_t id) const = 0;
  // The end-of-text token, if the vocabulary has one.
  virtual std::optional<int64_t> eot_token() const = 0;
  virtual std::string name() const = 0;
};

// The tokenizer of a model: `tokenizer_path` when given (any format Tokenizer::from_file reads);
// else a tokenizer file in `model_folder` (tokenizer.json, vocab.json + merges.txt, or a
// *.tiktoken file); else get_encoding("gpt2").
std::unique_ptr<TextCodec> load_text_codec(const std::optional<std::string>& tokenizer_path,
                                           const std::string& model_folder);

// How `complete` picks tokens (the fields of an OpenAI completions request).
struct SamplingOptions {
  int64_t max_new_tokens = 16;
  double temperature = 1.0;       // 0: greedy
  std::optional<int64_t> top_k;   // keep the k most likely tokens
  double top_p = 1.0;             // keep the smallest set of probability >= top_p
  std::optional<int64_t> seed;    // unset: a random seed
  std::vector<std::string> stop;  // the text ends before the first of these
};

struct Completion {
  std::string text;  // the generated text, cut before a stop sequence
  int64_t prompt_tokens = 0, completion_tokens = 0;
  std::string finish_reason;    // "stop" (stop sequence or end of text), "length", or "abort"
  std::vector<int64_t> tokens;  // the generated token ids
};

class LanguageModelSession {
 public:
  // A folder or a Hub repo id (resolve_pretrained), or the default model when empty.
  LanguageModelSession(const std::string& name_or_path,
                       const std::optional<std::string>& tokenizer_path);

  std::string name;    // what the user named (or the default's path)
  std::string folder;  // the checkpoint folder
  std::variant<DualAttnTransformerLM, TransformerLM> model{DualAttnTransformerLM(nullptr)};
  std::unique_ptr<TextCodec> codec;

  std::string model_class() const;
  int64_t max_block_size() const;
  int64_t vocab_size() const;
  torch::nn::Module& module();

  // Generates a continuation of `prompt` (token ids; the context is cropped to the last
  // max_block_size tokens, as the reference's generate does). `on_text` receives each new piece of
  // text once it is final (never the start of a stop sequence, never a cut UTF-8 character);
  // returning false stops the generation (finish_reason "abort"). Not thread-safe: one call at a
  // time per session.
  Completion complete(const std::vector<int64_t>& prompt, const SamplingOptions& sampling,
                      const std::function<bool(const std::string&)>& on_text = {});

  // The payload of the views (views.h) for token ids `ids` (at most max_block_size), of which the
  // first n_prompt came from the prompt. Runs the forward pass with intermediate results.
  nlohmann::json visualize(const std::vector<int64_t>& ids, int64_t n_prompt);
};

}  // namespace dual_attention::app
