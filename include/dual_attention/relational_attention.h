// Relational attention (Altabaa & Lafferty 2024) and the two relational cross-attention ablations
// of the Abstractor paper (reference: dual_attention.relational_attention).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <tuple>

#include "dual_attention/kv_cache.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/model_utils.h"
#include "dual_attention/ops.h"

namespace dual_attention {

// ---------------------------------------------------------------------------------------------
// RelationalAttention
//   out = W_o relational_attention(W_q^attn x, W_k^attn x, W_q^rel x, W_k^rel x, W_s s, W_r)
// with RoPE on the attention queries and keys; the attention itself (its formula, its paths) is
// the operator ops::relational_attention of ops.h, which this module calls. With relative
// positional symbols, s_j becomes s_ij (symbols are [n, n, d]).
// ---------------------------------------------------------------------------------------------
struct RelationalAttentionOptions {
  RelationalAttentionOptions(int64_t d_model, int64_t n_heads)
      : d_model_(d_model), n_heads_(n_heads) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads);
  // Number of relations l; defaults to n_heads.
  TORCH_ARG(std::optional<int64_t>, n_relations) = std::nullopt;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(std::optional<int64_t>, key_dim) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, n_kv_heads) = std::nullopt;
  TORCH_ARG(std::string, rel_activation) = "identity";
  // Width of each relation's query/key projection; defaults to head_dim * n_heads / n_relations.
  TORCH_ARG(std::optional<int64_t>, rel_proj_dim) = std::nullopt;
  TORCH_ARG(bool, add_bias_kv) = false;
  TORCH_ARG(bool, add_bias_out) = false;
  TORCH_ARG(std::optional<int64_t>, total_n_heads) = std::nullopt;
  // Relations use one projection for both sides (wk_rel is wq_rel).
  TORCH_ARG(bool, symmetric_rels) = false;
  TORCH_ARG(bool, use_relative_positional_symbols) = false;

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("n_relations", n_relations_);
    v("dropout", dropout_);
    v("key_dim", key_dim_);
    v("n_kv_heads", n_kv_heads_);
    v("rel_activation", rel_activation_);
    v("rel_proj_dim", rel_proj_dim_);
    v("add_bias_kv", add_bias_kv_);
    v("add_bias_out", add_bias_out_);
    v("total_n_heads", total_n_heads_);
    v("symmetric_rels", symmetric_rels_);
    v("use_relative_positional_symbols", use_relative_positional_symbols_);
  }

  // RelationalAttention(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<int64_t, int64_t>;
  static RelationalAttentionOptions from_kwargs(const Kwargs& kwargs,
                                                const std::string& owner = "RelationalAttention") {
    return options_from_kwargs<RelationalAttentionOptions>(kwargs, owner);
  }
};

class RelationalAttentionImpl : public torch::nn::Cloneable<RelationalAttentionImpl> {
 public:
  RelationalAttentionImpl(int64_t d_model, int64_t n_heads)
      : RelationalAttentionImpl(RelationalAttentionOptions(d_model, n_heads)) {}
  explicit RelationalAttentionImpl(const RelationalAttentionOptions& options);

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // How forward evaluates the attention when the caller does not ask for the weights
  // (need_weights=false): Auto, Materialize, Blockwise or SDPA, as ops.h describes them; with
  // need_weights=true the materialising path always runs.
  using Implementation = ops::RelationalAttentionImplementation;

