#include "dual_attention/generation.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace dual_attention {
namespace {

using torch::Tensor;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

void check_id(int64_t id, int64_t vocab_size, const char* owner, const char* argument) {
  TORCH_CHECK(id >= 0 && id < vocab_size, owner, ": ", argument, " must be in [0, ", vocab_size,
              ") (vocab_size ", vocab_size, "), got ", id);
}

void check_config(const GenerationConfig& c, int64_t vocab_size, const char* owner) {
  TORCH_CHECK(c.max_new_tokens() >= 0, owner, ": max_new_tokens must be >= 0, got ",
              c.max_new_tokens());
  TORCH_CHECK(c.temperature() >= 0.0 && std::isfinite(c.temperature()), owner,
              ": temperature must be >= 0 and finite (0 = greedy), got ", c.temperature());
  TORCH_CHECK(!c.top_k() || *c.top_k() >= 1, owner, ": top_k must be >= 1, got ",
              c.top_k().value_or(0));
  TORCH_CHECK(!c.top_p() || (*c.top_p() > 0.0 && *c.top_p() <= 1.0), owner,
              ": top_p must be in (0, 1], got ", c.top_p().value_or(0.0));
  TORCH_CHECK(!c.min_p() || (*c.min_p() >= 0.0 && *c.min_p() <= 1.0), owner,
              ": min_p must be in [0, 1], got ", c.min_p().value_or(0.0));
  TORCH_CHECK(c.repetition_penalty() > 0.0 && std::isfinite(c.repetition_penalty()), owner,
              ": repetition_penalty must be positive and finite (1 = off), got ",
              c.repetition_penalty());
  for (int64_t id : c.eos_token_id()) check_id(id, vocab_size, owner, "eos_token_id");
  if (c.pad_token_id()) check_id(*c.pad_token_id(), vocab_size, owner, "pad_token_id");
  for (const auto& stop : c.stop_sequences()) {
    TORCH_CHECK(!stop.empty(), owner, ": stop_sequences must not hold an empty sequence");
    for (int64_t id : stop) check_id(id, vocab_size, owner, "stop_sequences token ids");
  }
  TORCH_CHECK(!c.generator() || c.generator()->device().is_cpu(), owner,
              ": generator must be a CPU generator (sampling draws on the CPU), got one on ",
              c.generator()->device());
}

// The real tokens of each row of input_ids [b, t] (left padding removed by attention_mask).
std::vector<std::vector<int64_t>> prompts_of(const Tensor& input_ids, const Tensor& attention_mask,
                                             const char* owner) {
  TORCH_CHECK(input_ids.defined(), owner,
              ": input_ids is undefined; expected token ids [batch, seq_len]");
  TORCH_CHECK(input_ids.dim() == 2, owner,
              ": input_ids must be token ids of shape [batch, seq_len], got shape ",
              input_ids.sizes());
  TORCH_CHECK(c10::isIntegralType(input_ids.scalar_type(), /*includeBool=*/false), owner,
              ": input_ids must hold integer token ids, got dtype ", input_ids.scalar_type());
  TORCH_CHECK(input_ids.numel() > 0, owner, ": the prompt is empty (input_ids of shape ",
              input_ids.sizes(), "); expected at least one token per row");
  auto ids = input_ids.to(torch::kCPU, torch::kLong).contiguous();
  Tensor mask;
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.sizes() == input_ids.sizes(), owner,
                ": attention_mask must have the shape of input_ids ", input_ids.sizes(), ", got ",
                attention_mask.sizes());
    mask = attention_mask.to(torch::kCPU, torch::kLong).contiguous();
    TORCH_CHECK(((mask == 0) | (mask == 1)).all().item<bool>(), owner,
                ": attention_mask must hold 0 (padding) and 1 (token)");
  }
  const int64_t b = ids.size(0), t = ids.size(1);
  std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(b));
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* m = mask.defined() ? mask.data_ptr<int64_t>() : nullptr;
  for (int64_t r = 0; r < b; ++r) {
    int64_t first = 0;
    if (m) {
      while (first < t && m[r * t + first] == 0) ++first;
      for (int64_t j = first; j < t; ++j) {
        TORCH_CHECK(m[r * t + j] == 1, owner, ": attention_mask row ", r,
                    " has padding after a token (at position ", j,
                    "); generate needs left padding (the ones of a row contiguous and last)");
      }
      TORCH_CHECK(first < t, owner, ": the prompt of row ", r,
                  " is empty (attention_mask is all 0); expected at least one token");
    }
    prompts[r].assign(id + r * t + first, id + (r + 1) * t);
  }
  return prompts;
}

