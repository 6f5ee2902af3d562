#include "dual_attention/symbol_retrieval.h"

#include <cmath>
#include <functional>
#include <initializer_list>
#include <sstream>

#include "dual_attention/attention_utils.h"
#include "dual_attention/ops.h"
#include "lookup_tables.h"

namespace dual_attention {

// ---- SymbolicAttention ---------------------------------------------------------------------

SymbolicAttentionImpl::SymbolicAttentionImpl(const SymbolicAttentionOptions& options_)
    : options(options_) {
  reset();
}

void SymbolicAttentionImpl::reset() {
  const auto& o = options;
  const char* owner = "SymbolicAttention";
  TORCH_CHECK(o.d_model() > 0, owner, ": d_model must be positive, got ", o.d_model());
  TORCH_CHECK(o.n_heads() > 0, owner, ": n_heads must be positive, got ", o.n_heads());
  TORCH_CHECK(o.d_model() % o.n_heads() == 0, owner, ": d_model (", o.d_model(),
              ") must be divisible by n_heads (", o.n_heads(), ")");
  TORCH_CHECK(o.n_symbols() > 0, owner, ": n_symbols must be positive, got ", o.n_symbols());
  TORCH_CHECK(o.dropout() >= 0.0 && o.dropout() <= 1.0, owner, ": dropout must be in [0, 1], got ",
              o.dropout());

  q_proj = register_module("q_proj", torch::nn::Linear(o.d_model(), o.d_model()));
  template_features =
      register_parameter("template_features", torch::empty({o.n_symbols(), o.d_model()}));
  symbol_library = register_parameter("symbol_library", torch::empty({o.n_symbols(), o.d_model()}),
                                      o.trainable_symbols());
  reset_parameters();
}

void SymbolicAttentionImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  template_features.normal_();
  symbol_library.normal_();
}

void SymbolicAttentionImpl::tie_symbol_library(const torch::Tensor& library) {
  TORCH_CHECK(library.defined() && library.sizes() == symbol_library.sizes(),
              "SymbolicAttention: a tied symbol_library must have shape ", symbol_library.sizes(),
              ", got ", library.defined() ? c10::str(library.sizes()) : "an undefined tensor");
  symbol_library = parameters_["symbol_library"] = library;
}

void SymbolicAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::SymbolicAttention(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", n_symbols=" << options.n_symbols()
         << ", dropout=" << options.dropout() << ")";
}

torch::Tensor SymbolicAttentionImpl::forward(const torch::Tensor& x) {
  detail::check_sequence_input(x, options.d_model(), "SymbolicAttention", "x");
  // The reference passes dropout_p to scaled_dot_product_attention unconditionally, so its
  // attention weights are dropped out in eval mode too; here dropout applies in training only.
  const double p = is_training() ? options.dropout() : 0.0;
  return ops::symbolic_attention(q_proj(x), template_features, symbol_library, options.n_heads(), p,
                                 options.scale());  // [b, n, d_model]
}

// ---- PositionalSymbolRetriever -------------------------------------------------------------

PositionalSymbolRetrieverImpl::PositionalSymbolRetrieverImpl(
    const PositionalSymbolRetrieverOptions& options_)
    : options(options_) {
  reset();
}

void PositionalSymbolRetrieverImpl::reset() {
  const char* owner = "PositionalSymbolRetriever";
  TORCH_CHECK(options.symbol_dim() > 0, owner, ": symbol_dim must be positive, got ",
              options.symbol_dim());
  TORCH_CHECK(options.max_length() > 0, owner, ": max_length must be positive, got ",
              options.max_length());
  symbol_library = register_module(
      "symbol_library", torch::nn::Embedding(options.max_length(), options.symbol_dim()));
}

void PositionalSymbolRetrieverImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::PositionalSymbolRetriever(symbol_dim=" << options.symbol_dim()
         << ", max_length=" << options.max_length() << ")";
}

torch::Tensor PositionalSymbolRetrieverImpl::forward(const torch::Tensor& x) {
  const char* owner = "PositionalSymbolRetriever";
  TORCH_CHECK(x.defined(), owner, ": x is required");
  TORCH_CHECK(x.dim() == 3, owner, ": x must be [batch, len, width], got a tensor of shape ",
              x.sizes());
  const int64_t b = x.size(0), n = x.size(1);
  TORCH_CHECK(n <= options.max_length(), owner, ": sequence length ", n, " exceeds max_length ",
              options.max_length());
  auto pos = torch::arange(n, torch::dtype(torch::kLong).device(x.device()));
  return symbol_library(pos).unsqueeze(0).repeat({b, 1, 1});  // [b, n, symbol_dim]
}

// ---- PositionRelativeSymbolRetriever -------------------------------------------------------

