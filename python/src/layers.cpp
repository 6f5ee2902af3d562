// Symbol retrievers, positional encodings and the encoder/decoder blocks.
#include "binding.h"
#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/positional_encoding.h"
#include "dual_attention/symbol_retrieval.h"
#include "dual_attention/transformer_blocks.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {

void bind_layers(py::module_& m) {
  // ---- symbol_retrieval ----
  ModuleBinding<SymbolicAttentionImpl, SymbolicAttentionOptions, int64_t, int64_t, int64_t>(
      m, "SymbolicAttention", {"d_model", "n_heads", "n_symbols"})
      .forward<Tensor>("x");

  ModuleBinding<PositionalSymbolRetrieverImpl, PositionalSymbolRetrieverOptions, int64_t, int64_t>(
      m, "PositionalSymbolRetriever", {"symbol_dim", "max_length"})
      .forward<Tensor>("x");

  ModuleBinding<PositionRelativeSymbolRetrieverImpl, PositionRelativeSymbolRetrieverOptions,
                int64_t, int64_t>(m, "PositionRelativeSymbolRetriever",
                                  {"symbol_dim", "max_rel_pos"})
      .forward<Tensor>("x");

  ModuleBinding<RelationalSymbolicAttentionImpl, RelationalSymbolicAttentionOptions, int64_t,
                int64_t, int64_t, int64_t, int64_t>(
      m, "RelationalSymbolicAttention",
      {"d_model", "rel_n_heads", "symbolic_attn_n_heads", "n_symbols", "nbhd_delta"})
      .attr("nbhd_rel_dim", &RelationalSymbolicAttentionImpl::nbhd_rel_dim)
      .attr("rel_scale", &RelationalSymbolicAttentionImpl::rel_scale)
      .forward<Tensor>("x")
      .cls()
      .def_static("compute_neighbor_mask", &RelationalSymbolicAttentionImpl::compute_neighbor_mask,
                  py::arg("n"), py::arg("delta"), py::arg("include_self"), py::arg("device"))
      .def_static("compute_causal_neighbor_mask",
                  &RelationalSymbolicAttentionImpl::compute_causal_neighbor_mask, py::arg("n"),
                  py::arg("delta"), py::arg("include_self"), py::arg("device"));

  // ---- positional_encoding ----
  ModuleBinding<SinusoidalPositionalEncodingImpl, SinusoidalPositionalEncodingOptions, int64_t>(
      m, "SinusoidalPositionalEncoding", {"d_model"})
      .forward<Tensor>("x");

  ModuleBinding<LearnedPositionalEmbeddingsImpl, LearnedPositionalEmbeddingsOptions, int64_t>(
      m, "LearnedPositionalEmbeddings", {"d_model"})
      .forward<Tensor>("x");

  ModuleBinding<RelativePositionalEncodingImpl, RelativePositionalEncodingOptions, int64_t,
                int64_t>(m, "RelativePositionalEncoding", {"dim", "max_rel_pos"})
      .forward<int64_t, OptInt>("length_q", "length_k");

  // ---- transformer_blocks ----
  ModuleBinding<FeedForwardBlockImpl, FeedForwardBlockOptions, int64_t>(m, "FeedForwardBlock",
                                                                        {"embed_dim"})
      .attr("dff", &FeedForwardBlockImpl::dff)
      .forward<Tensor>("x");

  ModuleBinding<RMSNormImpl, RMSNormOptions, int64_t>(m, "RMSNorm", {"dim"}).forward<Tensor>("x");

  m.def(
      "create_norm",
      [](int64_t d_model, const std::string& norm_type) {
        return as_value_error([&] { return create_norm(d_model, norm_type).ptr(); });
      },
      py::arg("d_model"), py::arg("norm_type"));

  ModuleBinding<EncoderBlockImpl, EncoderBlockOptions, int64_t, int64_t, OptInt, double,
                std::string, bool>(
      m, "EncoderBlock", {"d_model", "n_heads", "dff", "dropout_rate", "activation", "norm_first"})
      .forward<Tensor, OptTensor, OptTensor, bool>("x", "freqs_cos", "freqs_sin", "need_weights");

  ModuleBinding<DecoderBlockImpl, DecoderBlockOptions, int64_t, int64_t, int64_t, OptInt, double,
                std::string, bool>(
      m, "DecoderBlock",
      {"d_model", "n_heads", "n_heads_cross", "dff", "dropout_rate", "activation", "norm_first"})
      .forward<Tensor, Tensor>("x", "context");

  // ---- dual_attn_blocks ----
  ModuleBinding<DualAttnEncoderBlockImpl, DualAttnEncoderBlockOptions, int64_t, int64_t, int64_t,
                OptInt, std::string, double, bool>(
      m, "DualAttnEncoderBlock",
      {"d_model", "n_heads_sa", "n_heads_ra", "dff", "activation", "dropout_rate", "norm_first"})
      .forward<Tensor, OptTensor, OptTensor, OptTensor>("x", "symbols", "freqs_cos", "freqs_sin");

  ModuleBinding<DualAttnDecoderBlockImpl, DualAttnDecoderBlockOptions, int64_t, int64_t, int64_t,
                int64_t, OptInt, std::string, double, bool>(
      m, "DualAttnDecoderBlock",
      {"d_model", "n_heads_sa", "n_heads_ra", "n_heads_cross", "dff", "activation", "dropout_rate",
       "norm_first"})
      .forward<Tensor, Tensor, OptTensor>("x", "context", "symbols");
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
