// Symbol assignment mechanisms ("symbol retrievers") that feed relational attention its symbols
// (reference: dual_attention.symbol_retrieval).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "dual_attention/kwargs.h"
#include "dual_attention/positional_encoding.h"

namespace dual_attention {

// ---- SymbolicAttention ---------------------------------------------------------------------

struct SymbolicAttentionOptions {
  SymbolicAttentionOptions(int64_t d_model, int64_t n_heads, int64_t n_symbols)
      : d_model_(d_model), n_heads_(n_heads), n_symbols_(n_symbols) {}

  // Width of the input, of the template features and of the symbols.
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(int64_t, n_symbols);
  // Dropout on the attention weights, in training only (see forward).
  TORCH_ARG(double, dropout) = 0.0;
  // Softmax scale; defaults to 1 / sqrt(d_model / n_heads).
  TORCH_ARG(std::optional<double>, scale) = std::nullopt;
  // Whether symbol_library requires grad.
  TORCH_ARG(bool, trainable_symbols) = true;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("n_symbols", n_symbols_);
    v("dropout", dropout_);
    v("scale", scale_);
    v("trainable_symbols", trainable_symbols_);
  }

  // SymbolicAttention(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<int64_t, int64_t, int64_t>;
  static SymbolicAttentionOptions from_kwargs(const Kwargs& kwargs,
                                              const std::string& owner = "SymbolicAttention") {
    return options_from_kwargs<SymbolicAttentionOptions>(kwargs, owner);
  }
};

class SymbolicAttentionImpl : public torch::nn::Cloneable<SymbolicAttentionImpl> {
 public:
  SymbolicAttentionImpl(int64_t d_model, int64_t n_heads, int64_t n_symbols)
      : SymbolicAttentionImpl(SymbolicAttentionOptions(d_model, n_heads, n_symbols)) {}
  explicit SymbolicAttentionImpl(const SymbolicAttentionOptions& options);

  void reset() override;
  // Draws template_features and symbol_library from N(0, 1).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  // Makes `library` ([n_symbols, d_model]) this module's symbol_library: the very same tensor, as
  // the reference's language model assigns one layer's library to the others
  // (weight_tie_symbol_library).
  void tie_symbol_library(const torch::Tensor& library);

  // ops::symbolic_attention(q_proj(x), template_features, symbol_library, ...) (the formula:
  // ops.h): each head retrieves a mix of its block of the symbols. x [b, n, d_model] -> [b, n,
  // d_model].
  torch::Tensor forward(const torch::Tensor& x);

  SymbolicAttentionOptions options;
  torch::nn::Linear q_proj{nullptr};  // d_model -> d_model, with bias
  torch::Tensor template_features;    // [n_symbols, d_model], the keys
  torch::Tensor symbol_library;       // [n_symbols, d_model], the values
};
TORCH_MODULE(SymbolicAttention);

// ---- PositionalSymbolRetriever -------------------------------------------------------------

struct PositionalSymbolRetrieverOptions {
  PositionalSymbolRetrieverOptions(int64_t symbol_dim, int64_t max_length)
      : symbol_dim_(symbol_dim), max_length_(max_length) {}

  TORCH_ARG(int64_t, symbol_dim);
  // Number of symbols: one per position.
  TORCH_ARG(int64_t, max_length);
  // Accepted and stored but has no effect, as in the reference (a TODO there).
  TORCH_ARG(bool, sinusoidal) = false;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("symbol_dim", symbol_dim_);
    v("max_length", max_length_);
    v("sinusoidal", sinusoidal_);
  }

  // PositionalSymbolRetriever(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t, int64_t>;
  static PositionalSymbolRetrieverOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "PositionalSymbolRetriever") {
    return options_from_kwargs<PositionalSymbolRetrieverOptions>(kwargs, owner);
  }
};