PositionRelativeSymbolRetrieverImpl::PositionRelativeSymbolRetrieverImpl(
    const PositionRelativeSymbolRetrieverOptions& options_)
    : options(options_) {
  reset();
}

void PositionRelativeSymbolRetrieverImpl::reset() {
  const char* owner = "PositionRelativeSymbolRetriever";
  TORCH_CHECK(options.symbol_dim() > 0, owner, ": symbol_dim must be positive, got ",
              options.symbol_dim());
  TORCH_CHECK(options.max_rel_pos() >= 0, owner, ": max_rel_pos must be >= 0, got ",
              options.max_rel_pos());
  rel_pos_enc = register_module(
      "rel_pos_enc", RelativePositionalEncoding(options.symbol_dim(), options.max_rel_pos()));
}

void PositionRelativeSymbolRetrieverImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::PositionRelativeSymbolRetriever(symbol_dim=" << options.symbol_dim()
         << ", max_rel_pos=" << options.max_rel_pos() << ")";
}

torch::Tensor PositionRelativeSymbolRetrieverImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 2, "PositionRelativeSymbolRetriever",
              ": x must be [batch, len, ...], got ",
              x.defined() ? c10::str("a tensor of shape ", x.sizes()) : "nothing");
  return rel_pos_enc(x.size(1));  // [n, n, symbol_dim]
}

// ---- RelationalSymbolicAttention -----------------------------------------------------------

RelationalSymbolicAttentionImpl::RelationalSymbolicAttentionImpl(
    const RelationalSymbolicAttentionOptions& options_)
    : options(options_) {
  reset();
}

void RelationalSymbolicAttentionImpl::reset() {
  const auto& o = options;
  const char* owner = "RelationalSymbolicAttention";
  TORCH_CHECK(o.d_model() > 0, owner, ": d_model must be positive, got ", o.d_model());
  TORCH_CHECK(o.rel_n_heads() > 0, owner, ": rel_n_heads must be positive, got ", o.rel_n_heads());
  TORCH_CHECK(o.d_model() % o.rel_n_heads() == 0, owner, ": d_model (", o.d_model(),
              ") must be divisible by rel_n_heads (", o.rel_n_heads(), ")");
  TORCH_CHECK(o.nbhd_delta() >= 0, owner, ": nbhd_delta must be >= 0, got ", o.nbhd_delta());
  const int64_t nbhd_size =
      (o.causal_nbhd() ? o.nbhd_delta() : 2 * o.nbhd_delta()) + (o.include_self() ? 1 : 0);
  TORCH_CHECK(nbhd_size > 0, owner,
              ": the neighbourhood is empty (nbhd_delta=0 and include_self=false); expected "
              "nbhd_delta >= 1 or include_self=true");
  nbhd_rel_dim = o.rel_n_heads() * nbhd_size;
  rel_scale =
      o.rel_scale().value_or(std::pow(static_cast<double>(o.d_model() / o.rel_n_heads()), -0.5));

  symbolic_attention =
      register_module("symbolic_attention",
                      SymbolicAttention(SymbolicAttentionOptions(
                                            o.d_model(), o.symbolic_attn_n_heads(), o.n_symbols())
                                            .dropout(o.dropout())
                                            .scale(o.symbolic_attn_scale())));
  q_proj = register_module("q_proj", torch::nn::Linear(o.d_model(), o.d_model()));
  k_proj = register_module("k_proj", torch::nn::Linear(o.d_model(), o.d_model()));
  model_dim_proj = register_module("model_dim_proj", torch::nn::Linear(nbhd_rel_dim, o.d_model()));
}

void RelationalSymbolicAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::RelationalSymbolicAttention(d_model=" << options.d_model()
         << ", rel_n_heads=" << options.rel_n_heads()
         << ", symbolic_attn_n_heads=" << options.symbolic_attn_n_heads()
         << ", n_symbols=" << options.n_symbols() << ", nbhd_delta=" << options.nbhd_delta()
         << ", causal_nbhd=" << std::boolalpha << options.causal_nbhd()
         << ", include_self=" << options.include_self() << ")";
}

