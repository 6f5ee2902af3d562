// The language, seq2seq and vision models, their checkpoints and the optimizer configuration.
#include <utility>
#include <vector>

#include "binding.h"
#include "dual_attention/generation.h"
#include "dual_attention/hub/hub.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {
namespace {

// from_pretrained / save_pretrained of a model class with a ModuleHolder `Holder`.
template <class Holder, class Binding>
void def_pretrained(Binding& binding) {
  using Impl = typename Binding::Impl;
  binding.cls().def_static(
      "_from_pretrained",
      [](const std::string& name_or_path, std::optional<torch::Dtype> dtype,
         std::optional<torch::Device> device, std::optional<std::string> revision,
         std::optional<std::string> token, std::optional<std::string> cache_dir,
         bool local_files_only, bool force_download,
         std::optional<int64_t> max_parameter_bytes) -> std::shared_ptr<Impl> {
        hub::DownloadOptions download;
        download.revision = std::move(revision);
        download.token = std::move(token);
        download.cache_dir = std::move(cache_dir);
        download.local_files_only = local_files_only;
        download.force_download = force_download;
        PretrainedOptions options;
        options.dtype(dtype).download(download);
        if (device) options.device(*device);
        if (max_parameter_bytes) options.max_parameter_bytes(*max_parameter_bytes);
        return Holder::from_pretrained(name_or_path, options).ptr();
      },
      py::arg("name_or_path"), py::arg("dtype"), py::arg("device"), py::arg("revision"),
      py::arg("token"), py::arg("cache_dir"), py::arg("local_files_only"),
      py::arg("force_download"), py::arg("max_parameter_bytes"), release_gil);
  binding.def(
      "save_pretrained",
      [](const Impl& self, const std::string& folder) { self.save_pretrained(folder); },
      py::arg("save_directory"), release_gil);
}

// The parameter groups of configure_optimizers (the C++ rule), as [(params, weight_decay)].
py::list optimizer_groups(const torch::nn::Module& model, double weight_decay) {
  auto optimizer = configure_optimizers(model, weight_decay, 1.0, {0.9, 0.95});
  py::list groups;
  for (auto& group : optimizer.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    groups.append(py::make_tuple(group.params(), o.weight_decay()));
  }
  return groups;
}

template <class Error>
bool is_a(const hub::HubError& e) {
  return dynamic_cast<const Error*>(&e) != nullptr;
}

// hub/hub.h's errors become the Python classes of the same names in dual_attention_cpp.hf
// (OSError subclasses, as huggingface_hub's errors are), built with (message, repo_id, filename,
// revision[, status]).
void translate_hub_errors() {
  struct Kind {
    const char* name;
    bool (*matches)(const hub::HubError&);
  };
  // Most derived first: the first match names the Python class.
  static const Kind kinds[] = {
      {"GatedRepoError", is_a<hub::GatedRepoError>},
      {"UnauthorizedError", is_a<hub::UnauthorizedError>},
      {"RepositoryNotFoundError", is_a<hub::RepositoryNotFoundError>},
      {"RevisionNotFoundError", is_a<hub::RevisionNotFoundError>},
      {"EntryNotFoundError", is_a<hub::EntryNotFoundError>},
      {"LocalEntryNotFoundError", is_a<hub::LocalEntryNotFoundError>},
      {"NetworkError", is_a<hub::NetworkError>},
      {"DiskFullError", is_a<hub::DiskFullError>},
      {"ConsistencyError", is_a<hub::ConsistencyError>},
      {"FileMetadataError", is_a<hub::FileMetadataError>},
      {"HttpError", is_a<hub::HttpError>},
  };
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const hub::HubError& e) {
      const char* name = "HubError";
      for (const auto& kind : kinds) {
        if (kind.matches(e)) {
          name = kind.name;
          break;
        }
      }
      try {
        py::object cls = py::module_::import("dual_attention_cpp.hf").attr(name);
        const auto* http = dynamic_cast<const hub::HttpError*>(&e);
        py::object error =
            http ? cls(e.what(), e.repo_id(), e.filename(), e.revision(), http->status())
                 : cls(e.what(), e.repo_id(), e.filename(), e.revision());
        PyErr_SetObject(cls.ptr(), error.ptr());
      } catch (const py::error_already_set&) {  // the package is not importable: keep the message
        PyErr_SetString(PyExc_OSError, e.what());
      }
    }
  });
}

