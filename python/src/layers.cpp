// Symbol retrievers, positional encodings and the encoder/decoder blocks.
#include "binding.h"
#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/positional_encoding.h"
#include "dual_attention/symbol_retrieval.h"
#include "dual_attention/transformer_blocks.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {
namespace {

using Tensor = torch::Tensor;
using OptTensor = std::optional<torch::Tensor>;
using OptInt = std::optional<int64_t>;
constexpr auto release_gil = py::call_guard<py::gil_scoped_release>();

template <class Binding>
void def_single_input_forward(Binding& binding, const char* argument = "x") {
  using Impl = typename Binding::Impl;
  binding.def(
      "forward", [](Impl& self, const Tensor& x) { return self.forward(x); }, py::arg(argument),
      release_gil);
}

}  // namespace

void bind_layers(py::module_& m) {
  // ---- symbol_retrieval ----
  ModuleBinding<SymbolicAttentionImpl, SymbolicAttentionOptions, int64_t, int64_t, int64_t>
      symbolic_attention(m, "SymbolicAttention", {"d_model", "n_heads", "n_symbols"});
  def_single_input_forward(symbolic_attention);

  ModuleBinding<PositionalSymbolRetrieverImpl, PositionalSymbolRetrieverOptions, int64_t, int64_t>
      positional(m, "PositionalSymbolRetriever", {"symbol_dim", "max_length"});
  def_single_input_forward(positional);

  ModuleBinding<PositionRelativeSymbolRetrieverImpl, PositionRelativeSymbolRetrieverOptions,
                int64_t, int64_t>
      position_relative(m, "PositionRelativeSymbolRetriever", {"symbol_dim", "max_rel_pos"});
  def_single_input_forward(position_relative);

  ModuleBinding<RelationalSymbolicAttentionImpl, RelationalSymbolicAttentionOptions, int64_t,
                int64_t, int64_t, int64_t, int64_t>
      rel_sym_attn(m, "RelationalSymbolicAttention",
                   {"d_model", "rel_n_heads", "symbolic_attn_n_heads", "n_symbols", "nbhd_delta"});
  rel_sym_attn.attr("nbhd_rel_dim", &RelationalSymbolicAttentionImpl::nbhd_rel_dim)
      .attr("rel_scale", &RelationalSymbolicAttentionImpl::rel_scale);
  def_single_input_forward(rel_sym_attn);
  rel_sym_attn.cls()
      .def_static("compute_neighbor_mask", &RelationalSymbolicAttentionImpl::compute_neighbor_mask,
                  py::arg("n"), py::arg("delta"), py::arg("include_self"), py::arg("device"))
      .def_static("compute_causal_neighbor_mask",
                  &RelationalSymbolicAttentionImpl::compute_causal_neighbor_mask, py::arg("n"),
                  py::arg("delta"), py::arg("include_self"), py::arg("device"));

  // ---- positional_encoding ----
  ModuleBinding<SinusoidalPositionalEncodingImpl, SinusoidalPositionalEncodingOptions, int64_t>
      sinusoidal(m, "SinusoidalPositionalEncoding", {"d_model"});
  def_single_input_forward(sinusoidal);

  ModuleBinding<LearnedPositionalEmbeddingsImpl, LearnedPositionalEmbeddingsOptions, int64_t>
      learned(m, "LearnedPositionalEmbeddings", {"d_model"});
  def_single_input_forward(learned);

  ModuleBinding<RelativePositionalEncodingImpl, RelativePositionalEncodingOptions, int64_t,
                int64_t>(m, "RelativePositionalEncoding", {"dim", "max_rel_pos"})
      .def(
          "forward",
          [](RelativePositionalEncodingImpl& self, int64_t length_q, OptInt length_k) {
            return self.forward(length_q, length_k);
          },
          py::arg("length_q"), py::arg("length_k"), release_gil);

  // ---- transformer_blocks ----
  ModuleBinding<FeedForwardBlockImpl, FeedForwardBlockOptions, int64_t> ff(m, "FeedForwardBlock",
                                                                           {"embed_dim"});
  ff.attr("dff", &FeedForwardBlockImpl::dff);
  def_single_input_forward(ff);

  ModuleBinding<RMSNormImpl, RMSNormOptions, int64_t> rms_norm(m, "RMSNorm", {"dim"});
  def_single_input_forward(rms_norm);

  m.def(
      "create_norm",
      [](int64_t d_model, const std::string& norm_type) {
        return as_value_error([&] { return create_norm(d_model, norm_type).ptr(); });
      },
      py::arg("d_model"), py::arg("norm_type"));

  ModuleBinding<EncoderBlockImpl, EncoderBlockOptions, int64_t, int64_t, OptInt, double,
                std::string, bool>(
      m, "EncoderBlock", {"d_model", "n_heads", "dff", "dropout_rate", "activation", "norm_first"})
      .def(
          "forward",
          [](EncoderBlockImpl& self, const Tensor& x, const OptTensor& freqs_cos,
             const OptTensor& freqs_sin, bool need_weights) {
            return self.forward(x, tensor_or_undefined(freqs_cos), tensor_or_undefined(freqs_sin),
                                need_weights);
          },
          py::arg("x"), py::arg("freqs_cos"), py::arg("freqs_sin"), py::arg("need_weights"),
          release_gil);

  ModuleBinding<DecoderBlockImpl, DecoderBlockOptions, int64_t, int64_t, int64_t, OptInt, double,
                std::string, bool>(
      m, "DecoderBlock",
      {"d_model", "n_heads", "n_heads_cross", "dff", "dropout_rate", "activation", "norm_first"})
      .def(
          "forward",
          [](DecoderBlockImpl& self, const Tensor& x, const Tensor& context) {
            return self.forward(x, context);
          },
          py::arg("x"), py::arg("context"), release_gil);

  // ---- dual_attn_blocks ----
  ModuleBinding<DualAttnEncoderBlockImpl, DualAttnEncoderBlockOptions, int64_t, int64_t, int64_t,
                OptInt, std::string, double, bool>(
      m, "DualAttnEncoderBlock",
      {"d_model", "n_heads_sa", "n_heads_ra", "dff", "activation", "dropout_rate", "norm_first"})
      .def(
          "forward",
          [](DualAttnEncoderBlockImpl& self, const Tensor& x, const OptTensor& symbols,
             const OptTensor& freqs_cos, const OptTensor& freqs_sin) {
            return self.forward(x, tensor_or_undefined(symbols), tensor_or_undefined(freqs_cos),
                                tensor_or_undefined(freqs_sin));
          },
          py::arg("x"), py::arg("symbols"), py::arg("freqs_cos"), py::arg("freqs_sin"),
          release_gil);

  ModuleBinding<DualAttnDecoderBlockImpl, DualAttnDecoderBlockOptions, int64_t, int64_t, int64_t,
                int64_t, OptInt, std::string, double, bool>(
      m, "DualAttnDecoderBlock",
      {"d_model", "n_heads_sa", "n_heads_ra", "n_heads_cross", "dff", "activation", "dropout_rate",
       "norm_first"})
      .def(
          "forward",
          [](DualAttnDecoderBlockImpl& self, const Tensor& x, const Tensor& context,
             const OptTensor& symbols) {
            return self.forward(x, context, tensor_or_undefined(symbols));
          },
          py::arg("x"), py::arg("context"), py::arg("symbols"), release_gil);
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
