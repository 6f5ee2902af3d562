#include "dual_attention/io/state_dict.h"

#include <set>
#include <sstream>

#include "shared_views.h"

namespace dual_attention::io {

namespace {

void collect_state(const torch::nn::Module& module, const std::string& prefix,
                   const std::set<std::string>& skip, NamedTensors& out) {
  for (const auto& p : module.named_parameters(/*recurse=*/false))
    out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/false))
    if (!skip.count(prefix + b.key())) out.emplace_back(prefix + b.key(), b.value());
  for (const auto& child : module.named_children())
    collect_state(*child.value(), prefix + child.key() + ".", skip, out);
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& name : names) s += (s.empty() ? "\"" : ", \"") + name + "\"";
  return s;
}

// load_state_dict, with `context` naming where the state came from in error messages.
LoadStateDictResult load_into(torch::nn::Module& module,
                              const std::map<std::string, torch::Tensor>& state, bool strict,
                              const SkipList& skip, const std::string& context) {
  const NamedTensors targets = named_state(module, skip);
  LoadStateDictResult result;
  std::vector<std::string> problems;
  std::set<std::string> expected;
  std::map<detail::ViewKey, std::string> first_name;  // shared tensor -> its first name given
  for (const auto& [name, target] : targets) {
    expected.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      result.missing_keys.push_back(name);
      continue;
    }
    const torch::Tensor& value = it->second;
    if (!value.defined()) {
      problems.push_back("undefined tensor for " + name + ".");
      continue;
    }
    if (value.sizes() != target.sizes()) {
      std::ostringstream s;
      s << "size mismatch for " << name << ": copying a param with shape " << value.sizes()
        << " from checkpoint, the shape in current model is " << target.sizes() << ".";
      problems.push_back(s.str());
      continue;
    }
    if (target.numel() == 0) continue;
    auto [first, inserted] = first_name.emplace(detail::view_key(target), name);
    if (!inserted) {
      const torch::Tensor& other = state.at(first->second);
      if (!other.is_same(value) &&
          !torch::equal(other.to(value.device(), value.scalar_type()), value))
        problems.push_back("\"" + name + "\" and \"" + first->second +
                           "\" are one shared tensor in the module but have different values.");
    }
  }
  for (const auto& entry : state)
    if (!expected.count(entry.first)) result.unexpected_keys.push_back(entry.first);

  std::string message;
  if (strict && !result.missing_keys.empty())
    message += "\n    Missing key(s) in state_dict: " + quoted_list(result.missing_keys) + ".";
  if (strict && !result.unexpected_keys.empty())
    message +=
        "\n    Unexpected key(s) in state_dict: " + quoted_list(result.unexpected_keys) + ".";
  for (const auto& problem : problems) message += "\n    " + problem;
  TORCH_CHECK(message.empty(), "Error(s) in loading state_dict for ", module.name(), context, ":",
              message);

  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    auto it = state.find(name);
    if (it != state.end()) target.copy_(it->second);
  }
  return result;
}

}  // namespace

NamedTensors named_state(const torch::nn::Module& module, const SkipList& skip) {
  NamedTensors out;
  collect_state(module, "", std::set<std::string>(skip.begin(), skip.end()), out);
  return out;
}

LoadStateDictResult load_state_dict(torch::nn::Module& module,
                                    const std::map<std::string, torch::Tensor>& state, bool strict,
                                    const SkipList& skip) {
  return load_into(module, state, strict, skip, "");
}

void save_module(const torch::nn::Module& module, const std::string& path, const Metadata& metadata,
                 const SkipList& skip) {
  save_safetensors(path, named_state(module, skip), metadata);
}

LoadStateDictResult load_module(torch::nn::Module& module, const std::string& path, bool strict,
                                const SkipList& skip) {
  const auto file = SafetensorsFile::open(path);
  const auto as_view = LoadOptions().zero_copy(true);  // copied into the module right away
  std::map<std::string, torch::Tensor> state;
  std::map<detail::ViewKey, std::string> stored;  // module tensor -> a name the file holds
  for (const auto& name : file.keys()) state.emplace(name, file.get(name, as_view));

  const NamedTensors targets = named_state(module, skip);
  for (const auto& [name, target] : targets)
    if (file.contains(name) && target.numel() > 0) stored.emplace(detail::view_key(target), name);
  for (const auto& [name, target] : targets) {
    if (file.contains(name)) continue;
    if (file.metadata().count(name)) {
      state.emplace(name, file.get(name, as_view));  // raises if the alias's target is missing
    } else if (auto it = stored.find(detail::view_key(target));
               target.numel() > 0 && it != stored.end()) {
      state.emplace(name, state.at(it->second));
    }
  }
  return load_into(module, state, strict, skip, " from '" + path + "'");
}

}  // namespace dual_attention::io
