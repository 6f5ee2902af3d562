// Attention, the relational mechanisms, DualAttention, their helpers and the activation table.
#include "dual_attention/attention.h"

#include <string>

#include "binding.h"
#include "dual_attention/attention_utils.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/model_utils.h"
#include "dual_attention/ops.h"
#include "dual_attention/relational_attention.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {
namespace {

// An activation looked up by name, callable on a tensor (model_utils.get_activation_function).
struct ActivationFunction {
  std::string name;
  Activation function;
};

using Implementation = RelationalAttentionImpl::Implementation;

std::string implementation_name(Implementation implementation) { return c10::str(implementation); }

Implementation parse_implementation(const std::string& name,
                                    const char* owner = "RelationalAttention") {
  return as_value_error(
      [&] { return ops::parse_relational_attention_implementation(name, owner); });
}

}  // namespace

void bind_attention(py::module_& m) {
  ModuleBinding<AttentionImpl>(m, "Attention")
      .attr("n_kv_heads", &AttentionImpl::n_kv_heads)
      .attr("total_n_heads", &AttentionImpl::total_n_heads)
      .attr("key_dim", &AttentionImpl::key_dim)
      .attr("head_dim", &AttentionImpl::head_dim)
      .attr("n_rep_kv", &AttentionImpl::n_rep_kv)
      .attr("attn_scale", &AttentionImpl::attn_scale)
      .forward<Tensor, Tensor, Tensor, OptTensor, OptTensor, OptTensor, bool, bool>(
          "query", "key", "value", "freqs_cos", "freqs_sin", "attn_mask", "is_causal",
          "need_weights");

  ModuleBinding<RelationalAttentionImpl>(m, "RelationalAttention")
      .attr("n_relations", &RelationalAttentionImpl::n_relations)
      .attr("n_kv_heads", &RelationalAttentionImpl::n_kv_heads)
      .attr("total_n_heads", &RelationalAttentionImpl::total_n_heads)
      .attr("head_dim", &RelationalAttentionImpl::head_dim)
      .attr("key_dim", &RelationalAttentionImpl::key_dim)
      .attr("rel_proj_dim", &RelationalAttentionImpl::rel_proj_dim)
      .attr("n_rep_kv", &RelationalAttentionImpl::n_rep_kv)
      .attr("attn_scale", &RelationalAttentionImpl::attn_scale)
      .attr("rel_scale", &RelationalAttentionImpl::rel_scale)
      .forward<Tensor, OptTensor, OptTensor, OptTensor, OptTensor, bool, bool>(
          "x", "symbols", "freqs_cos", "freqs_sin", "attn_mask", "is_causal", "need_weights")
      // The path of need_weights=False forwards, by name (relational_attention.h).
      .def("_get_implementation",
           [](const RelationalAttentionImpl& self) {
             return implementation_name(self.implementation);
           })
      .def("_set_implementation",
           [](RelationalAttentionImpl& self, const std::string& name) {
             self.implementation = parse_implementation(name);
           })
      .def("_last_implementation",
           [](const RelationalAttentionImpl& self) {
             return implementation_name(self.last_implementation);
           })
      .def("_get_block_size", [](const RelationalAttentionImpl& self) { return self.block_size; })
      .def("_set_block_size", [](RelationalAttentionImpl& self, int64_t rows) {
        if (rows <= 0) {
          throw py::value_error("RelationalAttention: block_size must be positive, got " +
                                std::to_string(rows));
        }
        self.block_size = rows;
      });

  // The two relational cross-attention ablations have the same attributes and forward.
  auto bind_cross_attention = [](auto&& binding) {
    using Impl = typename std::decay_t<decltype(binding)>::Impl;
    binding.attr("n_kv_heads", &Impl::n_kv_heads)
        .attr("total_n_heads", &Impl::total_n_heads)
        .attr("head_dim", &Impl::head_dim)
        .attr("n_rep_kv", &Impl::n_rep_kv)
        .attr("attn_scale", &Impl::attn_scale)
        .template forward<Tensor, OptTensor, OptTensor, OptTensor, OptTensor, bool>(
            "x", "symbols", "freqs_cos", "freqs_sin", "attn_mask", "is_causal");
  };
  bind_cross_attention(ModuleBinding<RelationalCrossAttentionImpl>(m, "RelationalCrossAttention"));
  bind_cross_attention(ModuleBinding<DisentangledRelationalCrossAttentionImpl>(
      m, "DisentangledRelationalCrossAttention"));

  ModuleBinding<DualAttentionImpl>(m, "DualAttention")
      .attr("use_self_attn", &DualAttentionImpl::use_self_attn)
      .attr("use_rel_attn", &DualAttentionImpl::use_rel_attn)
      .attr("total_n_heads", &DualAttentionImpl::total_n_heads)
      .forward<Tensor, OptTensor, OptTensor, bool, OptTensor, OptTensor, bool>(
          "x", "symbols", "attn_mask", "is_causal", "freqs_cos", "freqs_sin", "need_weights");

  // The path torch.ops.dual_attention.relational_attention takes for inputs described by their
  // device, dtype and sizes (ops.h: resolve_relational_attention_path), by name.
  m.def(
      "relational_attention_path",
      [](const std::string& implementation, const torch::Device& device, torch::ScalarType dtype,
         int64_t batch, int64_t n, int64_t n_heads, int64_t n_relations,
         const std::string& rel_activation, bool relative_symbols, bool has_mask,
         bool need_weights) {
        ops::RelationalAttentionPathInputs in;
        in.device = device;
        in.dtype = dtype;
        in.batch = batch;
        in.n_queries = in.n_keys = n;
        in.n_heads = n_heads;
        in.n_relations = n_relations;
        in.rel_activation = rel_activation;
        in.relative_symbols = relative_symbols;
        in.has_mask = has_mask;
        in.need_weights = need_weights;
        in.traced = device.is_meta();
        return implementation_name(ops::resolve_relational_attention_path(
            parse_implementation(implementation, "relational_attention_path"), in));
      },
      py::arg("implementation"), py::arg("device"), py::arg("dtype"), py::arg("batch"),
      py::arg("n"), py::arg("n_heads"), py::arg("n_relations"), py::arg("rel_activation"),
      py::arg("relative_symbols"), py::arg("has_mask"), py::arg("need_weights"));

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
