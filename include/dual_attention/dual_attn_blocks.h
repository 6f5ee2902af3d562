// Encoder and decoder blocks built on dual attention (reference: dual_attention.dual_attn_blocks).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

#include "dual_attention/attention.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/transformer_blocks.h"

namespace dual_attention {

// ---- DualAttnEncoderBlock -------------------------------------------------------------------
// Note the reference's argument order: dff, activation, dropout_rate (EncoderBlock has
// dff, dropout_rate, activation).
struct DualAttnEncoderBlockOptions {
  DualAttnEncoderBlockOptions(int64_t d_model, int64_t n_heads_sa, int64_t n_heads_ra,
                              std::optional<int64_t> dff, std::string activation,
                              double dropout_rate, bool norm_first)
      : d_model_(d_model),
        n_heads_sa_(n_heads_sa),
        n_heads_ra_(n_heads_ra),
        dff_(dff),
        activation_(std::move(activation)),
        dropout_rate_(dropout_rate),
        norm_first_(norm_first) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads_sa);
  TORCH_ARG(int64_t, n_heads_ra);
  // Feed-forward hidden width; None takes FeedForwardBlock's default.
  TORCH_ARG(std::optional<int64_t>, dff);
  TORCH_ARG(std::string, activation);
  TORCH_ARG(double, dropout_rate);
  TORCH_ARG(bool, norm_first);
  TORCH_ARG(std::string, norm_type) = "layernorm";
  TORCH_ARG(Kwargs, sa_kwargs) = nullptr;
  TORCH_ARG(Kwargs, ra_kwargs) = nullptr;
  TORCH_ARG(std::string, ra_type) = "relational_attention";
  TORCH_ARG(bool, share_attn_params) = false;
  // Bias of the feed-forward layers.
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(bool, causal) = false;

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads_sa", n_heads_sa_);
    v("n_heads_ra", n_heads_ra_);
    v("dff", dff_);
    v("activation", activation_);
    v("dropout_rate", dropout_rate_);
    v("norm_first", norm_first_);
    v("norm_type", norm_type_);
    v("sa_kwargs", sa_kwargs_);
    v("ra_kwargs", ra_kwargs_);
    v("ra_type", ra_type_);
    v("share_attn_params", share_attn_params_);
    v("bias", bias_);
    v("causal", causal_);
  }

  // DualAttnEncoderBlock(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types =
      std::tuple<int64_t, int64_t, int64_t, std::optional<int64_t>, std::string, double, bool>;
  static DualAttnEncoderBlockOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "DualAttnEncoderBlock") {
    return options_from_kwargs<DualAttnEncoderBlockOptions>(kwargs, owner);
  }
};

class DualAttnEncoderBlockImpl : public torch::nn::Cloneable<DualAttnEncoderBlockImpl> {
 public:
  explicit DualAttnEncoderBlockImpl(const DualAttnEncoderBlockOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Pre-norm:  x = x + drop(dual_attn(norm1 x, symbols));  x = x + drop(ff(norm2 x)).
  // Post-norm: x = drop(norm1(x + drop(dual_attn(x, symbols))));  x = norm2(x + drop(ff x)).
  // x [b, n, d_model]; symbols as DualAttention takes them; freqs [n, head_dim / 2] apply RoPE.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& symbols,
                        const torch::Tensor& freqs_cos = {}, const torch::Tensor& freqs_sin = {});

  // Incremental decoding: the block's forward for new tokens x [b, t, d_model] at slots
  // [step.start, step.start + t) (see DualAttention::forward_cached).
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& symbols,
                               const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
                               LayerCache& sa_cache, LayerCache& ra_cache, const CacheStep& step);

  DualAttnEncoderBlockOptions options;
  torch::nn::Dropout dropout{nullptr};
  torch::nn::AnyModule norm1, norm2;  // registered as "norm1" / "norm2"
  DualAttention dual_attn{nullptr};
  FeedForwardBlock ff_block{nullptr};
};
TORCH_MODULE(DualAttnEncoderBlock);

// ---- DualAttnDecoderBlock -------------------------------------------------------------------
struct DualAttnDecoderBlockOptions {
  DualAttnDecoderBlockOptions(int64_t d_model, int64_t n_heads_sa, int64_t n_heads_ra,
                              int64_t n_heads_cross, std::optional<int64_t> dff,
                              std::string activation, double dropout_rate, bool norm_first)
      : d_model_(d_model),
        n_heads_sa_(n_heads_sa),
        n_heads_ra_(n_heads_ra),
        n_heads_cross_(n_heads_cross),
        dff_(dff),
        activation_(std::move(activation)),
        dropout_rate_(dropout_rate),
        norm_first_(norm_first) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads_sa);
  TORCH_ARG(int64_t, n_heads_ra);
  TORCH_ARG(int64_t, n_heads_cross);
  TORCH_ARG(std::optional<int64_t>, dff);
  TORCH_ARG(std::string, activation);
  TORCH_ARG(double, dropout_rate);
  TORCH_ARG(bool, norm_first);
  TORCH_ARG(std::string, norm_type) = "layernorm";
  TORCH_ARG(Kwargs, sa_kwargs) = nullptr;
  TORCH_ARG(Kwargs, ra_kwargs) = nullptr;
  // Keywords of the cross-attention (Attention); d_model, n_heads and dropout are set here.
  TORCH_ARG(Kwargs, cross_kwargs) = nullptr;
  TORCH_ARG(std::string, ra_type) = "relational_attention";
  TORCH_ARG(bool, share_attn_params) = false;
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(bool, causal) = true;

 public:
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads_sa", n_heads_sa_);
    v("n_heads_ra", n_heads_ra_);
    v("n_heads_cross", n_heads_cross_);
    v("dff", dff_);
    v("activation", activation_);
    v("dropout_rate", dropout_rate_);
    v("norm_first", norm_first_);
    v("norm_type", norm_type_);
    v("sa_kwargs", sa_kwargs_);
    v("ra_kwargs", ra_kwargs_);
    v("cross_kwargs", cross_kwargs_);
    v("ra_type", ra_type_);
    v("share_attn_params", share_attn_params_);
    v("bias", bias_);
    v("causal", causal_);
  }

  // DualAttnDecoderBlock(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<int64_t, int64_t, int64_t, int64_t, std::optional<int64_t>,
                                    std::string, double, bool>;
  static DualAttnDecoderBlockOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "DualAttnDecoderBlock") {
    return options_from_kwargs<DualAttnDecoderBlockOptions>(kwargs, owner);
  }
};

class DualAttnDecoderBlockImpl : public torch::nn::Cloneable<DualAttnDecoderBlockImpl> {
 public:
  explicit DualAttnDecoderBlockImpl(const DualAttnDecoderBlockOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Pre-norm:  x = x + drop(dual_attn(norm1 x));  x = x + drop(cross_attn(norm2 x, context));
  //            x = x + ff(norm3 x).
  // Post-norm: x = norm1(x + drop(dual_attn x));  x = norm2(x + drop(cross_attn(x, context)));
  //            x = norm3(x + ff x).
  // (No dropout after the feed-forward block, as in the reference.)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context,
                        const torch::Tensor& symbols);

  DualAttnDecoderBlockOptions options;
  torch::nn::Dropout dropout{nullptr};
  torch::nn::AnyModule norm1, norm2, norm3;  // registered as "norm1" / "norm2" / "norm3"
  DualAttention dual_attn{nullptr};
  Attention cross_attn{nullptr};
  FeedForwardBlock ff_block{nullptr};
};
TORCH_MODULE(DualAttnDecoderBlock);

}  // namespace dual_attention
