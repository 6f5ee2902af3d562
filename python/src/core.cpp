// Kwargs conversion, error translation, the base torch::nn::Module binding every mirror reads its
// tree through, and the LibTorch modules our modules are built from (Linear, Dropout, ...).
#include <sstream>

#include "binding.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {

Kwargs to_kwargs_value(py::handle value, const std::string& where) {
  PyObject* o = value.ptr();
  if (value.is_none()) return nullptr;
  if (PyBool_Check(o)) return value.cast<bool>();
  if (PyLong_Check(o)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0)
      throw py::value_error(where + ": integer " + py::str(value).cast<std::string>() +
                            " is out of range");
    return static_cast<int64_t>(v);
  }
  if (PyFloat_Check(o)) return PyFloat_AsDouble(o);
  if (PyUnicode_Check(o)) return value.cast<std::string>();
  if (PyDict_Check(o)) {
    Kwargs out = Kwargs::object();
    for (auto item : py::reinterpret_borrow<py::dict>(value)) {
      if (!PyUnicode_Check(item.first.ptr())) {
        throw py::type_error(where + ": dict keys must be str, got " +
                             py::repr(item.first).cast<std::string>());
      }
      const auto key = item.first.cast<std::string>();
      out[key] = to_kwargs_value(item.second, where + "['" + key + "']");
    }
    return out;
  }
  if (PyList_Check(o) || PyTuple_Check(o)) {
    Kwargs out = Kwargs::array();
    std::size_t i = 0;
    for (auto item : value)
      out.push_back(to_kwargs_value(item, where + "[" + std::to_string(i++) + "]"));
    return out;
  }
  // numpy scalars and other numbers: integers through __index__, reals through __float__.
  if (PyIndex_Check(o))
    return to_kwargs_value(py::reinterpret_steal<py::object>(PyNumber_Index(o)), where);
  if (!THPVariable_Check(o) && PyObject_HasAttrString(o, "__float__")) {
    return py::float_(py::reinterpret_borrow<py::object>(value)).cast<double>();
  }
  throw py::type_error(where + ": expected None, bool, int, float, str, list, tuple or dict, got " +
                       std::string(Py_TYPE(o)->tp_name));
}

Kwargs to_kwargs(const py::dict& kwargs, const std::string& owner) {
  Kwargs out = Kwargs::object();
  for (auto item : kwargs) {
    const auto key = py::str(item.first).cast<std::string>();
    out[key] = to_kwargs_value(item.second, owner + ": keyword argument '" + key + "'");
  }
  return out;
}

py::object from_kwargs_value(const Kwargs& value) {
  switch (value.type()) {
    case Kwargs::value_t::null:
      return py::none();
    case Kwargs::value_t::boolean:
      return py::bool_(value.get<bool>());
    case Kwargs::value_t::number_integer:
    case Kwargs::value_t::number_unsigned:
      return py::int_(value.get<int64_t>());
    case Kwargs::value_t::number_float:
      return py::float_(value.get<double>());
    case Kwargs::value_t::string:
      return py::str(value.get<std::string>());
    case Kwargs::value_t::array: {
      py::list out;
      for (const auto& item : value) out.append(from_kwargs_value(item));
      return out;
    }
    case Kwargs::value_t::object: {
      py::dict out;
      for (const auto& item : value.items())
        out[py::str(item.key())] = from_kwargs_value(item.value());
      return out;
    }
    default:
      throw py::type_error("cannot convert the keyword value " + value.dump() + " to Python");
  }
}

namespace {

// A LibTorch module the package mirrors but does not build itself: its Python counterpart is the
// torch.nn class of the same name, whose attributes _attrs() supplies.
template <class Impl>
ModuleClass<Impl> bind_builtin(py::module_& m, const char* name,
                               std::function<py::dict(const Impl&)> attrs) {
  ModuleClass<Impl> cls(m, name, py::module_local());
  cls.def("_attrs", [attrs](const Impl& self) { return attrs(self); });
  return cls;
}

// [(name, value)] of a module's own tensors or children, in the order they were registered.
template <class Value>
py::list items(const torch::OrderedDict<std::string, Value>& dict) {
  py::list out;
  for (const auto& item : dict) out.append(py::make_tuple(item.key(), item.value()));
  return out;
}

}  // namespace

