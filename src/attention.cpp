#include "dual_attention/attention.h"

#include "dual_attention/attention_utils.h"
#include "head_layout.h"

namespace dual_attention {

AttentionImpl::AttentionImpl(const AttentionOptions& options_) : options(options_) { reset(); }

void AttentionImpl::reset() {
  const auto& o = options;
  const char* owner = "Attention";
  detail::resolve_module_heads(*this, owner);
  key_dim = o.key_dim().value_or(head_dim);
  TORCH_CHECK(key_dim > 0, owner, ": key_dim must be positive, got ", key_dim);
  attn_scale =
      1.0 / std::sqrt(static_cast<double>(head_dim));  // head_dim even when key_dim differs

  using detail::linear;
  const int64_t d = o.d_model(), out_dim = o.n_heads() * head_dim;
  wq = register_module("wq", linear(d, o.n_heads() * key_dim, false));
  wk = register_module("wk", linear(d, n_kv_heads * key_dim, o.add_bias_kv()));
  wv = register_module("wv", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wo = register_module("wo", linear(out_dim, out_dim, o.add_bias_out()));
  attn_dropout = register_module("attn_dropout", torch::nn::Dropout(o.dropout()));
  resid_dropout = register_module("resid_dropout", torch::nn::Dropout(o.dropout()));
}

void AttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::Attention(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", n_kv_heads=" << n_kv_heads
         << ", head_dim=" << head_dim << ", key_dim=" << key_dim
         << ", dropout=" << options.dropout() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> AttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin, const torch::Tensor& attn_mask,
    bool is_causal, bool need_weights) {
  const char* owner = "Attention";
  const int64_t d = options.d_model(), h = options.n_heads();
  detail::check_sequence_input(query, d, owner, "query");
  detail::check_sequence_input(key, d, owner, "key");
  detail::check_sequence_input(value, d, owner, "value");
  const int64_t b = query.size(0), lq = query.size(1), lk = key.size(1);
  TORCH_CHECK(key.size(0) == b && value.size(0) == b, owner,
              ": query, key and value must have the same batch size, got ", b, ", ", key.size(0),
              " and ", value.size(0));
  TORCH_CHECK(value.size(1) == lk, owner, ": key and value must have the same length, got ", lk,
              " and ", value.size(1));
  const bool rope = detail::check_rope_inputs(freqs_cos, freqs_sin, lq, key_dim, owner);
  TORCH_CHECK(!rope || lq == lk, owner, ": RoPE needs equal query and key lengths, got ", lq,
              " and ", lk);
  // SDPA takes the causal flag itself: the [lq, lk] mask is built only when the scores are.
  auto mask = need_weights || attn_mask.defined()
                  ? detail::resolve_attn_mask(attn_mask, is_causal, lq, lk, query.device(), owner)
                  : torch::Tensor();

  auto q = wq(query).view({b, lq, h, key_dim});
  auto k = wk(key).view({b, lk, n_kv_heads, key_dim});
  auto v = wv(value).view({b, lk, n_kv_heads, head_dim});
  if (rope) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  k = repeat_kv(k, n_rep_kv).transpose(1, 2);  // [b, h, lk, key_dim]
  v = repeat_kv(v, n_rep_kv).transpose(1, 2);  // [b, h, lk, head_dim]
  q = q.transpose(1, 2);                       // [b, h, lq, key_dim]

  torch::Tensor out, scores;
  if (!need_weights) {
    const double p = is_training() ? options.dropout() : 0.0;
    // The causal flag (not an explicit mask) lets SDPA pick its flash kernels.
    const bool causal_flag = is_causal && !attn_mask.defined();
    out = torch::scaled_dot_product_attention(
        q, k, v, causal_flag || !mask.defined() ? std::nullopt : std::optional(mask), p,
        causal_flag, attn_scale);
  } else {
    scores = torch::matmul(q, k.transpose(2, 3)) * attn_scale;  // [b, h, lq, lk]
    scores = torch::softmax(detail::apply_additive_mask(scores, mask), -1);
    scores = attn_dropout(scores);
    out = torch::matmul(scores, v);  // [b, h, lq, head_dim]
  }
  out = out.transpose(1, 2).contiguous().view({b, lq, h * head_dim});
  return {resid_dropout(wo(out)), scores};
}

torch::Tensor AttentionImpl::forward_cached(const torch::Tensor& x, const torch::Tensor& freqs_cos,
                                            const torch::Tensor& freqs_sin, LayerCache& cache,
                                            const CacheStep& step) {
  detail::check_sequence_input(x, options.d_model(), "Attention", "x");
  const int64_t b = x.size(0), t = x.size(1), h = options.n_heads();
  auto q = wq(x).view({b, t, h, key_dim});
  auto k = wk(x).view({b, t, n_kv_heads, key_dim});
  auto v = wv(x).view({b, t, n_kv_heads, head_dim});
  if (freqs_cos.defined()) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  k = detail::cache_append(cache.k, k, step);  // [b, T, n_kv_heads, key_dim]
  v = detail::cache_append(cache.v, v, step);  // [b, T, n_kv_heads, head_dim]
  auto mask = step.mask.defined() ? std::optional(step.mask) : std::nullopt;
  auto out = torch::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2), mask, 0.0, step.causal,
                                                 attn_scale, /*enable_gqa=*/n_rep_kv > 1);
  out = out.transpose(1, 2).reshape({b, t, h * head_dim});  // [b, t, h * head_dim]
  return wo(out);
}

}  // namespace dual_attention
