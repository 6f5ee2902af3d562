// Text generation for the language models (DualAttnTransformerLM, TransformerLM): one prefill pass
// over the prompt, then one position per step against a KV cache (language_models.h: LMCache), with
// the sampling controls of Hugging Face transformers' `generate`, batches of prompts of different
// lengths, stop conditions and streaming.
//
//   auto model = DualAttnTransformerLM::from_pretrained("path/to/checkpoint");
//   GenerationConfig config;
//   config.max_new_tokens(64).do_sample(true).temperature(0.8).top_p(0.95).seed(1234);
//   auto out = generate(*model, {{464, 3290, 318}, {40, 588}}, config,
//                       [](const GenerationStep& step) {
//                         std::cout << step.tokens[0] << std::flush;
//                         return true;  // false stops the generation
//                       });
//   out.tokens[1];  // the new tokens of the second prompt
//
// Exactness: every step's logits equal those of the model's forward over the whole context (within
// float rounding, tested to 1e-5 relative in float32), so greedy decoding gives the reference's
// tokens. Past max_block_size the context is cropped to the last max_block_size tokens, as the
// reference's generate does, and the cache is refilled from that window at each such step.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dual_attention/language_models.h"

namespace dual_attention {

// The keywords of Hugging Face's GenerationConfig that apply here, with their defaults.
// Sampling pipeline per step, in this order: repetition_penalty, then greedy (argmax) when
// do_sample is false or temperature is 0; otherwise logits / temperature, top_k, top_p, min_p,
// softmax and one draw.
struct GenerationConfig {
  // New tokens per row, at most (fewer when a row stops). >= 0.
  TORCH_ARG(int64_t, max_new_tokens) = 20;
  // false: greedy decoding (argmax); true: sample from the processed distribution.
  TORCH_ARG(bool, do_sample) = false;
  // Divides the logits before sampling. 0 means greedy (even with do_sample). >= 0.
  TORCH_ARG(double, temperature) = 1.0;
  // Keep the top_k most likely tokens (ties at the k-th logit kept). None: no limit (Hugging Face
  // defaults to 50; unset here). >= 1.
  TORCH_ARG(std::optional<int64_t>, top_k) = std::nullopt;
  // Nucleus sampling: keep the smallest set of most likely tokens whose probability mass reaches
  // top_p (the most likely token always stays). In (0, 1]; 1 or None keeps everything.
  TORCH_ARG(std::optional<double>, top_p) = std::nullopt;
  // Keep tokens whose probability is at least min_p times the largest one. In [0, 1].
  TORCH_ARG(std::optional<double>, min_p) = std::nullopt;
  // CTRL's penalty on tokens already in the row (prompt and generated): a positive logit is divided
  // by it, a negative one multiplied. 1 = off. > 0.
  TORCH_ARG(double, repetition_penalty) = 1.0;
  // Seeds a generator private to this call: the same seed gives the same tokens. Without seed and
  // generator, sampling draws from torch's global CPU generator.
  TORCH_ARG(std::optional<uint64_t>, seed) = std::nullopt;
  // A generator to draw from (CPU; takes precedence over seed). Draws happen on the CPU whatever
  // the model's device.
  TORCH_ARG(std::optional<at::Generator>, generator) = std::nullopt;
  // A row stops after producing any of these token ids (the id is part of its output).
  TORCH_ARG(std::vector<int64_t>, eos_token_id) = {};
  // A row stops when its new tokens end with one of these token-id sequences (the sequence is part
  // of its output; the server trims text stop strings itself). Matched on new tokens only.
  TORCH_ARG(std::vector<std::vector<int64_t>>, stop_sequences) = {};
  // Written into `sequences` for the prompt's left padding and after a row stopped. Default: the
  // first eos_token_id, else 0.
  TORCH_ARG(std::optional<int64_t>, pad_token_id) = std::nullopt;
  // false recomputes the whole context at every step, the reference's way (slow; for checking).
  TORCH_ARG(bool, use_cache) = true;
  // Also return each step's processed scores (log-probabilities of the distribution the token was
  // chosen from), [b, vocab_size] per step.
  TORCH_ARG(bool, output_scores) = false;
};

// What the streaming callback sees after each step.
struct GenerationStep {
  int64_t index = 0;             // 0 for the first new token
  std::vector<int64_t> tokens;   // the new token of each row; -1 for a row that had stopped
  std::vector<double> logprobs;  // log-probability of each new token (NaN for stopped rows)
  std::vector<bool> finished;    // whether the row stops with this token (or had stopped)
};
// Called after each step; returning false stops the generation of every row (finish reason
// "callback"): the server's text stop strings and client disconnects.
using GenerationCallback = std::function<bool(const GenerationStep&)>;

struct GenerationOutput {
  // [b, prompt_len + steps] int64: the left-padded prompts and the new tokens; padding and the
  // slots after a row stopped hold pad_token_id.
  torch::Tensor sequences;
  // Each row's new tokens, up to and including the eos token or stop sequence that ended it.
  std::vector<std::vector<int64_t>> tokens;
  // [b, steps] float32 log-probability of each new token under the distribution it was chosen from
  // (after penalty, temperature and filters; greedy: the penalised logits); NaN after a row
  // stopped.
  torch::Tensor logprobs;
  // output_scores: per step, [b, vocab_size] log-probabilities (-inf for filtered tokens).
  std::vector<torch::Tensor> scores;
  // Per row: "length" (max_new_tokens), "eos", "stop" (a stop sequence) or "callback".
  std::vector<std::string> finish_reasons;
};

// Generates from input_ids [b, t] (integer token ids in [0, vocab_size)), optionally left-padded
// with attention_mask [b, t] (1 = token, 0 = padding; the ones of each row must be contiguous and
// last). Runs without grad and does not change the model's training flag (call eval() first:
// from_pretrained does). Errors (c10::Error naming the argument and value): an empty prompt, token
// ids out of range, a bad mask, max_new_tokens < 0, temperature < 0, top_k < 1, top_p outside
// (0, 1], min_p outside [0, 1], repetition_penalty <= 0, an eos or pad id out of range.
GenerationOutput generate(DualAttnTransformerLMImpl& model, const torch::Tensor& input_ids,
                          const GenerationConfig& config = {},
                          const GenerationCallback& callback = {},
                          const torch::Tensor& attention_mask = {});
GenerationOutput generate(TransformerLMImpl& model, const torch::Tensor& input_ids,
                          const GenerationConfig& config = {},
                          const GenerationCallback& callback = {},
                          const torch::Tensor& attention_mask = {});

// A list of prompts of different lengths: left-padded into one batch; each row gets the tokens it
// would get alone.
GenerationOutput generate(DualAttnTransformerLMImpl& model,
                          const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& config = {},
                          const GenerationCallback& callback = {});
GenerationOutput generate(TransformerLMImpl& model,
                          const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& config = {},
                          const GenerationCallback& callback = {});

// The filters of the sampling pipeline, on logits [b, vocab] (float); each returns the logits with
// -inf where a token is removed, and never removes a row's most likely token.
namespace sampling {
torch::Tensor apply_repetition_penalty(const torch::Tensor& logits,
                                       const std::vector<std::vector<int64_t>>& seen,
                                       double penalty);
torch::Tensor top_k_filter(const torch::Tensor& logits, int64_t top_k);
torch::Tensor top_p_filter(const torch::Tensor& logits, double top_p);
torch::Tensor min_p_filter(const torch::Tensor& logits, double min_p);
}  // namespace sampling

}  // namespace dual_attention