void bind_core(py::module_& m) {
  // c10 errors keep their message (without the C++ backtrace) and their Python type.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::NotImplementedError& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  // The tree as the mirror reads it: this module's own tensors and children (not recursive).
  py::class_<torch::nn::Module, std::shared_ptr<torch::nn::Module>>(m, "Module", py::module_local())
      .def("_type_name", [](const torch::nn::Module& self) { return self.name(); })
      .def("_id",
           [](const torch::nn::Module& self) { return reinterpret_cast<std::uintptr_t>(&self); })
      .def("_named_parameters",
           [](const torch::nn::Module& self) {
             return items(self.named_parameters(/*recurse=*/false));
           })
      .def("_named_buffers",
           [](const torch::nn::Module& self) {
             return items(self.named_buffers(/*recurse=*/false));
           })
      .def("_named_children",
           [](const torch::nn::Module& self) { return items(self.named_children()); })
      .def("_is_training", &torch::nn::Module::is_training)
      .def("_set_training", [](torch::nn::Module& self, bool on) { self.train(on); })
      .def("_clone", [](const torch::nn::Module& self) { return self.clone(); })
      .def("__repr__", [](const torch::nn::Module& self) {
        std::ostringstream s;
        self.pretty_print(s);
        return s.str();
      });

  using namespace torch::nn;
  using namespace pybind11::literals;
  auto linear = bind_builtin<LinearImpl>(m, "Linear", [](const LinearImpl& self) {
    return py::dict("in_features"_a = self.options.in_features(),
                    "out_features"_a = self.options.out_features());
  });
  def_forward<Tensor>(linear, "input");
  auto dropout = bind_builtin<DropoutImpl>(m, "Dropout", [](const DropoutImpl& self) {
    return py::dict("p"_a = self.options.p(), "inplace"_a = self.options.inplace());
  });
  def_forward<Tensor>(dropout, "input");
  auto layer_norm = bind_builtin<LayerNormImpl>(m, "LayerNorm", [](const LayerNormImpl& self) {
    return py::dict("normalized_shape"_a = py::tuple(py::cast(self.options.normalized_shape())),
                    "eps"_a = self.options.eps(),
                    "elementwise_affine"_a = self.options.elementwise_affine());
  });
  def_forward<Tensor>(layer_norm, "input");
  auto embedding = bind_builtin<EmbeddingImpl>(m, "Embedding", [](const EmbeddingImpl& self) {
    return py::dict("num_embeddings"_a = self.options.num_embeddings(),
                    "embedding_dim"_a = self.options.embedding_dim(),
                    "padding_idx"_a = self.options.padding_idx(),
                    "max_norm"_a = self.options.max_norm(),
                    "norm_type"_a = self.options.norm_type(),
                    "scale_grad_by_freq"_a = self.options.scale_grad_by_freq(),
                    "sparse"_a = self.options.sparse());
  });
  def_forward<Tensor>(embedding, "input");
  auto identity =
      bind_builtin<IdentityImpl>(m, "Identity", [](const IdentityImpl&) { return py::dict(); });
  def_forward<Tensor>(identity, "input");
  bind_builtin<ModuleListImpl>(m, "ModuleList", [](const ModuleListImpl&) { return py::dict(); });
  bind_builtin<ModuleDictImpl>(m, "ModuleDict", [](const ModuleDictImpl&) { return py::dict(); });
  bind_builtin<SequentialImpl>(m, "Sequential", [](const SequentialImpl&) { return py::dict(); });
}

}  // namespace dual_attention::python
#pragma GCC visibility pop