torch::Tensor RelationalSymbolicAttentionImpl::forward(const torch::Tensor& x) {
  detail::check_sequence_input(x, options.d_model(), "RelationalSymbolicAttention", "x");
  const int64_t b = x.size(0), n = x.size(1), h = options.rel_n_heads();
  const int64_t head_dim = options.d_model() / h;

  auto query = q_proj(x).view({b, n, h, head_dim}).transpose(1, 2);  // [b, h, n, head_dim]
  auto key = k_proj(x).view({b, n, h, head_dim}).transpose(1, 2);    // [b, h, n, head_dim]
  auto neighbors =
      options.causal_nbhd()
          ? compute_causal_neighbor_mask(n, options.nbhd_delta(), options.include_self(),
                                         x.device())
          : compute_neighbor_mask(n, options.nbhd_delta(), options.include_self(), x.device());
  using torch::indexing::Slice;
  auto neighbor_keys = key.index({Slice(), Slice(), neighbors});  // [b, h, n, Delta, head_dim]
  auto rels = torch::einsum("bhid,bhijd->bhij", {query, neighbor_keys});  // [b, h, n, Delta]
  if (options.normalize_rels()) rels = torch::softmax(rels * rel_scale, -1);
  rels = rels.permute({0, 2, 3, 1}).contiguous().view({b, n, nbhd_rel_dim});  // [b, n, Delta * h]
  return symbolic_attention(model_dim_proj(rels));
}

torch::Tensor RelationalSymbolicAttentionImpl::compute_neighbor_mask(int64_t n, int64_t delta,
                                                                     bool include_self,
                                                                     torch::Device device) {
  TORCH_CHECK(n >= 0, "compute_neighbor_mask: n must be >= 0, got ", n);
  TORCH_CHECK(delta >= 0, "compute_neighbor_mask: delta must be >= 0, got ", delta);
  auto idx = torch::dtype(torch::kLong).device(device);
  auto offsets =
      include_self ? torch::arange(-delta, delta + 1, idx)
                   : torch::cat({torch::arange(-delta, 0, idx), torch::arange(1, delta + 1, idx)});
  auto mask = torch::arange(n, idx).unsqueeze(1) + offsets.unsqueeze(0);
  return mask.clamp(0, std::max<int64_t>(n - 1, 0));  // [n, Delta]
}

torch::Tensor RelationalSymbolicAttentionImpl::compute_causal_neighbor_mask(int64_t n,
                                                                            int64_t delta,
                                                                            bool include_self,
                                                                            torch::Device device) {
  TORCH_CHECK(n >= 0, "compute_causal_neighbor_mask: n must be >= 0, got ", n);
  TORCH_CHECK(delta >= 0, "compute_causal_neighbor_mask: delta must be >= 0, got ", delta);
  auto idx = torch::dtype(torch::kLong).device(device);
  auto offsets = torch::arange(include_self ? 0 : 1, delta + 1, idx);
  auto mask = torch::arange(n, idx).unsqueeze(1) - offsets.unsqueeze(0);
  return mask.clamp(0, std::max<int64_t>(n - 1, 0));  // [n, Delta]
}

// ---- lookup by name ------------------------------------------------------------------------

namespace {

// A retriever built from symbol_retrieval_kwargs through its Options (the module's keywords).
template <class Module>
torch::nn::AnyModule make_retriever(const Kwargs& kwargs, const char* name) {
  using Options = std::decay_t<decltype(std::declval<typename Module::Impl>().options)>;
  return torch::nn::AnyModule(
      Module(Options::from_kwargs(kwargs, std::string("symbol_retrieval_kwargs (") + name + ")")));
}

struct RetrieverEntry {
  const char* name;
  bool seq2seq_and_vision_only;
  torch::nn::AnyModule (*make)(const Kwargs&, const char*);
  const char* module_name;
};

const std::vector<RetrieverEntry>& retriever_table() {
  static const std::vector<RetrieverEntry> table = {
      {"symbolic_attention", false, make_retriever<SymbolicAttention>, "SymbolicAttention"},
      {"rel_sym_attn", true, make_retriever<RelationalSymbolicAttention>,
       "RelationalSymbolicAttention"},
      {"positional_symbols", false, make_retriever<PositionalSymbolRetriever>,
       "PositionalSymbolRetriever"},
      {"position_relative", false, make_retriever<PositionRelativeSymbolRetriever>,
       "PositionRelativeSymbolRetriever"},
  };
  return table;
}

}  // namespace

const std::vector<std::string>& symbol_retriever_names() {
  static const auto names = detail::names_in(retriever_table(), &RetrieverEntry::name);
  return names;
}

torch::nn::AnyModule make_symbol_retriever(const std::string& name, const Kwargs& kwargs,
                                           bool allow_rel_sym_attn) {
  std::ostringstream valid;
  for (const auto& entry : retriever_table()) {
    if (entry.seq2seq_and_vision_only && !allow_rel_sym_attn) continue;
    if (name == entry.name) return entry.make(kwargs, entry.module_name);
    valid << (valid.tellp() ? ", " : "") << "'" << entry.name << "'";
  }
  TORCH_CHECK(false, "symbol_retrieval '", name,
              "' is not a known symbol retriever; expected one of ", valid.str());
}

}  // namespace dual_attention
