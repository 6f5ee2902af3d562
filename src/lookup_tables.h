// What the lookup tables by name share (activations in model_utils.cpp, norms in
// transformer_blocks.cpp, symbol retrievers in symbol_retrieval.cpp): the list of their names,
// which the public xxx_names() return and the errors for an unknown name quote.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace dual_attention::detail {

// The name of every entry of the table, in table order; name_of is the entries' name member (or a
// function of an entry).
template <class Table, class NameOf>
std::vector<std::string> names_in(const Table& table, NameOf name_of) {
  std::vector<std::string> names;
  for (const auto& entry : table) names.emplace_back(std::invoke(name_of, entry));
  return names;
}

}  // namespace dual_attention::detail
