// Decoder-only language models: the Dual Attention Transformer LM and a standard Transformer LM
// as its baseline (reference: dual_attention.language_models, loaded from checkpoints by
// dual_attention.hf.DualAttnTransformerLM_HFHub / TransformerLM_HFHub).
//
//   auto model = DualAttnTransformerLM::from_pretrained("path/to/checkpoint");
//   auto [logits, loss] = model->forward(idx, targets);          // idx [b, t] token ids
//   auto tokens = model->generate(prompt, 20, 1.0, /*top_k=*/1);  // greedy
//   model->save_pretrained("path/to/copy");
#pragma once

#include <torch/torch.h>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "dual_attention/detail/model_common.h"
#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/kv_cache.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/transformer_blocks.h"

namespace dual_attention {

// AdamW over the model's unique trainable parameters in two groups, as the reference's
// language_models.configure_optimizers: tensors of dim >= 2 (matmul weights, embeddings) decay by
// weight_decay, the others (biases, norm weights) do not decay.
torch::optim::AdamW configure_optimizers(const torch::nn::Module& model, double weight_decay,
                                         double learning_rate, std::tuple<double, double> betas);

// ---- DualAttnTransformerLM -----------------------------------------------------------------

struct DualAttnTransformerLMOptions {
  DualAttnTransformerLMOptions(int64_t vocab_size, int64_t d_model, int64_t n_layers,
                               int64_t n_heads_sa, int64_t n_heads_ra,
                               Kwargs symbol_retrieval_kwargs, std::optional<int64_t> dff,
                               double dropout_rate, std::string activation, bool norm_first,
                               int64_t max_block_size)
      : vocab_size_(vocab_size),
        d_model_(d_model),
        n_layers_(n_layers),
        n_heads_sa_(n_heads_sa),
        n_heads_ra_(n_heads_ra),
        symbol_retrieval_kwargs_(std::move(symbol_retrieval_kwargs)),
        dff_(dff),
        dropout_rate_(dropout_rate),
        activation_(std::move(activation)),
        norm_first_(norm_first),
        max_block_size_(max_block_size) {}

  TORCH_ARG(int64_t, vocab_size);
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_layers);
  TORCH_ARG(int64_t, n_heads_sa);
  TORCH_ARG(int64_t, n_heads_ra);
  // Constructor keywords of the symbol retriever named by symbol_retrieval.
  TORCH_ARG(Kwargs, symbol_retrieval_kwargs);
  // Feed-forward hidden width; None takes FeedForwardBlock's default.
  TORCH_ARG(std::optional<int64_t>, dff);
  // Dropout inside the blocks (the model's own `layers.dropout` is never applied, as in the
  // reference).
  TORCH_ARG(double, dropout_rate);
  // Feed-forward activation: a name of get_activation_function, or 'swiglu'.
  TORCH_ARG(std::string, activation);
  TORCH_ARG(bool, norm_first);
  // Longest input; also the size of the positional embedding / RoPE tables.
  TORCH_ARG(int64_t, max_block_size);
  TORCH_ARG(std::string, norm_type) = "layernorm";
  TORCH_ARG(Kwargs, sa_kwargs) = nullptr;
  TORCH_ARG(Kwargs, ra_kwargs) = nullptr;
  // 'relational_attention', 'rca' or 'disrca'.
  TORCH_ARG(std::string, ra_type) = "relational_attention";
  TORCH_ARG(bool, share_attn_params) = false;
  // 'symbolic_attention', 'positional_symbols' or 'position_relative'.
  TORCH_ARG(std::string, symbol_retrieval) = "symbolic_attention";
  // {"shared_symbol_retriever": bool (default true), "weight_tie_symbol_library": bool (default
  // false)}: one retriever for all layers, or one per layer, optionally sharing one symbol library.
  // A dict given here is completed with the missing key(s), as the reference does in place (so
  // checkpoints saved by its mixin hold both).
  TORCH_ARG(Kwargs, symbol_retriever_config) = nullptr;
  // 'pos_emb' (learned positional embedding) or 'RoPE'.
  TORCH_ARG(std::string, pos_enc_type) = "pos_emb";
  // Stored but unused, as in the reference (the blocks keep their default bias=True).
  TORCH_ARG(bool, bias) = true;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("vocab_size", vocab_size_);
    v("d_model", d_model_);
    v("n_layers", n_layers_);
    v("n_heads_sa", n_heads_sa_);
    v("n_heads_ra", n_heads_ra_);
    v("symbol_retrieval_kwargs", symbol_retrieval_kwargs_);
    v("dff", dff_);
    v("dropout_rate", dropout_rate_);
    v("activation", activation_);
    v("norm_first", norm_first_);
    v("max_block_size", max_block_size_);
    v("norm_type", norm_type_);
    v("sa_kwargs", sa_kwargs_);
    v("ra_kwargs", ra_kwargs_);
    v("ra_type", ra_type_);
    v("share_attn_params", share_attn_params_);
    v("symbol_retrieval", symbol_retrieval_);
    v("symbol_retriever_config", symbol_retriever_config_);
    v("pos_enc_type", pos_enc_type_);
    v("bias", bias_);
  }

  // DualAttnTransformerLM(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, Kwargs,
                                    std::optional<int64_t>, double, std::string, bool, int64_t>;
  static DualAttnTransformerLMOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "DualAttnTransformerLM") {
    return options_from_kwargs<DualAttnTransformerLMOptions>(kwargs, owner);
  }
};

