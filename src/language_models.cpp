#include "dual_attention/language_models.h"

#include <cmath>
#include <limits>
#include <utility>

#include "dual_attention/attention_utils.h"
#include "dual_attention/relational_attention.h"
#include "dual_attention/symbol_retrieval.h"

namespace dual_attention {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The checks both models make before running: idx is [batch, seq_len] of integer ids in
// [0, vocab_size) (one min/max reduction). Returns the ids as int64, as Embedding needs.
torch::Tensor check_token_ids(const torch::Tensor& idx, int64_t vocab_size, const char* owner) {
  TORCH_CHECK(idx.defined(), owner, ": idx is undefined; expected token ids [batch, seq_len]");
  TORCH_CHECK(idx.dim() == 2, owner,
              ": idx must be token ids of shape [batch, seq_len], got shape ", idx.sizes());
  TORCH_CHECK(c10::isIntegralType(idx.scalar_type(), /*includeBool=*/false), owner,
              ": idx must hold integer token ids, got dtype ", idx.scalar_type());
  TORCH_CHECK(idx.numel() > 0, owner, ": idx must not be empty, got shape ", idx.sizes());
  const auto [lo, hi] = torch::aminmax(idx);
  const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
  TORCH_CHECK(min_id >= 0 && max_id < vocab_size, owner, ": token ids must be in [0, ", vocab_size,
              ") (vocab_size ", vocab_size, "), got ids from ", min_id, " to ", max_id);
  return idx.to(torch::kLong);
}

// The reference's _init_weights over every module, then the scaled init of the weights that add to
// the residual stream.
void init_lm_weights(torch::nn::Module& model, const std::string& activation, int64_t n_layers) {
  torch::NoGradGuard no_grad;
  model.apply([](torch::nn::Module& m) {
    if (auto* linear = m.as<torch::nn::Linear>()) {
      linear->weight.normal_(0.0, 0.02);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* relational = m.as<RelationalAttention>()) {
      relational->wr.normal_(0.0, 0.02);
    } else if (auto* embedding = m.as<torch::nn::Embedding>()) {
      embedding->weight.normal_(0.0, 0.02);
    }
  });
  const std::string last_mlp_layer = activation == "swiglu" ? "linear3.weight" : "linear2.weight";
  const double std = 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers));
  for (auto& p : model.named_parameters()) {
    if (ends_with(p.key(), last_mlp_layer) || ends_with(p.key(), "wo.weight")) {
      p.value().normal_(0.0, std);
    }
  }
}

}  // namespace

torch::optim::AdamW configure_optimizers(const torch::nn::Module& model, double weight_decay,
                                         double learning_rate, std::tuple<double, double> betas) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : detail::unique_parameters(model)) {
    if (!p.requires_grad()) continue;
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  auto group_options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(learning_rate).betas(betas).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, group_options(weight_decay));
  groups.emplace_back(no_decay, group_options(0.0));
  return torch::optim::AdamW(std::move(groups),
                             torch::optim::AdamWOptions(learning_rate).betas(betas));
}

// ---- What both models share ----------------------------------------------------------------

