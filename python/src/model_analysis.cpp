// Bindings of model_analysis.h (the forwards with intermediate results) and of the apps' views and
// server (tools/app/), used by dual_attention_cpp.model_analysis.
#include "dual_attention/model_analysis.h"

#include <csignal>
#include <iostream>

#include "binding.h"
#include "dual_attention/language_models.h"
#include "dual_attention/symbol_retrieval.h"
#if DUAL_ATTENTION_WITH_APPS
#include "server.h"
#include "session.h"
#include "views.h"
#endif

namespace dual_attention::python {
namespace {

// The reference's dict: key -> list of tensors, None where a layer has no such result.
py::dict results_dict(const IntermediateResults& results) {
  py::dict out;
  for (const auto& [key, tensors] : results) {
    py::list list;
    for (const auto& t : tensors) list.append(t.defined() ? py::cast(t) : py::none());
    out[key.c_str()] = list;
  }
  return out;
}

// Binds `fn`, a forward with intermediate results, as name(model, inputs...) -> (output,
// results_dict), run without the GIL.
template <class Impl, class... Inputs, class... Names>
void def_with_results(py::module_& m, const char* name,
                      std::tuple<torch::Tensor, IntermediateResults> (*fn)(Impl&, const Inputs&...),
                      Names... input_names) {
  m.def(
      name,
      [fn](Impl& model, const Inputs&... inputs) {
        const auto [out, results] = without_gil([&] { return fn(model, inputs...); });
        return py::make_tuple(out, results_dict(results));
      },
      py::arg("model"), py::arg(input_names)...);
}

template <class Impl>
void def_symbol_weights(py::module_& m) {
  m.def(
      "symbolic_attn_forward_get_weights",
      [](std::shared_ptr<Impl> retriever, const torch::Tensor& x) {
        torch::nn::AnyModule any(retriever);
        auto [symbols, weights] = symbolic_attn_forward_get_weights(any, x);
        return py::make_tuple(symbols, weights.defined() ? py::cast(weights) : py::none());
      },
      py::arg("mod"), py::arg("x"));
}

#if DUAL_ATTENTION_WITH_APPS
app::Server* serving = nullptr;
void stop_serving(int) {
  if (serving) serving->stop();
}
#endif

}  // namespace

void bind_model_analysis(py::module_& m) {
  def_with_results(m, "datlm_forward_w_intermediate_results", &datlm_forward_w_intermediate_results,
                   "x");
  def_with_results(m, "transformerlm_forward_w_intermediate_results",
                   &transformerlm_forward_w_intermediate_results, "x");
  def_with_results(m, "seq2seq_forward_w_intermediate_results",
                   &seq2seq_forward_w_intermediate_results, "x", "y");
  def_with_results(m, "seq2seq_dat_forward_w_intermediate_results",
                   &seq2seq_dat_forward_w_intermediate_results, "x", "y");
  def_with_results(m, "vit_forward_w_intermediate_results", &vit_forward_w_intermediate_results,
                   "x");
  def_with_results(m, "vidat_forward_w_intermediate_results", &vidat_forward_w_intermediate_results,
                   "x");
  def_symbol_weights<SymbolicAttentionImpl>(m);
  def_symbol_weights<RelationalSymbolicAttentionImpl>(m);
  def_symbol_weights<PositionalSymbolRetrieverImpl>(m);
  def_symbol_weights<PositionRelativeSymbolRetrieverImpl>(m);
  m.def(
      "block_forward_get_weights",
      [](DualAttnEncoderBlockImpl& block, const torch::Tensor& x, const OptTensor& symbols,
         const OptTensor& freqs_cos, const OptTensor& freqs_sin) {
        auto [out, sa, ra, rels] = block_forward_get_weights(
            block, x, cpp_argument(symbols), cpp_argument(freqs_cos), cpp_argument(freqs_sin));
        auto opt = [](const torch::Tensor& t) { return t.defined() ? py::cast(t) : py::none(); };
        return py::make_tuple(out, opt(sa), opt(ra), opt(rels));
      },
      py::arg("mod"), py::arg("x"), py::arg("symbols"), py::arg("freqs_cos") = py::none(),
      py::arg("freqs_sin") = py::none());

#if DUAL_ATTENTION_WITH_APPS
  // ---- the views and the app (tools/app) ----
  m.def(
      "_viz_payload",
      [](py::object model, const std::vector<int64_t>& ids, const std::vector<std::string>& tokens,
         int64_t n_prompt, const std::string& name, int64_t top_symbols) {
        TORCH_CHECK(tokens.size() == ids.size(), "tokens (", tokens.size(),
                    " strings) must name each of the ", ids.size(), " token ids");
        TORCH_CHECK(!ids.empty(), "the text has no tokens");
        auto idx = torch::tensor(ids, torch::kLong).unsqueeze(0);
        app::VisualizationInput input;
        std::string cls;
        if (py::isinstance<DualAttnTransformerLMImpl>(model)) {
          auto& dat = model.cast<DualAttnTransformerLMImpl&>();
          py::gil_scoped_release release;
          torch::NoGradGuard no_grad;
          auto results = std::get<1>(datlm_forward_w_intermediate_results(dat, idx));
          input =
              app::visualization_input(results, 0, dat.options.ra_type() == "relational_attention");
          cls = "DualAttnTransformerLM";
        } else {
          auto& lm = model.cast<TransformerLMImpl&>();
          py::gil_scoped_release release;
          torch::NoGradGuard no_grad;
          auto results = std::get<1>(transformerlm_forward_w_intermediate_results(lm, idx));
          input = app::visualization_input(results, 0, true);
          cls = "TransformerLM";
        }
        input.model = name;
        input.model_class = cls;
        input.tokens = tokens;
        input.n_prompt = n_prompt;
        app::PayloadOptions options;
        options.top_symbols = top_symbols;
        return app::visualization_payload(input, options)
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      },
      py::arg("model"), py::arg("ids"), py::arg("tokens"), py::arg("n_prompt"), py::arg("name"),
      py::arg("top_symbols") = 4);
  m.def(
      "_viz_html",
      [](const std::string& payload, const std::string& title) {
        return app::visualization_html(nlohmann::json::parse(payload), title);
      },
      py::arg("payload"), py::arg("title"));
  m.def(
      "_serve",
      [](const std::string& model, const std::string& host, int port,
         std::optional<std::string> tokenizer, bool quiet) {
        py::gil_scoped_release release;
        app::LanguageModelSession session(model, tokenizer);
        app::ServerOptions options;
        options.host = host;
        options.port = port;
        options.log = !quiet;
        app::Server server(session, options);
        const int bound = server.bind();
        std::cout << "serving " << session.name << " (" << session.model_class() << ", tokenizer "
                  << session.codec->name() << ") at http://" << host << ":" << bound << "/"
                  << std::endl;
        serving = &server;
        auto old_int = std::signal(SIGINT, stop_serving);
        auto old_term = std::signal(SIGTERM, stop_serving);
        const bool ok = server.listen();
        std::signal(SIGINT, old_int);
        std::signal(SIGTERM, old_term);
        serving = nullptr;
        return ok;
      },
      py::arg("model"), py::arg("host"), py::arg("port"), py::arg("tokenizer"), py::arg("quiet"));
#endif
}

}  // namespace dual_attention::python