class PositionalSymbolRetrieverImpl : public torch::nn::Cloneable<PositionalSymbolRetrieverImpl> {
 public:
  PositionalSymbolRetrieverImpl(int64_t symbol_dim, int64_t max_length)
      : PositionalSymbolRetrieverImpl(PositionalSymbolRetrieverOptions(symbol_dim, max_length)) {}
  explicit PositionalSymbolRetrieverImpl(const PositionalSymbolRetrieverOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Symbol t for position t: x [b, n, any width] with n <= max_length -> [b, n, symbol_dim].
  torch::Tensor forward(const torch::Tensor& x);

  PositionalSymbolRetrieverOptions options;
  torch::nn::Embedding symbol_library{nullptr};  // [max_length, symbol_dim]
};
TORCH_MODULE(PositionalSymbolRetriever);

// ---- PositionRelativeSymbolRetriever -------------------------------------------------------

struct PositionRelativeSymbolRetrieverOptions {
  PositionRelativeSymbolRetrieverOptions(int64_t symbol_dim, int64_t max_rel_pos)
      : symbol_dim_(symbol_dim), max_rel_pos_(max_rel_pos) {}

  TORCH_ARG(int64_t, symbol_dim);
  // Offsets beyond +-max_rel_pos share a symbol.
  TORCH_ARG(int64_t, max_rel_pos);

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("symbol_dim", symbol_dim_);
    v("max_rel_pos", max_rel_pos_);
  }

  // PositionRelativeSymbolRetriever(**kwargs): the constructor takes the required keywords (the
  // first fields() above), of these types; a missing or unknown keyword or a value of the wrong
  // type is an error naming it.
  using required_types = std::tuple<int64_t, int64_t>;
  static PositionRelativeSymbolRetrieverOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "PositionRelativeSymbolRetriever") {
    return options_from_kwargs<PositionRelativeSymbolRetrieverOptions>(kwargs, owner);
  }
};

class PositionRelativeSymbolRetrieverImpl
    : public torch::nn::Cloneable<PositionRelativeSymbolRetrieverImpl> {
 public:
  PositionRelativeSymbolRetrieverImpl(int64_t symbol_dim, int64_t max_rel_pos)
      : PositionRelativeSymbolRetrieverImpl(
            PositionRelativeSymbolRetrieverOptions(symbol_dim, max_rel_pos)) {}
  explicit PositionRelativeSymbolRetrieverImpl(
      const PositionRelativeSymbolRetrieverOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // s_ij encodes the offset j - i: x [b, n, ...] (only n is used) -> [n, n, symbol_dim].
  torch::Tensor forward(const torch::Tensor& x);

  PositionRelativeSymbolRetrieverOptions options;
  RelativePositionalEncoding rel_pos_enc{nullptr};
};
TORCH_MODULE(PositionRelativeSymbolRetriever);

// ---- RelationalSymbolicAttention -----------------------------------------------------------

struct RelationalSymbolicAttentionOptions {
  RelationalSymbolicAttentionOptions(int64_t d_model, int64_t rel_n_heads,
                                     int64_t symbolic_attn_n_heads, int64_t n_symbols,
                                     int64_t nbhd_delta)
      : d_model_(d_model),
        rel_n_heads_(rel_n_heads),
        symbolic_attn_n_heads_(symbolic_attn_n_heads),
        n_symbols_(n_symbols),
        nbhd_delta_(nbhd_delta) {}

  TORCH_ARG(int64_t, d_model);
  // Relations computed with each neighbour (heads of the q_proj/k_proj dot products).
  TORCH_ARG(int64_t, rel_n_heads);
  TORCH_ARG(int64_t, symbolic_attn_n_heads);
  TORCH_ARG(int64_t, n_symbols);
  // Neighbourhood radius: [i - delta, i] when causal, [i - delta, i + delta] otherwise.
  TORCH_ARG(int64_t, nbhd_delta);
  TORCH_ARG(bool, causal_nbhd) = true;
  // Whether i is its own neighbour.
  TORCH_ARG(bool, include_self) = false;
  // Softmax of the scaled relations across the neighbourhood.
  TORCH_ARG(bool, normalize_rels) = true;
  // Passed to the inner SymbolicAttention.
  TORCH_ARG(double, dropout) = 0.0;
  // Defaults to (d_model / rel_n_heads)^-0.5.
  TORCH_ARG(std::optional<double>, rel_scale) = std::nullopt;
  TORCH_ARG(std::optional<double>, symbolic_attn_scale) = std::nullopt;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("rel_n_heads", rel_n_heads_);
    v("symbolic_attn_n_heads", symbolic_attn_n_heads_);
    v("n_symbols", n_symbols_);
    v("nbhd_delta", nbhd_delta_);
    v("causal_nbhd", causal_nbhd_);
    v("include_self", include_self_);
    v("normalize_rels", normalize_rels_);
    v("dropout", dropout_);
    v("rel_scale", rel_scale_);
    v("symbolic_attn_scale", symbolic_attn_scale_);
  }

  // RelationalSymbolicAttention(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;
  static RelationalSymbolicAttentionOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "RelationalSymbolicAttention") {
    return options_from_kwargs<RelationalSymbolicAttentionOptions>(kwargs, owner);
  }
};

