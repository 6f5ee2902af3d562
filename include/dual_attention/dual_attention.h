// Dual attention: self-attention heads (sensory information) and relational heads side by side,
// their outputs concatenated (reference: dual_attention.dual_attention.DualAttention).
#pragma once

#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

#include "dual_attention/attention.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/relational_attention.h"

namespace dual_attention {

// The relational mechanisms DualAttention accepts as ra_type:
// 'relational_attention', 'rca', 'disrca'.
const std::vector<std::string>& ra_type_names();

struct DualAttentionOptions {
  DualAttentionOptions(int64_t d_model, int64_t n_heads_sa, int64_t n_heads_ra, double dropout)
      : d_model_(d_model), n_heads_sa_(n_heads_sa), n_heads_ra_(n_heads_ra), dropout_(dropout) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads_sa);
  TORCH_ARG(int64_t, n_heads_ra);
  TORCH_ARG(double, dropout);
  // Keywords for the self-attention (Attention) and the relational module; DualAttention sets
  // d_model, n_heads, total_n_heads and dropout itself.
  TORCH_ARG(Kwargs, sa_kwargs) = Kwargs::object();
  TORCH_ARG(Kwargs, ra_kwargs) = Kwargs::object();
  // Self-attention wq/wk become the relational wq_attn/wk_attn (needs n_heads_sa == n_heads_ra).
  TORCH_ARG(bool, share_attn_params) = false;
  TORCH_ARG(std::string, ra_type) = "relational_attention";

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads_sa", n_heads_sa_);
    v("n_heads_ra", n_heads_ra_);
    v("dropout", dropout_);
    v("sa_kwargs", sa_kwargs_);
    v("ra_kwargs", ra_kwargs_);
    v("share_attn_params", share_attn_params_);
    v("ra_type", ra_type_);
  }

  // DualAttention(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<int64_t, int64_t, int64_t, double>;
  static DualAttentionOptions from_kwargs(const Kwargs& kwargs,
                                          const std::string& owner = "DualAttention") {
    return options_from_kwargs<DualAttentionOptions>(kwargs, owner);
  }
};

class DualAttentionImpl : public torch::nn::Cloneable<DualAttentionImpl> {
 public:
  DualAttentionImpl(int64_t d_model, int64_t n_heads_sa, int64_t n_heads_ra, double dropout)
      : DualAttentionImpl(DualAttentionOptions(d_model, n_heads_sa, n_heads_ra, dropout)) {}
  explicit DualAttentionImpl(const DualAttentionOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // x [b, n, d_model]; symbols as the relational module takes them (unused without relational
  // heads). Returns (out [b, n, d_model], sa_scores [b, n_heads_sa, n, n] or undefined, ra_scores).
  // need_weights=true computes the self-attention scores explicitly and returns the relational
  // module's extra outputs in ra_scores: [attn_scores, relations] ('relational_attention'),
  // [scores] ('rca'), [attn_scores, rel_scores] ('disrca'). The reference returns ra_scores even
  // without need_weights; here ra_scores is empty then, which lets the relational module skip them.
  std::tuple<torch::Tensor, torch::Tensor, std::vector<torch::Tensor>> forward(
      const torch::Tensor& x, const torch::Tensor& symbols = {},
      const torch::Tensor& attn_mask = {}, bool is_causal = false,
      const torch::Tensor& freqs_cos = {}, const torch::Tensor& freqs_sin = {},
      bool need_weights = false);

  // Incremental decoding: x [b, t, d_model] the new tokens at slots [step.start, step.start + t);
  // symbols and freqs as the relational module's forward_cached takes them. Each half keeps its own
  // cache. Returns [b, t, d_model]. Inference only.
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& symbols,
                               const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
                               LayerCache& sa_cache, LayerCache& ra_cache, const CacheStep& step);

  DualAttentionOptions options;
  bool use_self_attn = false, use_rel_attn = false;
  int64_t total_n_heads = 0;

  // Registered as `self_attention` and `relational_attention`; exactly one of the three relational
  // holders is non-null when n_heads_ra > 0, per ra_type.
  Attention self_attention{nullptr};
  RelationalAttention relational_attention{nullptr};
  RelationalCrossAttention relational_cross_attention{nullptr};
  DisentangledRelationalCrossAttention disentangled_relational_cross_attention{nullptr};
};
TORCH_MODULE(DualAttention);

}  // namespace dual_attention
