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
  ModuleBinding<SymbolicAttentionImpl>(m, "SymbolicAttention").forward<Tensor>("x");

  ModuleBinding<PositionalSymbolRetrieverImpl>(m, "PositionalSymbolRetriever").forward<Tensor>("x");

  ModuleBinding<PositionRelativeSymbolRetrieverImpl>(m, "PositionRelativeSymbolRetriever")
      .forward<Tensor>("x");

  ModuleBinding<RelationalSymbolicAttentionImpl>(m, "RelationalSymbolicAttention")
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
  ModuleBinding<SinusoidalPositionalEncodingImpl>(m, "SinusoidalPositionalEncoding")
      .forward<Tensor>("x");

  ModuleBinding<LearnedPositionalEmbeddingsImpl>(m, "LearnedPositionalEmbeddings")
      .forward<Tensor>("x");

  ModuleBinding<RelativePositionalEncodingImpl>(m, "RelativePositionalEncoding")
      .forward<int64_t, OptInt>("length_q", "length_k");

  // ---- transformer_blocks ----
  ModuleBinding<FeedForwardBlockImpl>(m, "FeedForwardBlock")
      .attr("dff", &FeedForwardBlockImpl::dff)
      .forward<Tensor>("x");

  ModuleBinding<RMSNormImpl>(m, "RMSNorm").forward<Tensor>("x");

  m.def(
      "create_norm",
      [](int64_t d_model, const std::string& norm_type) {
        return as_value_error([&] { return create_norm(d_model, norm_type).ptr(); });
      },
      py::arg("d_model"), py::arg("norm_type"));

  ModuleBinding<EncoderBlockImpl>(m, "EncoderBlock")
      .forward<Tensor, OptTensor, OptTensor, bool>("x", "freqs_cos", "freqs_sin", "need_weights");

  ModuleBinding<DecoderBlockImpl>(m, "DecoderBlock").forward<Tensor, Tensor>("x", "context");

  // ---- dual_attn_blocks ----
  ModuleBinding<DualAttnEncoderBlockImpl>(m, "DualAttnEncoderBlock")
      .forward<Tensor, OptTensor, OptTensor, OptTensor>("x", "symbols", "freqs_cos", "freqs_sin");

  ModuleBinding<DualAttnDecoderBlockImpl>(m, "DualAttnDecoderBlock")
      .forward<Tensor, Tensor, OptTensor>("x", "context", "symbols");
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
