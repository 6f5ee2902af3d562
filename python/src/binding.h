// The pybind11 layer's helpers: Python objects <-> Kwargs, error translation, and bind_module(),
// which binds one LibTorch module class so that the Python package can build it from keywords and
// mirror it (python/dual_attention_cpp/_module.py). The bindings add no behaviour of their own.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dual_attention/kwargs.h"

// Hidden like pybind11's own namespace: nothing here is used outside this module.
#pragma GCC visibility push(hidden)
namespace dual_attention::python {

namespace py = pybind11;

// A Python value (None, bool, int, float, str, list/tuple, dict with str keys) as a Kwargs value.
// Anything else is a TypeError naming `where`.
Kwargs to_kwargs_value(py::handle value, const std::string& where);
// Keyword arguments (a dict) as a Kwargs object.
Kwargs to_kwargs(const py::dict& kwargs, const std::string& owner);
// A Kwargs value as a Python object (objects become dicts, arrays lists).
py::object from_kwargs_value(const Kwargs& value);

// Runs `build`, reporting a c10::Error it raises as ValueError: errors while building a module come
// from its arguments (the reference raises ValueError or AssertionError there).
template <class F>
auto as_value_error(F&& build) -> decltype(build()) {
  try {
    return build();
  } catch (const c10::Error& e) {
    throw py::value_error(e.what_without_backtrace());
  }
}

// The argument types of the bound methods: a tensor, a tensor or None, an int or None.
using Tensor = torch::Tensor;
using OptTensor = std::optional<torch::Tensor>;
using OptInt = std::optional<int64_t>;
// Every bound method that computes runs without the GIL.
inline constexpr auto release_gil = py::call_guard<py::gil_scoped_release>();
// fn() run without the GIL, for a method that converts the result itself (which needs the GIL).
template <class F>
auto without_gil(F&& fn) -> decltype(fn()) {
  py::gil_scoped_release release;
  return fn();
}

// A Python argument as the C++ methods take it: a tensor that is None is an undefined tensor, any
// other value is passed on as it is.
inline Tensor cpp_argument(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
template <class T>
const T& cpp_argument(const T& value) {
  return value;
}

// The Python annotation of a keyword of C++ type T (for signatures, help() and the .pyi stubs).
template <class T>
struct PythonType;
template <>
struct PythonType<int64_t> {
  static std::string name() { return "int"; }
};
template <>
struct PythonType<double> {
  static std::string name() { return "float"; }
};
template <>
struct PythonType<bool> {
  static std::string name() { return "bool"; }
};
template <>
struct PythonType<std::string> {
  static std::string name() { return "str"; }
};
template <>
struct PythonType<std::vector<int64_t>> {
  static std::string name() { return "Sequence[int]"; }
};
template <>
struct PythonType<Kwargs> {
  static std::string name() { return "Optional[dict]"; }
};
template <class T>
struct PythonType<std::optional<T>> {
  static std::string name() { return "Optional[" + PythonType<T>::name() + "]"; }
};

// The module classes the package mirrors. A Python mirror asks its C++ module for:
//   _attrs()            attributes the reference's module has (its keywords and resolved sizes)
//   _keywords()         [(name, default or inspect.Parameter.empty, annotation)] in the
//                       reference's order
//   _kwargs()           the keywords that rebuild this module (for copy and pickle)
// and the language models for _non_persistent_buffers(), their buffers that are not state (RoPE
// tables: persistent=False in the reference).
template <class Impl>
using ModuleClass = py::class_<Impl, torch::nn::Module, std::shared_ptr<Impl>>;

// Binds Impl::forward taking Python arguments of types Py (OptTensor: a tensor or None), named
// `names`, in the order of the C++ forward's parameters.
template <class... Py, class Impl, class... Names>
void def_forward(ModuleClass<Impl>& cls, Names... names) {
  static_assert(sizeof...(Names) == sizeof...(Py), "def_forward: one name per argument");
  cls.def(
      "forward", [](Impl& self, Py... args) { return self.forward(cpp_argument(args)...); },
      py::arg(names)..., release_gil);
}

// Attribute getters recorded per bound class, read by _attrs().
template <class Impl>
using AttrGetters = std::vector<std::pair<std::string, std::function<py::object(const Impl&)>>>;

// Binds a LibTorch module class whose Options are built from keywords (Options::from_kwargs; the
// keywords, their order, types and defaults all come from the Options). `attrs` lists public
// members of Impl exposed as Python attributes (the sizes the module resolves from its keywords).
template <class Impl_>
class ModuleBinding {
 public:
  using Impl = Impl_;
  using Options = std::decay_t<decltype(std::declval<Impl>().options)>;

  ModuleBinding(py::module_& m, const char* name)
      : cls_(m, name, py::module_local()), getters_(std::make_shared<AttrGetters<Impl>>()) {
    const std::string owner = name;
    cls_.def(py::init([owner](const py::dict& kwargs) {
               const Kwargs k = to_kwargs(kwargs, owner);
               return as_value_error(
                   [&] { return std::make_shared<Impl>(Options::from_kwargs(k, owner)); });
             }),
             py::arg("kwargs"));
    cls_.def_static("_keywords", [] {
      const std::vector<std::string> required = required_keywords<Options>();
      Options defaults = placeholder_options<Options>();
      py::list out;
      defaults.fields([&](const char* key, auto& field) {
        const bool is_required = std::find(required.begin(), required.end(), key) != required.end();
        py::object dflt = py::module_::import("inspect").attr("Parameter").attr("empty");
        if (!is_required) {
          // A dict keyword defaults to None, as in the reference (None means no keywords).
          if constexpr (std::is_same_v<std::decay_t<decltype(field)>, Kwargs>) {
            dflt = field.empty() ? py::none() : from_kwargs_value(field);
          } else {
            dflt = from_kwargs_value(detail::write_kwarg(field));
          }
        }
        out.append(py::make_tuple(key, dflt, PythonType<std::decay_t<decltype(field)>>::name()));
      });
      return out;
    });
    cls_.def("_kwargs", &ModuleBinding::kwargs_of);
    auto getters = getters_;
    cls_.def("_attrs", [getters](const Impl& self) {
      py::dict out = kwargs_of(self);
      for (const auto& [key, get] : *getters) out[key.c_str()] = get(self);
      return out;
    });
  }

  // Exposes a resolved member (e.g. head_dim) as a read-only attribute and in _attrs(); `Owner`
  // is Impl or the base class that declares the member (as the vision models' sizes).
  template <class T, class Owner>
  ModuleBinding& attr(const char* name, T Owner::*member) {
    static_assert(std::is_base_of_v<Owner, Impl>, "attr: the member must be one of Impl's");
    cls_.def_readonly(name, member);
    getters_->emplace_back(name, [member](const Impl& self) { return py::cast(self.*member); });
    return *this;
  }

  // def_forward(): binds Impl::forward.
  template <class... Py, class... Names>
  ModuleBinding& forward(Names... names) {
    def_forward<Py...>(cls_, names...);
    return *this;
  }

  // cls.def(...), for other methods.
  template <class... A>
  ModuleBinding& def(A&&... args) {
    cls_.def(std::forward<A>(args)...);
    return *this;
  }

  ModuleClass<Impl>& cls() { return cls_; }

 private:
  // The keywords that rebuild `self`: its Options as a dict.
  static py::dict kwargs_of(const Impl& self) {
    py::dict out;
    Options o = self.options;
    o.fields([&](const char* key, auto& field) {
      out[key] = from_kwargs_value(detail::write_kwarg(field));
    });
    return out;
  }

  ModuleClass<Impl> cls_;
  std::shared_ptr<AttrGetters<Impl>> getters_;
};

// Each translation unit binds one part of the library.
void bind_core(py::module_& m);
void bind_attention(py::module_& m);
void bind_layers(py::module_& m);
void bind_models(py::module_& m);
void bind_tokenizer(py::module_& m);
void bind_model_analysis(py::module_& m);

}  // namespace dual_attention::python
#pragma GCC visibility pop
