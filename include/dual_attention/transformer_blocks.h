// Standard Transformer blocks: feed-forward, RMSNorm, norms by name, encoder and decoder blocks
// (reference: dual_attention.transformer_blocks).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dual_attention/attention.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/model_utils.h"

namespace dual_attention {

// ---- FeedForwardBlock ----------------------------------------------------------------------

struct FeedForwardBlockOptions {
  /* implicit */ FeedForwardBlockOptions(int64_t embed_dim) : embed_dim_(embed_dim) {}

  TORCH_ARG(int64_t, embed_dim);
  // Hidden width; defaults to int(2/3 * 4 * embed_dim) for 'swiglu', else 4 * embed_dim.
  TORCH_ARG(std::optional<int64_t>, dff) = std::nullopt;
  // A name of get_activation_function, or 'swiglu' (gated: adds linear3).
  TORCH_ARG(std::string, activation) = "relu";
  TORCH_ARG(bool, use_bias) = false;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("embed_dim", embed_dim_);
    v("dff", dff_);
    v("activation", activation_);
    v("use_bias", use_bias_);
  }

  // FeedForwardBlock(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<int64_t>;
  static FeedForwardBlockOptions from_kwargs(const Kwargs& kwargs,
                                             const std::string& owner = "FeedForwardBlock") {
    return options_from_kwargs<FeedForwardBlockOptions>(kwargs, owner);
  }
};

class FeedForwardBlockImpl : public torch::nn::Cloneable<FeedForwardBlockImpl> {
 public:
  explicit FeedForwardBlockImpl(const FeedForwardBlockOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // linear2(act(linear1 x)), or for 'swiglu' linear2(silu(linear1 x) * linear3 x).
  // x [..., embed_dim] -> [..., embed_dim].
  torch::Tensor forward(const torch::Tensor& x);

  FeedForwardBlockOptions options;
  int64_t dff = 0;  // resolved hidden width
  torch::nn::Linear linear1{nullptr}, linear2{nullptr};
  torch::nn::Linear linear3{nullptr};  // 'swiglu' only
  Activation activation;               // unset for 'swiglu'
};
TORCH_MODULE(FeedForwardBlock);

// ---- RMSNorm -------------------------------------------------------------------------------

struct RMSNormOptions {
  /* implicit */ RMSNormOptions(int64_t dim) : dim_(dim) {}

  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, eps) = 1e-5;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("dim", dim_);
    v("eps", eps_);
  }

  // RMSNorm(**kwargs): the constructor takes the required keywords (the first fields() above), of
  // these types; a missing or unknown keyword or a value of the wrong type is an error naming it.
  using required_types = std::tuple<int64_t>;
  static RMSNormOptions from_kwargs(const Kwargs& kwargs, const std::string& owner = "RMSNorm") {
    return options_from_kwargs<RMSNormOptions>(kwargs, owner);
  }
};

class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  explicit RMSNormImpl(const RMSNormOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // (x / sqrt(mean(x^2, -1) + eps)).to(x.dtype) * weight, the normalisation computed in float32.
  // Float64 inputs are normalised in float64 (the reference downcasts them to float32).
  torch::Tensor forward(const torch::Tensor& x);

  RMSNormOptions options;
  torch::Tensor weight;  // [dim], ones
};
TORCH_MODULE(RMSNorm);

// ---- norms by name -------------------------------------------------------------------------

// The one table of norm names: 'layernorm', 'rmsnorm', 'none'.
const std::vector<std::string>& norm_names();

// 'layernorm': torch LayerNorm (eps 1e-5, weight and bias); 'rmsnorm': RMSNorm (weight);
// 'none': Identity (no parameters). An unknown name is an error listing the valid ones.
// Every norm maps [..., d_model] -> [..., d_model].
torch::nn::AnyModule create_norm(int64_t d_model, const std::string& norm_type);

