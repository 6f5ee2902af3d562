// What the attention layers keep between the steps of incremental decoding (a KV cache), and what a
// step tells them. Layers read and write it in their forward_cached; the language models own one
// per generation (language_models.h: LMCache) and generation.h drives them.
#pragma once

#include <torch/torch.h>

namespace dual_attention {

// One attention module's cache. Each tensor is preallocated for the whole run as
// [batch, capacity, heads, dim] (the layout the projections produce), and slots [0, length) hold
// the keys of the tokens seen so far. Which fields a module uses:
//   Attention:                k (keys after RoPE) [b, T, n_kv_heads, key_dim],
//                             v [b, T, n_kv_heads, head_dim]
//   RelationalAttention:      k (attention keys after RoPE), k_rel [b, T, n_relations,
//                             rel_proj_dim], sv (W_s s_j) [b, T, n_kv_heads, head_dim]; with
//                             relative positional symbols sv_table = W_s applied to the
//                             (2 max_rel_pos + 1)-row symbol table, [2m + 1, n_kv_heads, head_dim]
//   RelationalCrossAttention: k, sv (sv_table with relative symbols)
//   DisentangledRelationalCrossAttention: k, k_rel [b, T, n_kv_heads, head_dim], sv (sv_table)
struct LayerCache {
  torch::Tensor k, v, k_rel, sv, sv_table;
};

// The step a cached forward computes: the new tokens occupy slots [start, start + t) of caches of
// `capacity` slots.
struct CacheStep {
  int64_t start = 0;
  int64_t capacity = 0;
  // Boolean [b, 1, t, start + t], True = query i may attend to key j; undefined when every new
  // query may attend to every key (one new token per row, no padding) or when `causal` says it.
  torch::Tensor mask;
  // The new tokens fill an empty cache and attend causally among themselves (a prefill without
  // padding): layers may take their fused / blockwise causal paths.
  bool causal = false;
};

namespace detail {

// Writes `rows` ([b, t, ...]) into `storage` at slots [step.start, step.start + t), allocating
// storage as [b, step.capacity, ...] on first use, and returns the filled slots [b, start + t, ...]
// (a view). Errors if the cache is too small or its batch / trailing sizes differ.
inline torch::Tensor cache_append(torch::Tensor& storage, const torch::Tensor& rows,
                                  const CacheStep& step) {
  const int64_t t = rows.size(1), end = step.start + t;
  if (!storage.defined()) {
    auto shape = rows.sizes().vec();
    shape[1] = step.capacity;
    storage = torch::empty(shape, rows.options());
  }
  TORCH_CHECK(end <= storage.size(1), "KV cache: slots [", step.start, ", ", end,
              ") do not fit a cache of ", storage.size(1), " slots");
  TORCH_CHECK(storage.dim() == rows.dim() && storage.size(0) == rows.size(0) &&
                  storage.sizes().slice(2) == rows.sizes().slice(2),
              "KV cache: rows of shape ", rows.sizes(), " do not fit a cache of shape ",
              storage.sizes());
  storage.slice(1, step.start, end).copy_(rows);
  return storage.slice(1, 0, end);
}

}  // namespace detail
}  // namespace dual_attention