// generate(model, prompts, config, callback) with the config's keywords spelt out (the Python
// layer names them); the callback (index, tokens, logprobs, finished) -> bool runs with the GIL.
// Returns (sequences, tokens, logprobs, scores, finish_reasons).
template <class Impl>
py::tuple generate_with_config(Impl& self, const std::vector<std::vector<int64_t>>& prompts,
                               int64_t max_new_tokens, bool do_sample, double temperature,
                               OptInt top_k, std::optional<double> top_p,
                               std::optional<double> min_p, double repetition_penalty,
                               std::optional<uint64_t> seed, std::optional<at::Generator> generator,
                               std::vector<int64_t> eos_token_id,
                               std::vector<std::vector<int64_t>> stop_sequences,
                               OptInt pad_token_id, bool use_cache, bool output_scores,
                               const std::optional<py::function>& callback) {
  GenerationConfig config;
  config.max_new_tokens(max_new_tokens)
      .do_sample(do_sample)
      .temperature(temperature)
      .top_k(top_k)
      .top_p(top_p)
      .min_p(min_p)
      .repetition_penalty(repetition_penalty)
      .seed(seed)
      .generator(std::move(generator))
      .eos_token_id(std::move(eos_token_id))
      .stop_sequences(std::move(stop_sequences))
      .pad_token_id(pad_token_id)
      .use_cache(use_cache)
      .output_scores(output_scores);
  GenerationCallback stream;
  if (callback) {
    stream = [&callback](const GenerationStep& step) {
      py::gil_scoped_acquire gil;
      py::object go_on = (*callback)(step.index, step.tokens, step.logprobs, step.finished);
      return go_on.is_none() || go_on.cast<bool>();
    };
  }
  const auto out = without_gil([&] { return generate(self, prompts, config, stream); });
  return py::make_tuple(out.sequences, out.tokens, out.logprobs, out.scores, out.finish_reasons);
}

}  // namespace

void bind_models(py::module_& m) {
  translate_hub_errors();
  // ---- language_models ----
  ModuleBinding<DualAttnTransformerLMImpl> dat_lm(m, "DualAttnTransformerLM");
  ModuleBinding<TransformerLMImpl> t_lm(m, "TransformerLM");
  auto bind_lm = [](auto& lm) {
    using Impl = typename std::decay_t<decltype(lm)>::Impl;
    lm.template forward<Tensor, OptTensor>("x", "targets")
        .def(
            "generate",
            [](Impl& self, const Tensor& idx, int64_t max_new_tokens, double temperature,
               OptInt top_k) { return self.generate(idx, max_new_tokens, temperature, top_k); },
            py::arg("idx"), py::arg("max_new_tokens"), py::arg("temperature"), py::arg("top_k"),
            release_gil)
        .def("_generate", &generate_with_config<Impl>, py::arg("prompts"),
             py::arg("max_new_tokens"), py::arg("do_sample"), py::arg("temperature"),
             py::arg("top_k"), py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"),
             py::arg("seed"), py::arg("generator"), py::arg("eos_token_id"),
             py::arg("stop_sequences"), py::arg("pad_token_id"), py::arg("use_cache"),
             py::arg("output_scores"), py::arg("callback"))
        .def("get_num_params", &Impl::get_num_params, py::arg("non_embedding"))
        .def("_non_persistent_buffers", &Impl::non_persistent_buffers);
  };
  bind_lm(dat_lm);
  bind_lm(t_lm);
  def_pretrained<DualAttnTransformerLM>(dat_lm);
  def_pretrained<TransformerLM>(t_lm);
  m.def("optimizer_groups", &optimizer_groups, py::arg("model"), py::arg("weight_decay"));

  // ---- seq2seq_models ----
  ModuleBinding<Seq2SeqTransformerImpl> s2s(m, "Seq2SeqTransformer");
  ModuleBinding<Seq2SeqDualAttnTransformerImpl> s2s_dat(m, "Seq2SeqDualAttnTransformer");
  auto bind_s2s = [](auto& model) {
    using Impl = typename std::decay_t<decltype(model)>::Impl;
    model.template forward<Tensor, Tensor, OptTensor>("x", "y", "targets")
        .def("get_num_params", &Impl::get_num_params);
  };
  bind_s2s(s2s);
  bind_s2s(s2s_dat);
  def_pretrained<Seq2SeqTransformer>(s2s);
  def_pretrained<Seq2SeqDualAttnTransformer>(s2s_dat);

  // ---- vision_models ----
  ModuleBinding<VisionTransformerImpl> vit(m, "VisionTransformer");
  ModuleBinding<VisionDualAttnTransformerImpl> vit_dat(m, "VisionDualAttnTransformer");
  auto bind_vision = [](auto& model) {
    using Impl = typename std::decay_t<decltype(model)>::Impl;
    model.attr("img_channels", &Impl::img_channels)
        .attr("img_width", &Impl::img_width)
        .attr("img_height", &Impl::img_height)
        .attr("patch_width", &Impl::patch_width)
        .attr("patch_height", &Impl::patch_height)
        .attr("num_patches", &Impl::num_patches)
        .attr("patch_dim", &Impl::patch_dim)
        .template forward<Tensor>("x")
        .def("get_num_params", &Impl::get_num_params);
  };
  bind_vision(vit);
  bind_vision(vit_dat);
  def_pretrained<VisionTransformer>(vit);
  def_pretrained<VisionDualAttnTransformer>(vit_dat);
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