namespace detail {

// What the encoder and decoder blocks (EncoderBlock, DecoderBlock and their dual-attention twins in
// dual_attn_blocks.h) build and compute alike.

// create_norm(d_model, norm_type), registered in `block` under `name` (so its parameters are
// `name.weight`, ...).
torch::nn::AnyModule register_norm(torch::nn::Module& block, const std::string& name,
                                   int64_t d_model, const std::string& norm_type);

// The blocks' feed-forward layer: FeedForwardBlock(d_model) with their dff, activation and bias.
FeedForwardBlock block_feed_forward(int64_t d_model, std::optional<int64_t> dff,
                                    const std::string& activation, bool bias);

using Sublayer = std::function<torch::Tensor(const torch::Tensor&)>;

// An encoder block's residual wiring around its attention and feed-forward sublayers:
// pre-norm:  x = x + attend(norm1 x);  x = x + drop(ff(norm2 x)).
// post-norm: x = drop(norm1(x + attend x));  x = norm2(x + drop(ff x)).
torch::Tensor encoder_residuals(const torch::Tensor& x, bool norm_first, const Sublayer& attend,
                                const Sublayer& feed_forward, torch::nn::AnyModule& norm1,
                                torch::nn::AnyModule& norm2, torch::nn::Dropout& dropout);

// A decoder block's: pre-norm:  x = x + attend(norm1 x);  x = x + cross_attend(norm2 x);
//                                x = x + ff(norm3 x).
//                    post-norm: x = norm1(x + attend x);  x = norm2(x + cross_attend x);
//                                x = norm3(x + ff x).
torch::Tensor decoder_residuals(const torch::Tensor& x, bool norm_first, const Sublayer& attend,
                                const Sublayer& cross_attend, const Sublayer& feed_forward,
                                torch::nn::AnyModule& norm1, torch::nn::AnyModule& norm2,
                                torch::nn::AnyModule& norm3);

}  // namespace detail

// ---- EncoderBlock --------------------------------------------------------------------------

struct EncoderBlockOptions {
  EncoderBlockOptions(int64_t d_model, int64_t n_heads, std::optional<int64_t> dff,
                      double dropout_rate, std::string activation, bool norm_first)
      : d_model_(d_model),
        n_heads_(n_heads),
        dff_(dff),
        dropout_rate_(dropout_rate),
        activation_(std::move(activation)),
        norm_first_(norm_first) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads);
  // Feed-forward hidden width; None takes FeedForwardBlock's default.
  TORCH_ARG(std::optional<int64_t>, dff);
  TORCH_ARG(double, dropout_rate);
  // Feed-forward activation (see FeedForwardBlockOptions::activation).
  TORCH_ARG(std::string, activation);
  // Pre-norm (true) or post-norm (false).
  TORCH_ARG(bool, norm_first);
  TORCH_ARG(std::string, norm_type) = "layernorm";
  // Bias of the attention output projection and of the feed-forward layers.
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(bool, causal) = false;
  // Extra Attention keywords over the defaults {n_kv_heads: None, add_bias_kv: False}; may not set
  // d_model, n_heads, dropout or add_bias_out.
  TORCH_ARG(Kwargs, attn_kwargs) = nullptr;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("dff", dff_);
    v("dropout_rate", dropout_rate_);
    v("activation", activation_);
    v("norm_first", norm_first_);
    v("norm_type", norm_type_);
    v("bias", bias_);
    v("causal", causal_);
    v("attn_kwargs", attn_kwargs_);
  }

  // EncoderBlock(**kwargs): the constructor takes the required keywords (the first fields() above),
  // of these types; a missing or unknown keyword or a value of the wrong type is an error naming
  // it.
  using required_types =
      std::tuple<int64_t, int64_t, std::optional<int64_t>, double, std::string, bool>;
  static EncoderBlockOptions from_kwargs(const Kwargs& kwargs,
                                         const std::string& owner = "EncoderBlock") {
    return options_from_kwargs<EncoderBlockOptions>(kwargs, owner);
  }
};

