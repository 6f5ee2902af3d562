// The attention modules' head bookkeeping, written once: Attention, RelationalAttention,
// RelationalCrossAttention and DisentangledRelationalCrossAttention each resolve their heads from
// the same options and keep the detail::HeadLayout (attention_utils.h) in public members of the
// same names.
#pragma once

#include "dual_attention/attention_utils.h"

namespace dual_attention::detail {

// resolve_heads on module.options (d_model, n_heads, n_kv_heads, total_n_heads, dropout), stored
// in module.n_kv_heads, total_n_heads, head_dim and n_rep_kv.
template <class Impl>
void resolve_module_heads(Impl& module, const char* owner) {
  const auto& o = module.options;
  const HeadLayout heads = resolve_heads(owner, o.d_model(), o.n_heads(), o.n_kv_heads(),
                                         o.total_n_heads(), o.dropout());
  module.n_kv_heads = heads.n_kv_heads;
  module.total_n_heads = heads.total_n_heads;
  module.head_dim = heads.head_dim;
  module.n_rep_kv = heads.n_rep_kv;
}

}  // namespace dual_attention::detail
