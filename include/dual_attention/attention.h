// Multi-head attention with grouped-query heads, RoPE and head budgeting for dual attention
// (reference: dual_attention.attention.Attention).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <tuple>

#include "dual_attention/kv_cache.h"
#include "dual_attention/kwargs.h"

namespace dual_attention {

struct AttentionOptions {
  AttentionOptions(int64_t d_model, int64_t n_heads, double dropout)
      : d_model_(d_model), n_heads_(n_heads), dropout_(dropout) {}

  TORCH_ARG(int64_t, d_model);
  // Query heads (n_kv_heads key/value heads are shared among them).
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(double, dropout);
  // Width of each query/key head; defaults to head_dim.
  TORCH_ARG(std::optional<int64_t>, key_dim) = std::nullopt;
  // 1 is multi-query attention, n_heads (the default) standard multi-head attention.
  TORCH_ARG(std::optional<int64_t>, n_kv_heads) = std::nullopt;
  TORCH_ARG(bool, add_bias_kv) = false;
  TORCH_ARG(bool, add_bias_out) = false;
  // Head budget in dual attention: head_dim = d_model / total_n_heads, so the output width is
  // head_dim * n_heads. Defaults to n_heads.
  TORCH_ARG(std::optional<int64_t>, total_n_heads) = std::nullopt;

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("dropout", dropout_);
    v("key_dim", key_dim_);
    v("n_kv_heads", n_kv_heads_);
    v("add_bias_kv", add_bias_kv_);
    v("add_bias_out", add_bias_out_);
    v("total_n_heads", total_n_heads_);
  }

  // Attention(**kwargs): the constructor takes the required keywords (the first fields() above), of
  // these types; a missing or unknown keyword or a value of the wrong type is an error naming it.
  using required_types = std::tuple<int64_t, int64_t, double>;
  static AttentionOptions from_kwargs(const Kwargs& kwargs,
                                      const std::string& owner = "Attention") {
    return options_from_kwargs<AttentionOptions>(kwargs, owner);
  }
};

class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  AttentionImpl(int64_t d_model, int64_t n_heads, double dropout)
      : AttentionImpl(AttentionOptions(d_model, n_heads, dropout)) {}
  explicit AttentionImpl(const AttentionOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // out = wo(concat_h softmax(q_h k_h^T / sqrt(head_dim) + mask) v_h).
  // query [b, lq, d_model], key/value [b, lk, d_model]; freqs [lq, key_dim / 2] apply RoPE;
  // attn_mask is boolean [lq, lk], True = may attend. Returns (out [b, lq, head_dim * n_heads],
  // scores [b, n_heads, lq, lk] when need_weights, else undefined and the fused SDPA kernel runs).
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& freqs_cos = {}, const torch::Tensor& freqs_sin = {},
      const torch::Tensor& attn_mask = {}, bool is_causal = false, bool need_weights = false);

  // Incremental decoding (self-attention, query = key = value = x): x [b, t, d_model] are the new
  // tokens, at slots [step.start, step.start + t) of `cache` (keys after RoPE and values, at
  // n_kv_heads heads); freqs [t, key_dim / 2] or [b, t, key_dim / 2] are their RoPE angles.
  // Returns [b, t, head_dim * n_heads]: what forward() of the whole sequence gives at those
  // positions. Inference only (no dropout).
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& freqs_cos,
                               const torch::Tensor& freqs_sin, LayerCache& cache,
                               const CacheStep& step);

  AttentionOptions options;
  // Resolved sizes (defaults applied).
  int64_t n_kv_heads = 0, total_n_heads = 0, key_dim = 0, head_dim = 0, n_rep_kv = 0;
  double attn_scale = 0.0;

  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
  torch::nn::Dropout attn_dropout{nullptr}, resid_dropout{nullptr};
};
TORCH_MODULE(Attention);

}  // namespace dual_attention
