#include "dual_attention/dual_attention.h"

namespace dual_attention {

const std::vector<std::string>& ra_type_names() {
  static const std::vector<std::string> names = {"relational_attention", "rca", "disrca"};
  return names;
}

DualAttentionImpl::DualAttentionImpl(const DualAttentionOptions& options_) : options(options_) {
  reset();
}

void DualAttentionImpl::reset() {
  const auto& o = options;
  const char* owner = "DualAttention";
  TORCH_CHECK(o.n_heads_sa() >= 0 && o.n_heads_ra() >= 0, owner,
              ": head counts must be >= 0, got n_heads_sa=", o.n_heads_sa(),
              " and n_heads_ra=", o.n_heads_ra());
  TORCH_CHECK(o.n_heads_sa() > 0 || o.n_heads_ra() > 0, owner,
              ": at least one of n_heads_sa and n_heads_ra must be positive, got both 0");
  TORCH_CHECK(!o.share_attn_params() || o.n_heads_sa() == o.n_heads_ra(), owner,
              ": share_attn_params needs n_heads_sa == n_heads_ra, got ", o.n_heads_sa(), " and ",
              o.n_heads_ra());
  check_one_of(owner, "ra_type", o.ra_type(), ra_type_names());
  use_self_attn = o.n_heads_sa() > 0;
  use_rel_attn = o.n_heads_ra() > 0;
  total_n_heads = o.n_heads_sa() + o.n_heads_ra();

  const std::initializer_list<const char*> reserved = {"d_model", "n_heads", "total_n_heads",
                                                       "dropout"};
  if (use_self_attn) {
    check_no_reserved_kwargs(o.sa_kwargs(), reserved, owner, "sa_kwargs");
    AttentionOptions sa(o.d_model(), o.n_heads_sa(), o.dropout());
    sa.total_n_heads(total_n_heads);
    apply_kwargs(sa, o.sa_kwargs(), "DualAttention sa_kwargs (Attention)");
    self_attention = register_module("self_attention", Attention(sa));
  }
  if (use_rel_attn) {
    check_no_reserved_kwargs(o.ra_kwargs(), reserved, owner, "ra_kwargs");
    if (o.ra_type() == "relational_attention") {
      RelationalAttentionOptions ra(o.d_model(), o.n_heads_ra());
      ra.total_n_heads(total_n_heads).dropout(o.dropout());
      apply_kwargs(ra, o.ra_kwargs(), "DualAttention ra_kwargs (RelationalAttention)");
      relational_attention = register_module("relational_attention", RelationalAttention(ra));
    } else if (o.ra_type() == "rca") {
      RelationalCrossAttentionOptions ra(o.d_model(), o.n_heads_ra(), o.dropout());
      ra.total_n_heads(total_n_heads);
      apply_kwargs(ra, o.ra_kwargs(), "DualAttention ra_kwargs (RelationalCrossAttention)");
      relational_cross_attention =
          register_module("relational_attention", RelationalCrossAttention(ra));
    } else {
      DisentangledRelationalCrossAttentionOptions ra(o.d_model(), o.n_heads_ra(), o.dropout());
      ra.total_n_heads(total_n_heads);
      apply_kwargs(ra, o.ra_kwargs(),
                   "DualAttention ra_kwargs (DisentangledRelationalCrossAttention)");
      disentangled_relational_cross_attention =
          register_module("relational_attention", DisentangledRelationalCrossAttention(ra));
    }
  }
  if (o.share_attn_params()) {
    // One tensor under both names, as the reference's state_dict lists it.
    torch::nn::Linear wq{nullptr}, wk{nullptr};
    if (relational_attention) {
      wq = relational_attention->wq_attn, wk = relational_attention->wk_attn;
    } else if (disentangled_relational_cross_attention) {
      wq = disentangled_relational_cross_attention->wq_attn;
      wk = disentangled_relational_cross_attention->wk_attn;
    } else {
      TORCH_CHECK(false, owner,
                  ": share_attn_params needs a relational module with wq_attn/wk_attn ",
                  "(ra_type 'relational_attention' or 'disrca'), got ra_type '", o.ra_type(), "'");
    }
    TORCH_CHECK(wq->weight.sizes() == self_attention->wq->weight.sizes() &&
                    wk->weight.sizes() == self_attention->wk->weight.sizes(),
                owner, ": share_attn_params needs equal query/key shapes; self-attention wq ",
                self_attention->wq->weight.sizes(), " vs relational wq_attn ", wq->weight.sizes());
    self_attention->wq = self_attention->replace_module("wq", wq);
    self_attention->wk = self_attention->replace_module("wk", wk);
  }
}

void DualAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::DualAttention(d_model=" << options.d_model()
         << ", n_heads_sa=" << options.n_heads_sa() << ", n_heads_ra=" << options.n_heads_ra()
         << ", ra_type=" << options.ra_type()
         << ", share_attn_params=" << options.share_attn_params() << ")";
}

std::tuple<torch::Tensor, torch::Tensor, std::vector<torch::Tensor>> DualAttentionImpl::forward(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& attn_mask,
    bool is_causal, const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
    bool need_weights) {
  torch::Tensor sa_out, sa_scores, ra_out;
  std::vector<torch::Tensor> ra_scores;
  if (use_self_attn) {
    std::tie(sa_out, sa_scores) =
        self_attention->forward(x, x, x, freqs_cos, freqs_sin, attn_mask, is_causal, need_weights);
  }
  if (relational_attention) {
    auto [out, scores, relations] = relational_attention->forward(
        x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal, need_weights);
    ra_out = out;
    if (need_weights) ra_scores = {scores, relations};
  } else if (relational_cross_attention) {
    auto [out, scores] =
        relational_cross_attention->forward(x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal);
    ra_out = out;
    if (need_weights) ra_scores = {scores};
  } else if (disentangled_relational_cross_attention) {
    auto [out, attn_scores, rel_scores] = disentangled_relational_cross_attention->forward(
        x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal);
    ra_out = out;
    if (need_weights) ra_scores = {attn_scores, rel_scores};
  }
  if (use_self_attn && use_rel_attn)
    return {torch::cat({sa_out, ra_out}, -1), sa_scores, ra_scores};
  if (use_self_attn) return {sa_out, sa_scores, ra_scores};
  return {ra_out, torch::Tensor(), ra_scores};
}

torch::Tensor DualAttentionImpl::forward_cached(const torch::Tensor& x,
                                                const torch::Tensor& symbols,
                                                const torch::Tensor& freqs_cos,
                                                const torch::Tensor& freqs_sin,
                                                LayerCache& sa_cache, LayerCache& ra_cache,
                                                const CacheStep& step) {
  std::vector<torch::Tensor> outs;  // sa first, as forward concatenates them
  if (use_self_attn) {
    outs.push_back(self_attention->forward_cached(x, freqs_cos, freqs_sin, sa_cache, step));
  }
  if (relational_attention) {
    outs.push_back(
        relational_attention->forward_cached(x, symbols, freqs_cos, freqs_sin, ra_cache, step));
  } else if (relational_cross_attention) {
    outs.push_back(relational_cross_attention->forward_cached(x, symbols, freqs_cos, freqs_sin,
                                                              ra_cache, step));
  } else if (disentangled_relational_cross_attention) {
    outs.push_back(disentangled_relational_cross_attention->forward_cached(
        x, symbols, freqs_cos, freqs_sin, ra_cache, step));
  }
  return outs.size() == 1 ? outs[0] : torch::cat(outs, -1);  // [b, t, d_model]
}

}  // namespace dual_attention