// The KV cache of a language model for one generation (generation.h fills and reads it through the
// models' forward_cached). Each row is left-padded: slot s of row r holds position s - padding[r].
// Each attention module's tensors are preallocated at the first step for `capacity` slots; their
// size in bytes, with B rows, T = capacity slots and e bytes per element:
//   TransformerLM:         n_layers * B * T * n_kv_heads * (key_dim + head_dim) * e
//   DualAttnTransformerLM: n_layers * B * T * e * (g_sa * (key_dim_sa + head_dim)      [self-attn]
//                                     + g_ra * (key_dim_ra + head_dim) + n_heads_ra * head_dim)
//   (relational: attention keys, W_s s_j, and relation keys of n_relations * rel_proj_dim =
//   n_heads_ra * head_dim), plus (2 max_rel_pos + 1) * g_ra * head_dim * e per layer with
//   position-relative symbols; head_dim = d_model / (n_heads_sa + n_heads_ra), g = n_kv_heads.
// 'rca' keeps k and W_s s_j; 'disrca' also relation keys at g_ra * head_dim. nbytes() reports it.
struct LMCache {
  // One per attention module: DualAttnTransformerLM 2 per layer (self-attention, relational),
  // TransformerLM 1 per layer.
  std::vector<LayerCache> layers;
  int64_t capacity = 0;   // slots per row (<= max_block_size)
  int64_t length = 0;     // slots filled
  torch::Tensor padding;  // [b] int64 left-padding slots per row; undefined: none
  int64_t batch_size = 0;

  // Empties the cache for a new prompt window (the storage is kept); padding as above.
  void reset(torch::Tensor new_padding = {}) {
    length = 0;
    padding = std::move(new_padding);
  }
  // Bytes held by the cache tensors.
  int64_t nbytes() const {
    int64_t total = 0;
    for (const auto& l : layers) {
      for (const auto* t : {&l.k, &l.v, &l.k_rel, &l.sv, &l.sv_table}) {
        if (t->defined()) total += t->numel() * static_cast<int64_t>(t->element_size());
      }
    }
    return total;
  }
};

namespace detail {

// What DualAttnTransformerLM and TransformerLM share: the token embedding tied to the output layer,
// the positions (a learned embedding or RoPE tables), the final norm, and everything done with a
// built model. `Derived` builds its blocks in reset() (through check_options and register_layers)
// and runs them in its own forward() and forward_cached(). Instantiated for the two models only.
template <class Derived, class Options>
class LanguageModelImpl : public torch::nn::Cloneable<Derived> {
 public:
  // `owner` ("DualAttnTransformerLM" or "TransformerLM") starts the model's error messages.
  LanguageModelImpl(const Options& options, const char* owner) : options(options), owner_(owner) {}

  // N(0, 0.02) for every Linear and Embedding weight and every relational `wr`, zero Linear
  // biases; then N(0, 0.02 / sqrt(2 n_layers)) for the weights that add to the residual stream:
  // every `wo.weight`, and `linear3.weight` for swiglu (`linear2.weight` otherwise), as the
  // reference does. Symbol libraries, template features and norms keep their own initialisation.
  void reset_parameters();
  // A deep copy that keeps the ties of the original (token_embedder/final_out, shared symbol
  // retrievers, tied symbol libraries, shared attention parameters), which Cloneable's
  // member-wise copy would break.
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;

