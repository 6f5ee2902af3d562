// dual_attention_cpp._C: the compiled half of the Python package (see python/dual_attention_cpp/).
#include "binding.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() =
      "LibTorch modules of dual-attention-cpp; use them through the dual_attention_cpp package.";
  dual_attention::python::bind_core(m);
  dual_attention::python::bind_attention(m);
  dual_attention::python::bind_layers(m);
  dual_attention::python::bind_models(m);
  dual_attention::python::bind_tokenizer(m);
  dual_attention::python::bind_model_analysis(m);
}
