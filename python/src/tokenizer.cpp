// dual_attention::Tokenizer for dual_attention_cpp.tokenizer
// (python/dual_attention_cpp/tokenizer.py gives it tiktoken.Encoding's interface). Encoding and
// decoding run without the GIL.
#include "dual_attention/tokenizer.h"

#include "binding.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {

namespace {

// The UTF-8 bytes of a str, borrowed from it (valid while `text` lives). A str holding lone
// surrogates has no UTF-8 form: that raises UnicodeEncodeError, which tokenizer.py handles as
// tiktoken does.
std::string_view utf8_of(const py::str& text) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (!data) throw py::error_already_set();
  return {data, size_t(size)};
}

SpecialTokenSet special_set(const py::object& tokens, const char* argument) {
  if (py::isinstance<py::str>(tokens)) {
    if (tokens.cast<std::string>() == "all") return SpecialTokenSet::all();
    throw py::value_error(std::string(argument) +
                          ": expected \"all\" or a collection of str, got " +
                          py::repr(tokens).cast<std::string>());
  }
  std::set<std::string> out;
  for (const py::handle t : tokens) {
    if (!py::isinstance<py::str>(t))
      throw py::type_error(std::string(argument) + ": expected str items, got " +
                           py::repr(t).cast<std::string>());
    out.insert(t.cast<std::string>());
  }
  return SpecialTokenSet(std::move(out));
}

py::list to_list(const std::vector<int64_t>& ids) {
  py::list out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    PyObject* v = PyLong_FromLongLong(ids[i]);
    if (!v) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), Py_ssize_t(i), v);
  }
  return out;
}

std::vector<std::string> texts_of(const py::list& texts) {
  std::vector<std::string> out;
  out.reserve(texts.size());
  for (const py::handle t : texts) {
    if (!py::isinstance<py::str>(t))
      throw py::type_error("expected a list of str, got an item " +
                           py::repr(t).cast<std::string>());
    out.emplace_back(utf8_of(py::reinterpret_borrow<py::str>(t)));
  }
  return out;
}

}  // namespace