namespace detail {

template <class Derived, class Options>
void LanguageModelImpl<Derived, Options>::check_options() const {
  const auto& o = options;
  TORCH_CHECK(o.vocab_size() > 0, owner_, ": vocab_size must be positive, got ", o.vocab_size());
  TORCH_CHECK(o.d_model() > 0, owner_, ": d_model must be positive, got ", o.d_model());
  TORCH_CHECK(o.n_layers() >= 0, owner_, ": n_layers must be >= 0, got ", o.n_layers());
  TORCH_CHECK(o.max_block_size() > 0, owner_, ": max_block_size must be positive, got ",
              o.max_block_size());
  TORCH_CHECK(o.dropout_rate() >= 0.0 && o.dropout_rate() <= 1.0, owner_,
              ": dropout_rate must be in [0, 1], got ", o.dropout_rate());
  static const std::vector<std::string> pos_enc_types = {"pos_emb", "RoPE"};
  check_one_of(owner_, "pos_enc_type", o.pos_enc_type(), pos_enc_types);
}

template <class Derived, class Options>
void LanguageModelImpl<Derived, Options>::register_layers(const NamedModules& middle,
                                                          int64_t n_heads,
                                                          const char* heads_argument) {
  const auto& o = options;
  // The output layer and the token embedding share one weight (one tensor, two names).
  final_out = torch::nn::Linear(torch::nn::LinearOptions(o.d_model(), o.vocab_size()).bias(false));
  token_embedder = torch::nn::Embedding(
      torch::nn::EmbeddingOptions(o.vocab_size(), o.d_model())._weight(final_out->weight));
  dropout = torch::nn::Dropout(o.dropout_rate());
  norm = create_norm(o.d_model(), o.norm_type());
  NamedModules named = {{"token_embedder", token_embedder.ptr()}, {"dropout", dropout.ptr()}};
  named.insert(named.end(), middle.begin(), middle.end());
  named.emplace_back("norm", norm.ptr());
  named.emplace_back("final_out", final_out.ptr());
  if (o.pos_enc_type() == "pos_emb") {
    positional_embedder = torch::nn::Embedding(o.max_block_size(), o.d_model());
    named.emplace_back("positional_embedder", positional_embedder.ptr());
  } else {
    TORCH_CHECK(n_heads > 0, owner_, ": ", heads_argument, " must be positive, got ", n_heads);
    std::tie(freqs_cos, freqs_sin) =
        precompute_freqs_cis(o.d_model() / n_heads, o.max_block_size());
    freqs_cos = this->register_buffer("freqs_cos", freqs_cos);
    freqs_sin = this->register_buffer("freqs_sin", freqs_sin);
  }
  layers = this->register_module("layers", torch::nn::ModuleDict(named));
}

template <class Derived, class Options>
torch::Tensor LanguageModelImpl<Derived, Options>::token_ids(const torch::Tensor& idx) const {
  auto ids = check_token_ids(idx, options.vocab_size(), owner_);
  TORCH_CHECK(ids.size(1) <= options.max_block_size(), owner_, ": input sequence length ",
              ids.size(1), " exceeds max_block_size ", options.max_block_size());
  return ids;
}

template <class Derived, class Options>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> LanguageModelImpl<Derived, Options>::embed(
    const torch::Tensor& ids, const torch::Tensor& positions) {
  auto x = token_embedder(ids);  // [b, t, d_model]
  if (positional_embedder) return {x + positional_embedder(positions), {}, {}};
  auto angles = [&](const torch::Tensor& table) {  // [t | b, t, head_dim / 2]
    auto rows = table.index_select(0, positions.reshape({-1}));
    auto shape = positions.sizes().vec();
    shape.push_back(table.size(1));
    return rows.view(shape);
  };
  return {x, angles(freqs_cos), angles(freqs_sin)};
}

template <class Derived, class Options>
torch::Tensor LanguageModelImpl<Derived, Options>::loss(const torch::Tensor& logits,
                                                        const torch::Tensor& targets) const {
  if (!targets.defined()) return {};
  const int64_t vocab_size = logits.size(-1);
  TORCH_CHECK(targets.sizes() == logits.sizes().slice(0, 2), owner_,
              ": targets must have the shape of idx ", logits.sizes().slice(0, 2), ", got ",
              targets.sizes());
  TORCH_CHECK(c10::isIntegralType(targets.scalar_type(), /*includeBool=*/false), owner_,
              ": targets must hold integer token ids, got dtype ", targets.scalar_type());
  const auto [lo, hi] = torch::aminmax(targets);
  const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
  TORCH_CHECK(min_id >= -1 && max_id < vocab_size, owner_, ": targets must be in [0, ", vocab_size,
              ") or -1 (ignored), got values from ", min_id, " to ", max_id);
  namespace F = torch::nn::functional;
  return F::cross_entropy(logits.reshape({-1, vocab_size}), targets.reshape({-1}).to(torch::kLong),
                          F::CrossEntropyFuncOptions().ignore_index(-1));
}

template <class Derived, class Options>
LMCache LanguageModelImpl<Derived, Options>::make_cache(int64_t batch_size, int64_t capacity,
                                                        torch::Tensor padding) const {
  TORCH_CHECK(batch_size > 0, owner_, ": the cache's batch_size must be positive, got ",
              batch_size);
  TORCH_CHECK(capacity >= 1 && capacity <= options.max_block_size(), owner_,
              ": the cache's capacity must be in [1, max_block_size = ", options.max_block_size(),
              "], got ", capacity);
  LMCache cache;
  const int64_t modules_per_block = std::is_same_v<Derived, TransformerLMImpl> ? 1 : 2;
  cache.layers.resize(static_cast<size_t>(modules_per_block * options.n_layers()));
  cache.capacity = capacity;
  cache.batch_size = batch_size;
  cache.reset(std::move(padding));
  return cache;
}

template <class Derived, class Options>
std::tuple<torch::Tensor, CacheStep> LanguageModelImpl<Derived, Options>::cache_step(
    const LMCache& cache, int64_t batch, int64_t t) const {
  TORCH_CHECK(batch == cache.batch_size, owner_, ": idx has ", batch,
              " rows but the cache was made for ", cache.batch_size);
  TORCH_CHECK(t >= 1 && cache.length + t <= cache.capacity, owner_, ": ", t,
              " new tokens do not fit the cache (", cache.length, " of ", cache.capacity,
              " slots filled)");
  const auto device = final_out->weight.device();
  auto idx = torch::dtype(torch::kLong).device(device);
  CacheStep step;
  step.start = cache.length;
  step.capacity = cache.capacity;
  const int64_t end = step.start + t;
  auto query_slots = torch::arange(step.start, end, idx);  // [t]
  auto positions = query_slots.unsqueeze(0).expand({batch, t});
  const bool padded = cache.padding.defined() && cache.padding.any().item<bool>();
  if (padded) {
    auto padding = cache.padding.to(device).view({batch, 1});
    positions = (positions - padding).clamp_min(0);  // pad slots read position 0, unused
    // Query i may see key j <= i that is a real token; pad queries see themselves (no empty rows).
    auto key_slots = torch::arange(end, idx);
    auto causal = detail::causal_mask(t, end, step.start, device);                // [t, end]
    auto real = (key_slots.unsqueeze(0) >= padding).unsqueeze(1);                 // [b, 1, end]
    auto self = key_slots.unsqueeze(0) == query_slots.unsqueeze(1);               // [t, end]
    step.mask = (causal.unsqueeze(0) & (real | self.unsqueeze(0))).unsqueeze(1);  // [b,1,t,end]
  } else if (t > 1 && step.start == 0) {
    step.causal = true;
  } else if (t > 1) {
    step.mask = detail::causal_mask(t, end, step.start, device);
  }
  return {positions.contiguous(), step};
}

template <class Derived, class Options>
void LanguageModelImpl<Derived, Options>::reset_parameters() {
  init_lm_weights(*this, options.activation(), options.n_layers());
}

template <class Derived, class Options>
std::shared_ptr<torch::nn::Module> LanguageModelImpl<Derived, Options>::clone(
    const std::optional<torch::Device>& device) const {
  return clone_model(static_cast<const Derived&>(*this), device);
}

template <class Derived, class Options>
int64_t LanguageModelImpl<Derived, Options>::get_num_params(bool non_embedding) const {
  int64_t n = count_unique_parameters(*this);
  if (non_embedding && positional_embedder) n -= positional_embedder->weight.numel();
  return n;
}

template <class Derived, class Options>
torch::optim::AdamW LanguageModelImpl<Derived, Options>::configure_optimizers(
    double weight_decay, double learning_rate, std::tuple<double, double> betas) const {
  return dual_attention::configure_optimizers(*this, weight_decay, learning_rate, betas);
}

template <class Derived, class Options>
std::vector<std::string> LanguageModelImpl<Derived, Options>::non_persistent_buffers() const {
  return {"freqs_cos", "freqs_sin"};
}

template class LanguageModelImpl<DualAttnTransformerLMImpl, DualAttnTransformerLMOptions>;
template class LanguageModelImpl<TransformerLMImpl, TransformerLMOptions>;

}  // namespace detail