void check_prompts(const std::vector<std::vector<int64_t>>& prompts, int64_t vocab_size,
                   const char* owner) {
  TORCH_CHECK(!prompts.empty(), owner, ": no prompts given; expected at least one");
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  for (size_t r = 0; r < prompts.size(); ++r) {
    TORCH_CHECK(!prompts[r].empty(), owner, ": prompt ", r,
                " is empty; expected at least one token");
    for (int64_t id : prompts[r]) lo = std::min(lo, id), hi = std::max(hi, id);
  }
  TORCH_CHECK(lo >= 0 && hi < vocab_size, owner, ": token ids must be in [0, ", vocab_size,
              ") (vocab_size ", vocab_size, "), got ids from ", lo, " to ", hi);
}

bool ends_with(const std::vector<int64_t>& tokens, const std::vector<int64_t>& tail) {
  return tokens.size() >= tail.size() &&
         std::equal(tail.begin(), tail.end(), tokens.end() - static_cast<ptrdiff_t>(tail.size()));
}

template <class Model>
GenerationOutput run_generation(Model& model, std::vector<std::vector<int64_t>> rows,
                                const GenerationConfig& c, const GenerationCallback& callback) {
  const char* owner = "generate";
  const auto& o = model.options;
  const int64_t vocab_size = o.vocab_size(), block = o.max_block_size();
  check_config(c, vocab_size, owner);
  check_prompts(rows, vocab_size, owner);
  torch::NoGradGuard no_grad;

  const int64_t b = static_cast<int64_t>(rows.size()), max_new = c.max_new_tokens();
  const auto device = model.final_out->weight.device();
  const int64_t pad_id =
      c.pad_token_id().value_or(c.eos_token_id().empty() ? 0 : c.eos_token_id().front());
  std::vector<int64_t> prompt_len(rows.size());
  int64_t longest = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    prompt_len[r] = static_cast<int64_t>(rows[r].size());
    longest = std::max(longest, prompt_len[r]);
  }
  const auto generator = [&]() -> std::optional<at::Generator> {
    if (c.generator()) return c.generator();
    if (c.seed()) return at::detail::createCPUGenerator(*c.seed());
    return std::nullopt;
  }();
  const bool greedy = !c.do_sample() || c.temperature() == 0.0;

  // Slots: the longest window plus the new tokens, at most a block; past it every step refills.
  LMCache cache = model.make_cache(b, std::min(longest + max_new, block));
  // Logits [b, vocab] of the next token after each row's last min(length, block) tokens (the
  // reference's crop), left-padded, computed from scratch: into the cache, or (use_cache=false
  // without padding) by the plain forward, the reference's computation.
  auto from_window = [&]() {
    int64_t width = 0;
    for (const auto& row : rows) width = std::max(width, std::min<int64_t>(row.size(), block));
    auto ids = torch::zeros({b, width}, torch::kLong);
    auto padding = torch::zeros({b}, torch::kLong);
    bool padded = false;
    for (int64_t r = 0; r < b; ++r) {
      const auto& row = rows[r];
      const int64_t n = std::min<int64_t>(row.size(), block);
      padding[r] = width - n;
      padded = padded || n < width;
      std::copy(row.end() - n, row.end(), ids[r].data_ptr<int64_t>() + (width - n));
    }
    ids = ids.to(device);
    if (!c.use_cache() && !padded) return std::get<0>(model.forward(ids)).select(1, -1);
    LMCache* target = &cache;
    LMCache fresh;
    if (!c.use_cache()) {
      fresh = model.make_cache(b, width);
      target = &fresh;
    }
    target->reset(padded ? padding : Tensor());
    return model.forward_cached(ids, *target, 1).select(1, 0);
  };

  GenerationOutput out;
  out.tokens.resize(rows.size());
  out.finish_reasons.assign(rows.size(), "length");
  std::vector<bool> done(rows.size(), false);
  std::vector<Tensor> logprob_steps;
  Tensor logits = max_new > 0 ? from_window() : Tensor();
  for (int64_t step = 0; step < max_new; ++step) {
    // ---- choose the next token of each row: penalty -> greedy | temperature, filters, draw
    auto scores = logits.to(torch::kCPU, torch::kFloat);  // [b, vocab]
    if (c.repetition_penalty() != 1.0) {
      scores = sampling::apply_repetition_penalty(scores, rows, c.repetition_penalty());
    }
    Tensor next;  // [b] int64
    if (greedy) {
      next = scores.argmax(-1);
    } else {
      scores = scores / c.temperature();
      if (c.top_k()) scores = sampling::top_k_filter(scores, *c.top_k());
      if (c.top_p() && *c.top_p() < 1.0) scores = sampling::top_p_filter(scores, *c.top_p());
      if (c.min_p()) scores = sampling::min_p_filter(scores, *c.min_p());
      next = torch::multinomial(torch::softmax(scores, -1), 1, false, generator).squeeze(1);
    }
    auto logprobs = torch::log_softmax(scores, -1);  // [b, vocab]
    auto chosen = logprobs.gather(1, next.unsqueeze(1)).squeeze(1);
    if (c.output_scores()) out.scores.push_back(logprobs);

    // ---- record, stop conditions, stream
    GenerationStep report;
    report.index = step;
    const auto* next_ids = next.data_ptr<int64_t>();
    const auto* next_logprobs = chosen.data_ptr<float>();
    for (int64_t r = 0; r < b; ++r) {
      if (done[r]) {
        report.tokens.push_back(-1);
        report.logprobs.push_back(std::nan(""));
        report.finished.push_back(true);
        chosen[r] = std::nanf("");
        continue;
      }
      const int64_t token = next_ids[r];
      rows[r].push_back(token);
      out.tokens[r].push_back(token);
      const auto& eos = c.eos_token_id();
      if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
        done[r] = true, out.finish_reasons[r] = "eos";
      } else {
        for (const auto& stop : c.stop_sequences()) {
          if (ends_with(out.tokens[r], stop)) done[r] = true, out.finish_reasons[r] = "stop";
        }
      }
      report.tokens.push_back(token);
      report.logprobs.push_back(next_logprobs[r]);
      report.finished.push_back(done[r]);
    }
    logprob_steps.push_back(chosen);
    if (callback && !callback(report)) {
      for (int64_t r = 0; r < b; ++r) {
        if (!done[r]) done[r] = true, out.finish_reasons[r] = "callback";
      }
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    if (step + 1 == max_new) break;

    // ---- the next logits: one new position against the cache, or a new window past the block
    if (!c.use_cache() || cache.length + 1 > cache.capacity) {
      logits = from_window();
    } else {
      auto feed = torch::empty({b, 1}, torch::kLong);
      for (int64_t r = 0; r < b; ++r) feed[r][0] = done[r] ? pad_id : rows[r].back();
      logits = model.forward_cached(feed.to(device), cache, 1).select(1, 0);
    }
  }

  // ---- sequences [b, longest + steps]: the left-padded prompts, then the new tokens
  const int64_t steps = static_cast<int64_t>(logprob_steps.size());
  out.sequences = torch::full({b, longest + steps}, pad_id, torch::kLong);
  for (int64_t r = 0; r < b; ++r) {
    auto* dst = out.sequences[r].data_ptr<int64_t>();
    std::copy(rows[r].begin(), rows[r].begin() + prompt_len[r], dst + (longest - prompt_len[r]));
    std::copy(out.tokens[r].begin(), out.tokens[r].end(), dst + longest);
  }
  out.logprobs = steps > 0 ? torch::stack(logprob_steps, 1) : torch::empty({b, 0});
  return out;
}

}  // namespace