  // The reference's generate: appends max_new_tokens tokens to idx ([b, t]), each sampled
  // (torch::multinomial, the global generator) from softmax(logits / temperature) of the last
  // position, keeping only the top_k largest logits when top_k is given; the context is cropped to
  // the last max_block_size tokens. top_k = 1 is greedy decoding. Runs without grad with a KV cache
  // (generation.h; its logits equal the full forward's); call eval() first (from_pretrained does).
  // Errors: temperature <= 0, top_k < 1, max_new_tokens < 0, bad token ids.
  torch::Tensor generate(torch::Tensor idx, int64_t max_new_tokens, double temperature = 1.0,
                         std::optional<int64_t> top_k = std::nullopt);

  // A cache for `batch_size` rows of `capacity` slots (1 <= capacity <= max_block_size), with
  // `padding` as LMCache::padding. Tensors are allocated by the first forward_cached.
  LMCache make_cache(int64_t batch_size, int64_t capacity, torch::Tensor padding = {}) const;

  // Number of parameters (each shared tensor once); non_embedding leaves out the positional
  // embedding (the token embedding stays: it is the output layer too).
  int64_t get_num_params(bool non_embedding = true) const;

  torch::optim::AdamW configure_optimizers(double weight_decay, double learning_rate,
                                           std::tuple<double, double> betas) const;

  // Writes config.json and model.safetensors into `folder` (pretrained.h; defined in
  // src/pretrained.cpp).
  void save_pretrained(const std::string& folder) const;

  // The RoPE tables, rebuilt from the options rather than saved (persistent=False in the
  // reference): the state_dict names the checkpoint code leaves out (io::named_state's skip list).
  std::vector<std::string> non_persistent_buffers() const;

  Options options;
  // Registered as "layers", holding the modules below under their reference names.
  torch::nn::ModuleDict layers{nullptr};
  torch::nn::Embedding token_embedder{nullptr};  // its weight IS final_out->weight
  torch::nn::Dropout dropout{nullptr};
  torch::nn::ModuleList blocks{nullptr};  // the model's encoder blocks, causal
  torch::nn::AnyModule norm;
  torch::nn::Linear final_out{nullptr};
  torch::nn::Embedding positional_embedder{nullptr};  // 'pos_emb' only
  torch::Tensor freqs_cos, freqs_sin;                 // 'RoPE' only: [max_block_size, head_dim / 2]

 protected:
  // The checks of the options both models have; reset() makes them before building anything.
  void check_options() const;
  // Builds the embeddings, norm and output layer, and registers them with `middle` (the model's
  // blocks, and what it keeps beside them) as "layers" in the reference's order: token_embedder,
  // dropout, middle..., norm, final_out[, positional_embedder]. RoPE tables get head_dim
  // d_model / n_heads; `heads_argument` names n_heads in the error when it is not positive.
  void register_layers(const NamedModules& middle, int64_t n_heads, const char* heads_argument);
  // idx as int64 token ids [b, t] after checking shape, dtype, range and t <= max_block_size.
  torch::Tensor token_ids(const torch::Tensor& idx) const;
  // The token embedding plus the positions ([t] or [b, t] int64): x [b, t, d_model] (learned
  // positions added), and the RoPE angles of the positions (cos, sin: [t | b, t, head_dim / 2];
  // undefined with pos_emb).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> embed(const torch::Tensor& ids,
                                                                const torch::Tensor& positions);
  // Mean cross-entropy of logits [b, t, vocab] against targets [b, t] (-1 ignored); undefined
  // without targets.
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets) const;
  // The step of t new tokens into `cache`: their positions [b, t] and the CacheStep (mask).
  std::tuple<torch::Tensor, CacheStep> cache_step(const LMCache& cache, int64_t batch,
                                                  int64_t t) const;

  const char* owner_;
};

}  // namespace detail