// ---- DualAttnTransformerLM -----------------------------------------------------------------

DualAttnTransformerLMImpl::DualAttnTransformerLMImpl(const DualAttnTransformerLMOptions& options_)
    : LanguageModelImpl(options_, "DualAttnTransformerLM") {
  reset();
}

void DualAttnTransformerLMImpl::reset() {
  const auto& o = options;
  check_options();
  // symbol_retriever_config: {shared_symbol_retriever: true, weight_tie_symbol_library: false}.
  bool shared = true, tie_library = false;
  const Kwargs config = o.symbol_retriever_config();
  TORCH_CHECK(config.is_null() || config.is_object(), owner_,
              ": symbol_retriever_config must be a dict or None, got ", config.dump());
  if (config.is_object()) {
    for (const auto& item : config.items()) {
      TORCH_CHECK(
          item.key() == "shared_symbol_retriever" || item.key() == "weight_tie_symbol_library",
          owner_, ": unexpected key '", item.key(),
          "' in symbol_retriever_config; valid keys are: shared_symbol_retriever, "
          "weight_tie_symbol_library");
      detail::read_kwarg(std::string(owner_) + " symbol_retriever_config", item.key(), item.value(),
                         item.key() == "shared_symbol_retriever" ? shared : tie_library);
    }
    // The reference fills in the dict it is given (setdefault), so a checkpoint saved by its mixin
    // holds both keys; so does ours.
    options.symbol_retriever_config(
        {{"shared_symbol_retriever", shared}, {"weight_tie_symbol_library", tie_library}});
  }

  // One retriever object in every layer, or one per layer.
  symbol_retriever.clear();
  symbol_retrievers = torch::nn::ModuleList();
  for (int64_t i = 0; i < o.n_layers(); ++i) {
    if (i == 0 || !shared) {
      symbol_retriever.push_back(make_symbol_retriever(
          o.symbol_retrieval(), o.symbol_retrieval_kwargs(), /*allow_rel_sym_attn=*/false));
    } else {
      symbol_retriever.push_back(symbol_retriever.front());
    }
    symbol_retrievers->push_back(symbol_retriever.back().ptr());
  }
  if (!shared && tie_library) {
    TORCH_CHECK(o.symbol_retrieval() != "position_relative", owner_,
                ": weight_tie_symbol_library is not implemented for 'position_relative' symbol "
                "retrieval (as in the reference)");
    for (int64_t i = 1; i < o.n_layers(); ++i) {
      if (auto* first = symbol_retriever[0].ptr()->as<SymbolicAttention>()) {
        symbol_retriever[i].ptr()->as<SymbolicAttention>()->tie_symbol_library(
            first->symbol_library);
      } else {
        auto* positional = symbol_retriever[i].ptr()->as<PositionalSymbolRetriever>();
        positional->symbol_library = positional->replace_module(
            "symbol_library",
            symbol_retriever[0].ptr()->as<PositionalSymbolRetriever>()->symbol_library);
      }
    }
  }

  blocks = torch::nn::ModuleList();
  for (int64_t i = 0; i < o.n_layers(); ++i) {
    blocks->push_back(DualAttnEncoderBlock(
        DualAttnEncoderBlockOptions(o.d_model(), o.n_heads_sa(), o.n_heads_ra(), o.dff(),
                                    o.activation(), o.dropout_rate(), o.norm_first())
            .norm_type(o.norm_type())
            .sa_kwargs(o.sa_kwargs())
            .ra_kwargs(o.ra_kwargs())
            .ra_type(o.ra_type())
            .share_attn_params(o.share_attn_params())
            .causal(true)));
  }

  // The reference sizes the RoPE tables by d_model / (n_heads_sa + n_heads_ra).
  register_layers({{"symbol_retrievers", symbol_retrievers.ptr()}, {"blocks", blocks.ptr()}},
                  o.n_heads_sa() + o.n_heads_ra(), "n_heads_sa + n_heads_ra");
  reset_parameters();
}

void DualAttnTransformerLMImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << std::boolalpha << "dual_attention::DualAttnTransformerLM(vocab_size=" << o.vocab_size()
         << ", d_model=" << o.d_model() << ", n_layers=" << o.n_layers()
         << ", n_heads_sa=" << o.n_heads_sa() << ", n_heads_ra=" << o.n_heads_ra()
         << ", max_block_size=" << o.max_block_size()
         << ", symbol_retrieval=" << o.symbol_retrieval() << ", pos_enc_type=" << o.pos_enc_type()
         << ")";
}

std::tuple<torch::Tensor, torch::Tensor> DualAttnTransformerLMImpl::forward(
    const torch::Tensor& idx, const torch::Tensor& targets) {
  auto ids = token_ids(idx);  // [b, t]
  const int64_t t = ids.size(1);
  auto positions = torch::arange(t, ids.options());  // [t]
  auto [x, cos, sin] = embed(ids, positions);        // [b, t, d]; [t, head_dim / 2]
  for (size_t i = 0; i < blocks->size(); ++i) {
    auto symbols = symbol_retriever[i].forward(x);  // [b, t, d] or [t, t, d]
    x = blocks->ptr<DualAttnEncoderBlockImpl>(i)->forward(x, symbols, cos, sin);  // [b, t, d]
  }
  auto logits = final_out(norm.forward(x));  // [b, t, vocab_size]
  return {logits, loss(logits, targets)};
}