namespace sampling {

Tensor apply_repetition_penalty(const Tensor& logits, const std::vector<std::vector<int64_t>>& seen,
                                double penalty) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == static_cast<int64_t>(seen.size()),
              "apply_repetition_penalty: logits must be [", seen.size(), ", vocab], got ",
              logits.sizes());
  auto out = logits.clone();
  for (size_t r = 0; r < seen.size(); ++r) {
    if (seen[r].empty()) continue;
    auto ids = std::get<0>(torch::_unique(torch::tensor(seen[r], torch::kLong)));
    auto row = out[static_cast<int64_t>(r)];
    auto values = row.index_select(0, ids);
    row.index_copy_(0, ids, torch::where(values < 0, values * penalty, values / penalty));
  }
  return out;
}

Tensor top_k_filter(const Tensor& logits, int64_t top_k) {
  TORCH_CHECK(top_k >= 1, "top_k_filter: top_k must be >= 1, got ", top_k);
  const int64_t k = std::min(top_k, logits.size(-1));
  auto kth = std::get<0>(torch::topk(logits, k)).narrow(-1, k - 1, 1);  // [b, 1]
  return logits.masked_fill(logits < kth, kNegInf);
}

Tensor top_p_filter(const Tensor& logits, double top_p) {
  TORCH_CHECK(top_p > 0.0 && top_p <= 1.0, "top_p_filter: top_p must be in (0, 1], got ", top_p);
  auto [sorted, order] = torch::sort(logits, -1, /*descending=*/true);
  auto probs = torch::softmax(sorted, -1);
  // A token stays while the mass of the tokens before it is below top_p: the smallest set whose
  // mass reaches top_p. The first (most likely) token always stays.
  auto mass_before = probs.cumsum(-1) - probs;
  auto remove_sorted = mass_before >= top_p;
  remove_sorted.select(-1, 0).fill_(false);
  auto remove = torch::zeros_like(remove_sorted).scatter_(-1, order, remove_sorted);
  return logits.masked_fill(remove, kNegInf);
}

