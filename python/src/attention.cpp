// Attention, the relational mechanisms, DualAttention, their helpers and the activation table.
#include "dual_attention/attention.h"

#include "binding.h"
#include "dual_attention/attention_utils.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/model_utils.h"
#include "dual_attention/relational_attention.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {
namespace {

using Tensor = torch::Tensor;
using OptTensor = std::optional<torch::Tensor>;
constexpr auto release_gil = py::call_guard<py::gil_scoped_release>();

// An activation looked up by name, callable on a tensor (model_utils.get_activation_function).
struct ActivationFunction {
  std::string name;
  Activation function;
};

}  // namespace

void bind_attention(py::module_& m) {
  ModuleBinding<AttentionImpl, AttentionOptions, int64_t, int64_t, double>(
      m, "Attention", {"d_model", "n_heads", "dropout"})
      .attr("n_kv_heads", &AttentionImpl::n_kv_heads)
      .attr("total_n_heads", &AttentionImpl::total_n_heads)
      .attr("key_dim", &AttentionImpl::key_dim)
      .attr("head_dim", &AttentionImpl::head_dim)
      .attr("n_rep_kv", &AttentionImpl::n_rep_kv)
      .attr("attn_scale", &AttentionImpl::attn_scale)
      .def(
          "forward",
          [](AttentionImpl& self, const Tensor& query, const Tensor& key, const Tensor& value,
             const OptTensor& freqs_cos, const OptTensor& freqs_sin, const OptTensor& attn_mask,
             bool is_causal, bool need_weights) {
            return self.forward(query, key, value, tensor_or_undefined(freqs_cos),
                                tensor_or_undefined(freqs_sin), tensor_or_undefined(attn_mask),
                                is_causal, need_weights);
          },
          py::arg("query"), py::arg("key"), py::arg("value"), py::arg("freqs_cos"),
          py::arg("freqs_sin"), py::arg("attn_mask"), py::arg("is_causal"), py::arg("need_weights"),
          release_gil);

  ModuleBinding<RelationalAttentionImpl, RelationalAttentionOptions, int64_t, int64_t>(
      m, "RelationalAttention", {"d_model", "n_heads"})
      .attr("n_relations", &RelationalAttentionImpl::n_relations)
      .attr("n_kv_heads", &RelationalAttentionImpl::n_kv_heads)
      .attr("total_n_heads", &RelationalAttentionImpl::total_n_heads)
      .attr("head_dim", &RelationalAttentionImpl::head_dim)
      .attr("key_dim", &RelationalAttentionImpl::key_dim)
      .attr("rel_proj_dim", &RelationalAttentionImpl::rel_proj_dim)
      .attr("n_rep_kv", &RelationalAttentionImpl::n_rep_kv)
      .attr("attn_scale", &RelationalAttentionImpl::attn_scale)
      .attr("rel_scale", &RelationalAttentionImpl::rel_scale)
      .def(
          "forward",
          [](RelationalAttentionImpl& self, const Tensor& x, const OptTensor& symbols,
             const OptTensor& freqs_cos, const OptTensor& freqs_sin, const OptTensor& attn_mask,
             bool is_causal, bool need_weights) {
            return self.forward(x, tensor_or_undefined(symbols), tensor_or_undefined(freqs_cos),
                                tensor_or_undefined(freqs_sin), tensor_or_undefined(attn_mask),
                                is_causal, need_weights);
          },
          py::arg("x"), py::arg("symbols"), py::arg("freqs_cos"), py::arg("freqs_sin"),
          py::arg("attn_mask"), py::arg("is_causal"), py::arg("need_weights"), release_gil);

  ModuleBinding<RelationalCrossAttentionImpl, RelationalCrossAttentionOptions, int64_t, int64_t,
                double>(m, "RelationalCrossAttention", {"d_model", "n_heads", "dropout"})
      .attr("n_kv_heads", &RelationalCrossAttentionImpl::n_kv_heads)
      .attr("total_n_heads", &RelationalCrossAttentionImpl::total_n_heads)
      .attr("head_dim", &RelationalCrossAttentionImpl::head_dim)
      .attr("n_rep_kv", &RelationalCrossAttentionImpl::n_rep_kv)
      .attr("attn_scale", &RelationalCrossAttentionImpl::attn_scale)
      .def(
          "forward",
          [](RelationalCrossAttentionImpl& self, const Tensor& x, const OptTensor& symbols,
             const OptTensor& freqs_cos, const OptTensor& freqs_sin, const OptTensor& attn_mask,
             bool is_causal) {
            return self.forward(x, tensor_or_undefined(symbols), tensor_or_undefined(freqs_cos),
                                tensor_or_undefined(freqs_sin), tensor_or_undefined(attn_mask),
                                is_causal);
          },
          py::arg("x"), py::arg("symbols"), py::arg("freqs_cos"), py::arg("freqs_sin"),
          py::arg("attn_mask"), py::arg("is_causal"), release_gil);

  ModuleBinding<DisentangledRelationalCrossAttentionImpl,
                DisentangledRelationalCrossAttentionOptions, int64_t, int64_t, double>(
      m, "DisentangledRelationalCrossAttention", {"d_model", "n_heads", "dropout"})
      .attr("n_kv_heads", &DisentangledRelationalCrossAttentionImpl::n_kv_heads)
      .attr("total_n_heads", &DisentangledRelationalCrossAttentionImpl::total_n_heads)
      .attr("head_dim", &DisentangledRelationalCrossAttentionImpl::head_dim)
      .attr("n_rep_kv", &DisentangledRelationalCrossAttentionImpl::n_rep_kv)
      .attr("attn_scale", &DisentangledRelationalCrossAttentionImpl::attn_scale)
      .def(
          "forward",
          [](DisentangledRelationalCrossAttentionImpl& self, const Tensor& x,
             const OptTensor& symbols, const OptTensor& freqs_cos, const OptTensor& freqs_sin,
             const OptTensor& attn_mask, bool is_causal) {
            return self.forward(x, tensor_or_undefined(symbols), tensor_or_undefined(freqs_cos),
                                tensor_or_undefined(freqs_sin), tensor_or_undefined(attn_mask),
                                is_causal);
          },
          py::arg("x"), py::arg("symbols"), py::arg("freqs_cos"), py::arg("freqs_sin"),
          py::arg("attn_mask"), py::arg("is_causal"), release_gil);

  ModuleBinding<DualAttentionImpl, DualAttentionOptions, int64_t, int64_t, int64_t, double>(
      m, "DualAttention", {"d_model", "n_heads_sa", "n_heads_ra", "dropout"})
      .attr("use_self_attn", &DualAttentionImpl::use_self_attn)
      .attr("use_rel_attn", &DualAttentionImpl::use_rel_attn)
      .attr("total_n_heads", &DualAttentionImpl::total_n_heads)
      .def(
          "forward",
          [](DualAttentionImpl& self, const Tensor& x, const OptTensor& symbols,
             const OptTensor& attn_mask, bool is_causal, const OptTensor& freqs_cos,
             const OptTensor& freqs_sin, bool need_weights) {
            return self.forward(x, tensor_or_undefined(symbols), tensor_or_undefined(attn_mask),
                                is_causal, tensor_or_undefined(freqs_cos),
                                tensor_or_undefined(freqs_sin), need_weights);
          },
          py::arg("x"), py::arg("symbols"), py::arg("attn_mask"), py::arg("is_causal"),
          py::arg("freqs_cos"), py::arg("freqs_sin"), py::arg("need_weights"), release_gil);

  // ---- attention_utils ----
  m.def("repeat_kv", &repeat_kv, py::arg("x"), py::arg("n_rep"));
  m.def("precompute_freqs_cis", &precompute_freqs_cis, py::arg("dim"), py::arg("end"),
        py::arg("theta") = 10000.0);
  m.def("apply_rotary_emb", &apply_rotary_emb, py::arg("xq"), py::arg("xk"), py::arg("freqs_cos"),
        py::arg("freqs_sin"));
  m.def("compute_causal_mask", &compute_causal_mask, py::arg("size"), py::arg("device"));
  m.def("compute_diag_mask", &compute_diag_mask, py::arg("size"), py::arg("device"));

  // ---- model_utils ----
  py::class_<ActivationFunction>(m, "ActivationFunction", py::module_local())
      .def(py::init([](const std::string& name) {
             return as_value_error([&] {
               return ActivationFunction{name, get_activation_function(name, "name")};
             });
           }),
           py::arg("name"))
      .def_readonly("name", &ActivationFunction::name)
      .def(
          "__call__",
          [](const ActivationFunction& self, const Tensor& input) { return self.function(input); },
          py::arg("input"), release_gil);
  m.def("activation_names", &activation_names);
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