class DualAttnTransformerLMImpl
    : public detail::LanguageModelImpl<DualAttnTransformerLMImpl, DualAttnTransformerLMOptions> {
 public:
  explicit DualAttnTransformerLMImpl(const DualAttnTransformerLMOptions& options);

  // Builds the layers and draws the reference's initialisation (see reset_parameters).
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // idx [b, t] integer token ids in [0, vocab_size), t <= max_block_size. Returns (logits
  // [b, t, vocab_size], loss): the mean cross-entropy of the next-token predictions against
  // `targets` ([b, t], -1 = ignore), or an undefined tensor when no targets are given.
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& idx,
                                                   const torch::Tensor& targets = {});

  // Incremental decoding: the logits of new tokens idx [b, t] written at slots [cache.length,
  // cache.length + t) of `cache` (then cache.length += t), for the last `logits_to_keep` positions
  // (0: all): [b, keep, vocab_size]. Equal to forward() of the whole context at those positions.
  // Inference only (no grad, no dropout).
  torch::Tensor forward_cached(const torch::Tensor& idx, LMCache& cache,
                               int64_t logits_to_keep = 0);

  // `blocks` holds DualAttnEncoderBlocks; symbol_retrievers the retrievers below, once each.
  torch::nn::ModuleList symbol_retrievers{nullptr};
  std::vector<torch::nn::AnyModule> symbol_retriever;  // the retriever of each layer
};

// Defined, for the two models, in language_models.cpp.
extern template class detail::LanguageModelImpl<DualAttnTransformerLMImpl,
                                                DualAttnTransformerLMOptions>;

class DualAttnTransformerLM
    : public detail::PretrainedModelHolder<DualAttnTransformerLM, DualAttnTransformerLMImpl> {
 public:
  using PretrainedModelHolder::PretrainedModelHolder;
};

// ---- TransformerLM -------------------------------------------------------------------------

struct TransformerLMOptions {
  TransformerLMOptions(int64_t vocab_size, int64_t d_model, int64_t n_layers, int64_t n_heads,
                       std::optional<int64_t> dff, double dropout_rate, std::string activation,
                       bool norm_first, int64_t max_block_size)
      : vocab_size_(vocab_size),
        d_model_(d_model),
        n_layers_(n_layers),
        n_heads_(n_heads),
        dff_(dff),
        dropout_rate_(dropout_rate),
        activation_(std::move(activation)),
        norm_first_(norm_first),
        max_block_size_(max_block_size) {}

  TORCH_ARG(int64_t, vocab_size);
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_layers);
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(std::optional<int64_t>, dff);
  TORCH_ARG(double, dropout_rate);
  TORCH_ARG(std::string, activation);
  TORCH_ARG(bool, norm_first);
  TORCH_ARG(int64_t, max_block_size);
  TORCH_ARG(std::string, norm_type) = "layernorm";
  // Bias of the attention output projection and of the feed-forward layers.
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(std::string, pos_enc_type) = "pos_emb";
  // false runs attention on the explicit-weights path (need_weights=True), as the reference does.
  TORCH_ARG(bool, use_flash_attention) = true;
  // Extra EncoderBlock keywords (in practice attn_kwargs); may not repeat those set by the model.
  TORCH_ARG(Kwargs, block_kwargs) = nullptr;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("vocab_size", vocab_size_);
    v("d_model", d_model_);
    v("n_layers", n_layers_);
    v("n_heads", n_heads_);
    v("dff", dff_);
    v("dropout_rate", dropout_rate_);
    v("activation", activation_);
    v("norm_first", norm_first_);
    v("max_block_size", max_block_size_);
    v("norm_type", norm_type_);
    v("bias", bias_);
    v("pos_enc_type", pos_enc_type_);
    v("use_flash_attention", use_flash_attention_);
    v("block_kwargs", block_kwargs_);
  }

  // TransformerLM(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<int64_t, int64_t, int64_t, int64_t, std::optional<int64_t>,
                                    double, std::string, bool, int64_t>;
  static TransformerLMOptions from_kwargs(const Kwargs& kwargs,
                                          const std::string& owner = "TransformerLM") {
    return options_from_kwargs<TransformerLMOptions>(kwargs, owner);
  }
};

class TransformerLMImpl
    : public detail::LanguageModelImpl<TransformerLMImpl, TransformerLMOptions> {
 public:
  explicit TransformerLMImpl(const TransformerLMOptions& options);

  // As DualAttnTransformerLMImpl; `blocks` holds EncoderBlocks.
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& idx,
                                                   const torch::Tensor& targets = {});
  // As DualAttnTransformerLMImpl::forward_cached.
  torch::Tensor forward_cached(const torch::Tensor& idx, LMCache& cache,
                               int64_t logits_to_keep = 0);
};

extern template class detail::LanguageModelImpl<TransformerLMImpl, TransformerLMOptions>;

class TransformerLM : public detail::PretrainedModelHolder<TransformerLM, TransformerLMImpl> {
 public:
  using PretrainedModelHolder::PretrainedModelHolder;
};

}  // namespace dual_attention
