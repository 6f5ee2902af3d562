// Keyword-argument dictionaries, as the reference passes them (sa_kwargs, ra_kwargs, ...) and as
// config.json stores them. A Kwargs is a JSON object, so C++ code writes
//   DualAttentionOptions(64, 2, 2, 0.0).ra_kwargs({{"n_relations", 8}, {"symmetric_rels", true}})
// and a config file, a Python dict and C++ code all fill Options through one path: apply_kwargs().
//
// Each Options struct lists its keywords once, in a `fields(visitor)` member that calls
// `visitor("name", name())` for every keyword; apply_kwargs and to_kwargs are written once, on it.
#pragma once

#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace dual_attention {

using Kwargs = nlohmann::json;

namespace detail {

inline std::string json_type_name(const Kwargs& v) {
  if (v.is_null()) return "None";
  if (v.is_boolean()) return "bool";
  if (v.is_number_integer()) return "int";
  if (v.is_number_float()) return "float";
  if (v.is_string()) return "str";
  if (v.is_array()) return "list";
  return "dict";
}

[[noreturn]] inline void bad_kwarg(const std::string& owner, const std::string& key,
                                   const Kwargs& v, const char* expected) {
  TORCH_CHECK(false, owner, ": keyword argument '", key, "' got ", v.dump(), " (",
              json_type_name(v), "), expected ", expected);
}

inline void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                       int64_t& out) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
    bad_kwarg(owner, key, v, "an int (64-bit)");
  out = v.get<int64_t>();
}
inline void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                       double& out) {
  if (!v.is_number() || v.is_boolean()) bad_kwarg(owner, key, v, "a float");
  out = v.get<double>();
}
// A bool keyword takes true/false, and also the ints 0 and 1: Python code passes them for flags
// (`norm_first=1`), the reference accepts them and its mixin writes them to config.json as given.
// Any other value (2, 1.0, "yes") is an error.
inline bool is_bool_like(const Kwargs& v) {
  return v.is_boolean() ||
         (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1));
}
inline void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                       bool& out) {
  if (!is_bool_like(v)) bad_kwarg(owner, key, v, "a bool (true, false, 0 or 1)");
  out = v.is_boolean() ? v.get<bool>() : v.get<int64_t>() == 1;
}
inline void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                       std::string& out) {
  if (!v.is_string()) bad_kwarg(owner, key, v, "a str");
  out = v.get<std::string>();
}
inline void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                       std::vector<int64_t>& out) {
  if (!v.is_array()) bad_kwarg(owner, key, v, "a list of ints");
  out.clear();
  for (const auto& e : v) {
    if (!e.is_number_integer() ||
        (e.is_number_unsigned() && e.get<uint64_t>() > uint64_t(INT64_MAX)))
      bad_kwarg(owner, key, v, "a list of ints");
    out.push_back(e.get<int64_t>());
  }
}
inline void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                       Kwargs& out) {
  if (!v.is_null() && !v.is_object()) bad_kwarg(owner, key, v, "a dict or None");
  out = v.is_null() ? Kwargs::object() : v;
}
template <class T>
void read_kwarg(const std::string& owner, const std::string& key, const Kwargs& v,
                std::optional<T>& out) {
  if (v.is_null()) {
    out.reset();
    return;
  }
  T value{};
  read_kwarg(owner, key, v, value);
  out = value;
}

template <class T>
Kwargs write_kwarg(const T& value) {
  return Kwargs(value);
}
template <class T>
Kwargs write_kwarg(const std::optional<T>& value) {
  return value ? Kwargs(*value) : Kwargs(nullptr);
}

}  // namespace detail

// Sets each keyword of `kwargs` on `options`. An unknown keyword or a value of the wrong type is an
// error naming `owner`, the keyword, the value and what was expected (the valid keywords, for an
// unknown one). `kwargs` may be None (null), meaning no keywords.
template <class Options>
void apply_kwargs(Options& options, const Kwargs& kwargs, const std::string& owner) {
  if (kwargs.is_null()) return;
  TORCH_CHECK(kwargs.is_object(), owner, ": keyword arguments must be a dict, got ", kwargs.dump());
  for (const auto& item : kwargs.items()) {
    bool found = false;
    options.fields([&](const char* name, auto& field) {
      if (!found && item.key() == name) {
        detail::read_kwarg(owner, item.key(), item.value(), field);
        found = true;
      }
    });
    if (!found) {
      std::ostringstream valid;
      options.fields(
          [&](const char* name, auto&) { valid << (valid.tellp() ? ", " : "") << name; });
      TORCH_CHECK(false, owner, ": unexpected keyword argument '", item.key(),
                  "'; valid keywords are: ", valid.str());
    }
  }
}

// Every keyword of `options` with its current value, as config.json stores it.
template <class Options>
Kwargs to_kwargs(Options options) {
  Kwargs out = Kwargs::object();
  options.fields([&](const char* name, auto& field) { out[name] = detail::write_kwarg(field); });
  return out;
}

// Builds an Options struct whose constructor takes the keywords `required`, in that order and of
// types Args, from a kwargs dict; the other keywords are then applied. A missing required keyword
// is an error naming it, as Python's TypeError does.
//   auto o = options_from_kwargs<AttentionOptions, int64_t, int64_t, double>(
//       kwargs, "Attention", {"d_model", "n_heads", "dropout"});
template <class Options, class... Args>
Options options_from_kwargs(const Kwargs& kwargs, const std::string& owner,
                            const std::array<const char*, sizeof...(Args)>& required) {
  TORCH_CHECK(kwargs.is_null() || kwargs.is_object(), owner,
              ": keyword arguments must be a dict, got ", kwargs.dump());
  std::tuple<Args...> values;
  std::size_t i = 0;
  auto read_required = [&](auto& value) {
    const char* key = required[i++];
    TORCH_CHECK(kwargs.is_object() && kwargs.contains(key), owner, ": missing required argument '",
                key, "'");
    detail::read_kwarg(owner, key, kwargs[key], value);
  };
  std::apply([&](auto&... value) { (read_required(value), ...); }, values);
  Options options = std::make_from_tuple<Options>(values);
  apply_kwargs(options, kwargs, owner);
  return options;
}

// Keywords a composite module sets itself (e.g. DualAttention passes d_model and n_heads to its
// Attention): the reference raises "got multiple values for keyword argument" when a kwargs dict
// repeats one.
inline void check_no_reserved_kwargs(const Kwargs& kwargs,
                                     std::initializer_list<const char*> reserved,
                                     const std::string& owner, const std::string& dict_name) {
  if (!kwargs.is_object()) return;
  for (const char* key : reserved) {
    TORCH_CHECK(!kwargs.contains(key), owner, ": ", dict_name, " must not contain '", key,
                "' (got ", kwargs[key].dump(), "); ", owner, " sets it itself");
  }
}

}  // namespace dual_attention