torch::Tensor DualAttnTransformerLMImpl::forward_cached(const torch::Tensor& idx, LMCache& cache,
                                                        int64_t logits_to_keep) {
  torch::NoGradGuard no_grad;
  auto ids = token_ids(idx);  // [b, t]
  const int64_t t = ids.size(1);
  auto [positions, step] = cache_step(cache, ids.size(0), t);  // [b, t]
  auto [x, cos, sin] = embed(ids, positions);                  // [b, t, d]; [b, t, hd / 2]
  for (size_t i = 0; i < blocks->size(); ++i) {
    // Symbols of the new positions only: symbolic attention reads its own position's input,
    // positional symbols the absolute position; relative ones pass their table (s_ij = row j - i).
    torch::Tensor symbols;
    auto* retriever = symbol_retriever[i].ptr().get();
    if (auto* relative = dynamic_cast<PositionRelativeSymbolRetrieverImpl*>(retriever)) {
      symbols = relative->rel_pos_enc->rel_pos_embeddings;  // [2m + 1, d]
    } else if (auto* positional = dynamic_cast<PositionalSymbolRetrieverImpl*>(retriever)) {
      symbols = positional->symbol_library(positions);  // [b, t, d]
    } else {
      symbols = symbol_retriever[i].forward(x);  // [b, t, d]
    }
    x = blocks->ptr<DualAttnEncoderBlockImpl>(i)->forward_cached(
        x, symbols, cos, sin, cache.layers[2 * i], cache.layers[2 * i + 1], step);
  }
  cache.length += t;
  const int64_t keep = logits_to_keep > 0 ? std::min(logits_to_keep, t) : t;
  return final_out(norm.forward(x.slice(1, t - keep)));  // [b, keep, vocab_size]
}

// ---- TransformerLM -------------------------------------------------------------------------

TransformerLMImpl::TransformerLMImpl(const TransformerLMOptions& options_)
    : LanguageModelImpl(options_, "TransformerLM") {
  reset();
}

void TransformerLMImpl::reset() {
  const auto& o = options;
  check_options();
  check_no_reserved_kwargs(o.block_kwargs(),
                           {"d_model", "n_heads", "dff", "dropout_rate", "activation", "norm_first",
                            "norm_type", "bias", "causal"},
                           owner_, "block_kwargs");

  blocks = torch::nn::ModuleList();
  for (int64_t i = 0; i < o.n_layers(); ++i) {
    EncoderBlockOptions block(o.d_model(), o.n_heads(), o.dff(), o.dropout_rate(), o.activation(),
                              o.norm_first());
    block.norm_type(o.norm_type()).bias(o.bias()).causal(true);
    apply_kwargs(block, o.block_kwargs(), "TransformerLM block_kwargs (EncoderBlock)");
    blocks->push_back(EncoderBlock(block));
  }

  register_layers({{"blocks", blocks.ptr()}}, o.n_heads(), "n_heads");
  reset_parameters();
}

void TransformerLMImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << std::boolalpha << "dual_attention::TransformerLM(vocab_size=" << o.vocab_size()
         << ", d_model=" << o.d_model() << ", n_layers=" << o.n_layers()
         << ", n_heads=" << o.n_heads() << ", max_block_size=" << o.max_block_size()
         << ", pos_enc_type=" << o.pos_enc_type() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> TransformerLMImpl::forward(const torch::Tensor& idx,
                                                                    const torch::Tensor& targets) {
  const bool need_weights = !options.use_flash_attention();    // the explicit-weights path
  auto ids = token_ids(idx);                                   // [b, t]
  auto positions = torch::arange(ids.size(1), ids.options());  // [t]
  auto [x, cos, sin] = embed(ids, positions);                  // [b, t, d]; [t, head_dim / 2]
  for (size_t i = 0; i < blocks->size(); ++i) {
    x = blocks->ptr<EncoderBlockImpl>(i)->forward(x, cos, sin, need_weights);  // [b, t, d]
  }
  auto logits = final_out(norm.forward(x));  // [b, t, vocab_size]
  return {logits, loss(logits, targets)};
}

torch::Tensor TransformerLMImpl::forward_cached(const torch::Tensor& idx, LMCache& cache,
                                                int64_t logits_to_keep) {
  torch::NoGradGuard no_grad;
  auto ids = token_ids(idx);  // [b, t]
  const int64_t t = ids.size(1);
  auto [positions, step] = cache_step(cache, ids.size(0), t);  // [b, t]
  auto [x, cos, sin] = embed(ids, positions);                  // [b, t, d]; [b, t, hd / 2]
  for (size_t i = 0; i < blocks->size(); ++i) {
    x = blocks->ptr<EncoderBlockImpl>(i)->forward_cached(x, cos, sin, cache.layers[i], step);
  }
  cache.length += t;
  const int64_t keep = logits_to_keep > 0 ? std::min(logits_to_keep, t) : t;
  return final_out(norm.forward(x.slice(1, t - keep)));  // [b, keep, vocab_size]
}

}  // namespace dual_attention