class RelationalSymbolicAttentionImpl
    : public torch::nn::Cloneable<RelationalSymbolicAttentionImpl> {
 public:
  explicit RelationalSymbolicAttentionImpl(const RelationalSymbolicAttentionOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // r[b, i, (j, h)] = softmax_j(<q_h(x_i), k_h(x_{nbhd(i, j)})> * rel_scale) over the Delta
  // neighbours j of i; symbols = symbolic_attention(model_dim_proj(r)).
  // x [b, n, d_model] -> [b, n, d_model].
  torch::Tensor forward(const torch::Tensor& x);

  // Indices of the neighbours of each position, [n, 2 * delta + 1] (or [n, 2 * delta] without
  // self): row i is i - delta .. i + delta, clamped to [0, n - 1].
  static torch::Tensor compute_neighbor_mask(int64_t n, int64_t delta, bool include_self = true,
                                             torch::Device device = torch::kCPU);
  // Causal neighbours, [n, delta + 1] (or [n, delta] without self): row i is i, i - 1, .., i -
  // delta (without self: i - 1, .., i - delta), clamped to [0, n - 1].
  static torch::Tensor compute_causal_neighbor_mask(int64_t n, int64_t delta,
                                                    bool include_self = false,
                                                    torch::Device device = torch::kCPU);

  RelationalSymbolicAttentionOptions options;
  // Resolved: rel_n_heads times the neighbourhood size, and the relation softmax scale.
  int64_t nbhd_rel_dim = 0;
  double rel_scale = 0.0;

  SymbolicAttention symbolic_attention{nullptr};
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr};  // d_model -> d_model, with bias
  torch::nn::Linear model_dim_proj{nullptr};           // nbhd_rel_dim -> d_model
};
TORCH_MODULE(RelationalSymbolicAttention);

// ---- lookup by name ------------------------------------------------------------------------

// The one table of symbol-retriever names, in the reference's order: 'symbolic_attention',
// 'rel_sym_attn', 'positional_symbols', 'position_relative'.
const std::vector<std::string>& symbol_retriever_names();

// Builds the retriever called `name` from the keyword arguments of its constructor (every
// argument without a default must be present). 'rel_sym_attn' is accepted only when
// allow_rel_sym_attn: the reference's seq2seq and vision models offer it, its language models do
// not. An unknown name is an error listing the valid ones. Every retriever maps x [b, n, d] to
// symbols: [b, n, d] or, for 'position_relative', [n, n, symbol_dim].
torch::nn::AnyModule make_symbol_retriever(const std::string& name, const Kwargs& kwargs,
                                           bool allow_rel_sym_attn = true);

}  // namespace dual_attention