  // x [b, n, d_model]; symbols [b, n, d_model] ([n, n, d_model] with relative positional symbols);
  // freqs [n, key_dim / 2] apply RoPE to the attention queries/keys; attn_mask boolean [n, n].
  // Returns (out [b, n, head_dim * n_heads], attn_scores [b, n_heads, n, n],
  // relations [b, n, n, n_relations]). With need_weights=false the scores and relations are not
  // returned (undefined tensors) and `implementation` chooses how the output is computed.
  // Reads: check the inputs -> project (once) -> ops::relational_attention -> wo.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos = {},
      const torch::Tensor& freqs_sin = {}, const torch::Tensor& attn_mask = {},
      bool is_causal = false, bool need_weights = true);

  // Incremental decoding: x [b, t, d_model] are the new tokens, at slots [step.start, step.start +
  // t) of `cache` (attention keys after RoPE, relation keys, W_s s_j); symbols [b, t, d_model] are
  // theirs, or, with relative positional symbols, the whole (2 max_rel_pos + 1)-row table
  // [2m + 1, d_model] of PositionRelativeSymbolRetriever (s_ij = table[clip(j - i) + m]), projected
  // once per cache. freqs [t, key_dim / 2] or [b, t, key_dim / 2]. Returns [b, t, head_dim *
  // n_heads], what forward() of the whole sequence gives at those positions. Inference only.
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& symbols,
                               const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
                               LayerCache& cache, const CacheStep& step);

  // Not constructor keywords (the Options mirror the reference's): set them on the module.
  Implementation implementation = ops::RelationalAttentionImplementation::Auto;
  static constexpr int64_t kMaterializeMaxLength = ops::kMaterializeMaxLength;
  static constexpr int64_t kMaterializeMaxElements = ops::kMaterializeMaxElements;
  int64_t block_size = 128;  // most query rows per block of the blockwise path
  // The path the last forward took (Auto resolved), for tests and benchmarks.
  Implementation last_implementation = ops::RelationalAttentionImplementation::Materialize;

  RelationalAttentionOptions options;
  int64_t n_relations = 0, n_kv_heads = 0, total_n_heads = 0, head_dim = 0, key_dim = 0,
          rel_proj_dim = 0, n_rep_kv = 0;
  double attn_scale = 0.0, rel_scale = 0.0;
  Activation rel_activation;

  torch::nn::Linear wq_attn{nullptr}, wk_attn{nullptr}, wq_rel{nullptr}, wk_rel{nullptr},
      wv{nullptr}, wo{nullptr};
  torch::Tensor wr;  // [n_heads, head_dim, n_relations]
  torch::nn::Dropout attn_dropout{nullptr}, resid_dropout{nullptr};

  // The operator's tensors, each projection computed once (n queries, m keys; m = n except when
  // decoding against a cache).
  struct Projections {
    torch::Tensor q;      // W_q^attn x, RoPE applied: [b, n, h, key_dim]
    torch::Tensor k;      // W_k^attn x, RoPE applied: [b, m, n_kv_heads, key_dim]
    torch::Tensor q_rel;  // W_q^rel x: [b, n, n_relations, rel_proj_dim]
    torch::Tensor k_rel;  // W_k^rel x: [b, m, n_relations, rel_proj_dim] (q_rel if symmetric)
    // W_s s_j: [b, m, n_kv_heads, head_dim]; relative symbols: W_s s_ij [n, m, n_kv_heads,
    // head_dim]
    torch::Tensor sv;
  };

 private:
  void check_inputs(const torch::Tensor& x, const torch::Tensor& symbols) const;
  Projections project(const torch::Tensor& x, const torch::Tensor& symbols,
                      const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin);
  // The dropout on the attention probabilities: attn_dropout's p in training, else 0.
  double attention_dropout() const;
};
TORCH_MODULE(RelationalAttention);

// Every RelationalAttention inside `module` (itself included), in modules() order: to force a path
// on a whole model, or to read which one ran:
//   for (auto* ra : relational_attention_layers(*model))
//     ra->implementation = RelationalAttentionImpl::Implementation::Blockwise;
std::vector<RelationalAttentionImpl*> relational_attention_layers(torch::nn::Module& module);

// ---------------------------------------------------------------------------------------------
// RelationalCrossAttention ('rca'): A_i = sum_j act(<W_q x_i, W_k x_j> / sqrt(head_dim)) W_v s_j.
// With softmax the mask adds -inf before it; another activation zeroes masked scores after it.
// ---------------------------------------------------------------------------------------------
struct RelationalCrossAttentionOptions {
  RelationalCrossAttentionOptions(int64_t d_model, int64_t n_heads, double dropout)
      : d_model_(d_model), n_heads_(n_heads), dropout_(dropout) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(double, dropout);
  TORCH_ARG(std::optional<int64_t>, n_kv_heads) = std::nullopt;
  TORCH_ARG(std::string, activation) = "softmax";
  TORCH_ARG(bool, add_bias_kv) = false;
  TORCH_ARG(bool, add_bias_out) = false;
  TORCH_ARG(std::optional<int64_t>, total_n_heads) = std::nullopt;
  TORCH_ARG(bool, use_relative_positional_symbols) = false;

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("dropout", dropout_);
    v("n_kv_heads", n_kv_heads_);
    v("activation", activation_);
    v("add_bias_kv", add_bias_kv_);
    v("add_bias_out", add_bias_out_);
    v("total_n_heads", total_n_heads_);
    v("use_relative_positional_symbols", use_relative_positional_symbols_);
  }

  // RelationalCrossAttention(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t, int64_t, double>;
  static RelationalCrossAttentionOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "RelationalCrossAttention") {
    return options_from_kwargs<RelationalCrossAttentionOptions>(kwargs, owner);
  }
};