Tensor min_p_filter(const Tensor& logits, double min_p) {
  TORCH_CHECK(min_p >= 0.0 && min_p <= 1.0, "min_p_filter: min_p must be in [0, 1], got ", min_p);
  auto probs = torch::softmax(logits, -1);
  auto threshold = std::get<0>(probs.max(-1, /*keepdim=*/true)) * min_p;  // [b, 1]
  return logits.masked_fill(probs < threshold, kNegInf);
}

}  // namespace sampling

GenerationOutput generate(DualAttnTransformerLMImpl& model, const Tensor& input_ids,
                          const GenerationConfig& config, const GenerationCallback& callback,
                          const Tensor& attention_mask) {
  return run_generation(model, prompts_of(input_ids, attention_mask, "generate"), config, callback);
}

GenerationOutput generate(TransformerLMImpl& model, const Tensor& input_ids,
                          const GenerationConfig& config, const GenerationCallback& callback,
                          const Tensor& attention_mask) {
  return run_generation(model, prompts_of(input_ids, attention_mask, "generate"), config, callback);
}

GenerationOutput generate(DualAttnTransformerLMImpl& model,
                          const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& config, const GenerationCallback& callback) {
  return run_generation(model, prompts, config, callback);
}

GenerationOutput generate(TransformerLMImpl& model,
                          const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& config, const GenerationCallback& callback) {
  return run_generation(model, prompts, config, callback);
}

// ---- the reference's generate ------------------------------------------------------------------

namespace detail {

template <class Derived, class Options>
torch::Tensor LanguageModelImpl<Derived, Options>::generate(torch::Tensor idx,
                                                            int64_t max_new_tokens,
                                                            double temperature,
                                                            std::optional<int64_t> top_k) {
  const std::string owner = std::string(owner_) + ".generate";
  TORCH_CHECK(max_new_tokens >= 0, owner, ": max_new_tokens must be >= 0, got ", max_new_tokens);
  TORCH_CHECK(temperature > 0.0 && std::isfinite(temperature), owner,
              ": temperature must be positive and finite, got ", temperature);
  TORCH_CHECK(!top_k || *top_k >= 1, owner, ": top_k must be >= 1, got ", top_k.value_or(0));
  TORCH_CHECK(idx.defined() && idx.dim() == 2, owner,
              ": idx must be token ids of shape [batch, seq_len], got ",
              idx.defined() ? c10::str("shape ", idx.sizes()) : "an undefined tensor");
  // Sampling from softmax(logits / temperature) after top-k with torch.multinomial on the global
  // generator, as the reference's loop does; only the logits come from the cache.
  GenerationConfig config;
  config.max_new_tokens(max_new_tokens).do_sample(true).temperature(temperature).top_k(top_k);
  auto out = dual_attention::generate(static_cast<Derived&>(*this), idx, config);
  return out.sequences.to(idx.device(), idx.scalar_type());
}

template torch::Tensor
LanguageModelImpl<DualAttnTransformerLMImpl, DualAttnTransformerLMOptions>::generate(
    torch::Tensor, int64_t, double, std::optional<int64_t>);
template torch::Tensor LanguageModelImpl<TransformerLMImpl, TransformerLMOptions>::generate(
    torch::Tensor, int64_t, double, std::optional<int64_t>);

}  // namespace detail
}  // namespace dual_attention