class EncoderBlockImpl : public torch::nn::Cloneable<EncoderBlockImpl> {
 public:
  explicit EncoderBlockImpl(const EncoderBlockOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Pre-norm:  x = x + drop(attn(norm1 x));  x = x + drop(ff(norm2 x)).
  // Post-norm: x = drop(norm1(x + drop(attn x)));  x = norm2(x + drop(ff x)).
  // x [b, n, d_model]; freqs_cos/freqs_sin [n, head_dim / 2] apply RoPE; need_weights selects the
  // explicit attention path (the weights themselves are not returned, as in the reference).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& freqs_cos = {},
                        const torch::Tensor& freqs_sin = {}, bool need_weights = false);

  // Incremental decoding: the block's forward for new tokens x [b, t, d_model] at slots
  // [step.start, step.start + t) of the self-attention's `cache` (see Attention::forward_cached).
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& freqs_cos,
                               const torch::Tensor& freqs_sin, LayerCache& cache,
                               const CacheStep& step);

  EncoderBlockOptions options;
  torch::nn::Dropout dropout{nullptr};
  torch::nn::AnyModule norm1, norm2;  // registered as "norm1" / "norm2"
  Attention self_attn{nullptr};
  FeedForwardBlock ff_block{nullptr};
};
TORCH_MODULE(EncoderBlock);

// ---- DecoderBlock --------------------------------------------------------------------------

struct DecoderBlockOptions {
  DecoderBlockOptions(int64_t d_model, int64_t n_heads, int64_t n_heads_cross,
                      std::optional<int64_t> dff, double dropout_rate, std::string activation,
                      bool norm_first)
      : d_model_(d_model),
        n_heads_(n_heads),
        n_heads_cross_(n_heads_cross),
        dff_(dff),
        dropout_rate_(dropout_rate),
        activation_(std::move(activation)),
        norm_first_(norm_first) {}

  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_heads);
  // Stored but unused: the reference builds cross_attn with n_heads, and so do we, so that its
  // checkpoints load and compute the same.
  TORCH_ARG(int64_t, n_heads_cross);
  TORCH_ARG(std::optional<int64_t>, dff);
  TORCH_ARG(double, dropout_rate);
  TORCH_ARG(std::string, activation);
  TORCH_ARG(bool, norm_first);
  TORCH_ARG(std::string, norm_type) = "layernorm";
  TORCH_ARG(bool, bias) = true;
  // Causal self-attention (cross-attention is never masked).
  TORCH_ARG(bool, causal) = false;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("n_heads", n_heads_);
    v("n_heads_cross", n_heads_cross_);
    v("dff", dff_);
    v("dropout_rate", dropout_rate_);
    v("activation", activation_);
    v("norm_first", norm_first_);
    v("norm_type", norm_type_);
    v("bias", bias_);
    v("causal", causal_);
  }

  // DecoderBlock(**kwargs): the constructor takes the required keywords (the first fields() above),
  // of these types; a missing or unknown keyword or a value of the wrong type is an error naming
  // it.
  using required_types =
      std::tuple<int64_t, int64_t, int64_t, std::optional<int64_t>, double, std::string, bool>;
  static DecoderBlockOptions from_kwargs(const Kwargs& kwargs,
                                         const std::string& owner = "DecoderBlock") {
    return options_from_kwargs<DecoderBlockOptions>(kwargs, owner);
  }
};

class DecoderBlockImpl : public torch::nn::Cloneable<DecoderBlockImpl> {
 public:
  explicit DecoderBlockImpl(const DecoderBlockOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Pre-norm:  x = x + drop(self_attn(norm1 x)); x = x + drop(cross_attn(norm2 x, context));
  //            x = x + ff(norm3 x).
  // Post-norm: x = norm1(x + drop(self_attn x)); x = norm2(x + drop(cross_attn(x, context)));
  //            x = norm3(x + ff x).
  // (No dropout after the feed-forward block, as in the reference.)
  // x [b, n, d_model], context [b, m, d_model] -> [b, n, d_model].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

  DecoderBlockOptions options;
  torch::nn::Dropout dropout{nullptr};
  torch::nn::AnyModule norm1, norm2, norm3;  // registered as "norm1" / "norm2" / "norm3"
  Attention self_attn{nullptr}, cross_attn{nullptr};
  FeedForwardBlock ff_block{nullptr};
};
TORCH_MODULE(DecoderBlock);

}  // namespace dual_attention