void bind_tokenizer(py::module_& m) {
  // Ids that are not tokens are KeyError, as in tiktoken; other tokenizer errors ValueError.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TokenIdError& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    } catch (const TokenizerError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<Tokenizer>(m, "Tokenizer", py::module_local())
      .def_static(
          "from_file",
          [](const std::string& path, std::optional<std::string> pat_str,
             std::optional<std::map<std::string, int64_t>> special_tokens,
             const std::string& name) {
            TokenizerOptions options;
            options.name = name;
            options.pat_str = std::move(pat_str);
            options.special_tokens = std::move(special_tokens);
            return Tokenizer::from_file(path, options);
          },
          py::arg("path"), py::arg("pat_str"), py::arg("special_tokens"), py::arg("name"),
          release_gil)
      .def_static(
          "from_ranks",
          [](const py::dict& mergeable_ranks, const std::string& pat_str,
             const std::map<std::string, int64_t>& special_tokens, const std::string& name) {
            std::vector<std::pair<std::string, int64_t>> ranks;
            ranks.reserve(mergeable_ranks.size());
            for (const auto item : mergeable_ranks) {
              if (!py::isinstance<py::bytes>(item.first))
                throw py::type_error("mergeable_ranks: keys must be bytes, got " +
                                     py::repr(item.first).cast<std::string>());
              ranks.emplace_back(item.first.cast<std::string>(), item.second.cast<int64_t>());
            }
            py::gil_scoped_release release;
            return Tokenizer::from_ranks(ranks, pat_str, special_tokens, name);
          },
          py::arg("mergeable_ranks"), py::arg("pat_str"), py::arg("special_tokens"),
          py::arg("name"))
      .def_static(
          "get_encoding",
          [](const std::string& name, std::optional<std::string> path) {
            return get_encoding(name, path);
          },
          py::arg("name"), py::arg("path"), release_gil)
      .def(
          "encode_ordinary",
          [](const Tokenizer& self, const py::str& text) {
            const std::string_view utf8 = utf8_of(text);
            const auto ids = without_gil([&] { return self.encode_ordinary(utf8); });
            return to_list(ids);
          },
          py::arg("text"))
      .def(
          "encode",
          [](const Tokenizer& self, const py::str& text, const py::object& allowed_special,
             const py::object& disallowed_special) {
            const std::string_view utf8 = utf8_of(text);
            const SpecialTokenSet allowed = special_set(allowed_special, "allowed_special");
            const SpecialTokenSet disallowed =
                special_set(disallowed_special, "disallowed_special");
            const auto ids = without_gil([&] { return self.encode(utf8, allowed, disallowed); });
            return to_list(ids);
          },
          py::arg("text"), py::arg("allowed_special"), py::arg("disallowed_special"))
      .def(
          "encode_ordinary_batch",
          [](const Tokenizer& self, const py::list& texts) {
            const std::vector<std::string> utf8 = texts_of(texts);
            const auto ids = without_gil([&] { return self.encode_ordinary_batch(utf8); });
            py::list out;
            for (const auto& v : ids) out.append(to_list(v));
            return out;
          },
          py::arg("texts"))
      .def(
          "encode_batch",
          [](const Tokenizer& self, const py::list& texts, const py::object& allowed_special,
             const py::object& disallowed_special) {
            const std::vector<std::string> utf8 = texts_of(texts);
            const SpecialTokenSet allowed = special_set(allowed_special, "allowed_special");
            const SpecialTokenSet disallowed =
                special_set(disallowed_special, "disallowed_special");
            const auto ids =
                without_gil([&] { return self.encode_batch(utf8, allowed, disallowed); });
            py::list out;
            for (const auto& v : ids) out.append(to_list(v));
            return out;
          },
          py::arg("texts"), py::arg("allowed_special"), py::arg("disallowed_special"))
      .def(
          "encode_single_token",
          [](const Tokenizer& self, const py::bytes& token) {
            return self.encode_single_token(std::string(token));
          },
          py::arg("token"))
      .def(
          "decode_bytes",
          [](const Tokenizer& self, const std::vector<int64_t>& ids) {
            const auto bytes = without_gil([&] { return self.decode_bytes(ids); });
            return py::bytes(bytes);
          },
          py::arg("tokens"))
      .def("decode", &Tokenizer::decode, py::arg("tokens"), release_gil)  // valid UTF-8: a str
      .def(
          "decode_single_token_bytes",
          [](const Tokenizer& self, int64_t id) {
            return py::bytes(self.decode_single_token_bytes(id));
          },
          py::arg("token"))
      .def("decode_batch", &Tokenizer::decode_batch, py::arg("batch"), release_gil)  // [str]
      .def(
          "decode_bytes_batch",
          [](const Tokenizer& self, const std::vector<std::vector<int64_t>>& batch) {
            const auto bytes = without_gil([&] { return self.decode_bytes_batch(batch); });
            py::list out;
            for (const auto& b : bytes) out.append(py::bytes(b));
            return out;
          },
          py::arg("batch"))
      .def_property_readonly("name", &Tokenizer::name)
      .def_property_readonly("pat_str", &Tokenizer::pat_str)
      .def_property_readonly("n_vocab", &Tokenizer::n_vocab)
      .def_property_readonly("max_token_value", &Tokenizer::max_token_value)
      .def_property_readonly("eot_token", &Tokenizer::eot_token)
      .def_property_readonly("special_tokens", &Tokenizer::special_tokens)
      .def("contains", &Tokenizer::contains, py::arg("token"));

  m.def(
      "utf8_replace_invalid",
      [](const py::bytes& data) { return py::bytes(utf8_replace_invalid(std::string(data))); },
      py::arg("data"));
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