class RelationalCrossAttentionImpl : public torch::nn::Cloneable<RelationalCrossAttentionImpl> {
 public:
  RelationalCrossAttentionImpl(int64_t d_model, int64_t n_heads, double dropout)
      : RelationalCrossAttentionImpl(RelationalCrossAttentionOptions(d_model, n_heads, dropout)) {}
  explicit RelationalCrossAttentionImpl(const RelationalCrossAttentionOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Returns (out [b, n, head_dim * n_heads], scores [b, n_heads, n, n]).
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x,
                                                   const torch::Tensor& symbols,
                                                   const torch::Tensor& freqs_cos = {},
                                                   const torch::Tensor& freqs_sin = {},
                                                   const torch::Tensor& attn_mask = {},
                                                   bool is_causal = false);

  // Incremental decoding, as RelationalAttentionImpl::forward_cached (cache: k, sv or sv_table).
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& symbols,
                               const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
                               LayerCache& cache, const CacheStep& step);

  RelationalCrossAttentionOptions options;
  int64_t n_kv_heads = 0, total_n_heads = 0, head_dim = 0, n_rep_kv = 0;
  double attn_scale = 0.0;
  Activation activation;

  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
  torch::nn::Dropout attn_dropout{nullptr}, resid_dropout{nullptr};
};
TORCH_MODULE(RelationalCrossAttention);

// ---------------------------------------------------------------------------------------------
// DisentangledRelationalCrossAttention ('disrca'):
//   A_i = sum_j softmax_j(<W_q^attn x_i, W_k^attn x_j>) * act(<W_q^rel x_i, W_k^rel x_j>) W_v s_j,
// both inner products scaled by 1/sqrt(head_dim).
// The reference fails when 1 < n_kv_heads < n_heads (its relation keys are not repeated across
// query heads); here the relation keys are grouped like the attention keys, which equals the
// reference wherever the reference runs.
// ---------------------------------------------------------------------------------------------
struct DisentangledRelationalCrossAttentionOptions {
  DisentangledRelationalCrossAttentionOptions(int64_t d_model, int64_t n_heads, double dropout)
      : d_model_(d_model), n_heads_(n_heads), dropout_(dropout) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(double, dropout);
  TORCH_ARG(std::optional<int64_t>, n_kv_heads) = std::nullopt;
  TORCH_ARG(std::string, rel_activation) = "identity";
  TORCH_ARG(bool, add_bias_kv) = false;
  TORCH_ARG(bool, add_bias_out) = false;
  TORCH_ARG(std::optional<int64_t>, total_n_heads) = std::nullopt;
  TORCH_ARG(bool, use_relative_positional_symbols) = false;

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("dropout", dropout_);
    v("n_kv_heads", n_kv_heads_);
    v("rel_activation", rel_activation_);
    v("add_bias_kv", add_bias_kv_);
    v("add_bias_out", add_bias_out_);
    v("total_n_heads", total_n_heads_);
    v("use_relative_positional_symbols", use_relative_positional_symbols_);
  }

  // DisentangledRelationalCrossAttention(**kwargs): the constructor takes the required keywords
  // (the first fields() above), of these types; a missing or unknown keyword or a value of the
  // wrong type is an error naming it.
  using required_types = std::tuple<int64_t, int64_t, double>;
  static DisentangledRelationalCrossAttentionOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "DisentangledRelationalCrossAttention") {
    return options_from_kwargs<DisentangledRelationalCrossAttentionOptions>(kwargs, owner);
  }
};

class DisentangledRelationalCrossAttentionImpl
    : public torch::nn::Cloneable<DisentangledRelationalCrossAttentionImpl> {
 public:
  DisentangledRelationalCrossAttentionImpl(int64_t d_model, int64_t n_heads, double dropout)
      : DisentangledRelationalCrossAttentionImpl(
            DisentangledRelationalCrossAttentionOptions(d_model, n_heads, dropout)) {}
  explicit DisentangledRelationalCrossAttentionImpl(
      const DisentangledRelationalCrossAttentionOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Returns (out [b, n, head_dim * n_heads], attn_scores [b, n_heads, n, n],
  // rel_scores [b, n_heads, n, n]).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos = {},
      const torch::Tensor& freqs_sin = {}, const torch::Tensor& attn_mask = {},
      bool is_causal = false);

  // Incremental decoding, as RelationalAttentionImpl::forward_cached (cache: k, k_rel, sv or
  // sv_table).
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& symbols,
                               const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
                               LayerCache& cache, const CacheStep& step);

  DisentangledRelationalCrossAttentionOptions options;
  int64_t n_kv_heads = 0, total_n_heads = 0, head_dim = 0, n_rep_kv = 0;
  double attn_scale = 0.0;
  Activation rel_activation;

  torch::nn::Linear wq_attn{nullptr}, wk_attn{nullptr}, wq_rel{nullptr}, wk_rel{nullptr},
      wv{nullptr}, wo{nullptr};
  torch::nn::Dropout attn_dropout{nullptr}, resid_dropout{nullptr};
};
TORCH_MODULE(DisentangledRelationalCrossAttention);

}  // namespace dual_attention
