#include "dual_attention/dual_attn_blocks.h"

#include "dual_attention/attention_utils.h"

namespace dual_attention {
namespace {

// What both blocks build first, in the reference's order: dropout, norm1, dual_attn, norm2.
template <class Block>
void register_dual_attention(Block& block, const char* owner) {
  const auto& o = block.options;
  TORCH_CHECK(o.dropout_rate() >= 0.0 && o.dropout_rate() <= 1.0, owner,
              ": dropout_rate must be in [0, 1], got ", o.dropout_rate());
  block.dropout = block.register_module("dropout", torch::nn::Dropout(o.dropout_rate()));
  block.norm1 = detail::register_norm(block, "norm1", o.d_model(), o.norm_type());
  block.dual_attn = block.register_module(
      "dual_attn",
      DualAttention(
          DualAttentionOptions(o.d_model(), o.n_heads_sa(), o.n_heads_ra(), o.dropout_rate())
              .sa_kwargs(o.sa_kwargs().is_null() ? Kwargs::object() : o.sa_kwargs())
              .ra_kwargs(o.ra_kwargs().is_null() ? Kwargs::object() : o.ra_kwargs())
              .ra_type(o.ra_type())
              .share_attn_params(o.share_attn_params())));
  block.norm2 = detail::register_norm(block, "norm2", o.d_model(), o.norm_type());
}

}  // namespace

// ---- DualAttnEncoderBlock -------------------------------------------------------------------

DualAttnEncoderBlockImpl::DualAttnEncoderBlockImpl(const DualAttnEncoderBlockOptions& options_)
    : options(options_) {
  reset();
}

void DualAttnEncoderBlockImpl::reset() {
  const auto& o = options;
  register_dual_attention(*this, "DualAttnEncoderBlock");
  ff_block = register_module(
      "ff_block", detail::block_feed_forward(o.d_model(), o.dff(), o.activation(), o.bias()));
}

void DualAttnEncoderBlockImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::DualAttnEncoderBlock(d_model=" << options.d_model()
         << ", n_heads_sa=" << options.n_heads_sa() << ", n_heads_ra=" << options.n_heads_ra()
         << ", norm_first=" << options.norm_first() << ", norm_type=" << options.norm_type()
         << ", causal=" << options.causal() << ")";
}

torch::Tensor DualAttnEncoderBlockImpl::forward(const torch::Tensor& x,
                                                const torch::Tensor& symbols,
                                                const torch::Tensor& freqs_cos,
                                                const torch::Tensor& freqs_sin) {
  auto attend = [&](const torch::Tensor& h) {
    auto out = std::get<0>(dual_attn->forward(h, symbols, {}, options.causal(), freqs_cos,
                                              freqs_sin, /*need_weights=*/false));
    return dropout(out);
  };
  return detail::encoder_residuals(x, options.norm_first(), attend, ff_block, norm1, norm2,
                                   dropout);
}

torch::Tensor DualAttnEncoderBlockImpl::forward_cached(const torch::Tensor& x,
                                                       const torch::Tensor& symbols,
                                                       const torch::Tensor& freqs_cos,
                                                       const torch::Tensor& freqs_sin,
                                                       LayerCache& sa_cache, LayerCache& ra_cache,
                                                       const CacheStep& step) {
  detail::check_sequence_input(x, options.d_model(), "DualAttnEncoderBlock", "x");
  TORCH_CHECK(options.causal(), "DualAttnEncoderBlock: forward_cached needs a causal block");
  auto attend = [&](const torch::Tensor& h) {
    return dropout(
        dual_attn->forward_cached(h, symbols, freqs_cos, freqs_sin, sa_cache, ra_cache, step));
  };
  return detail::encoder_residuals(x, options.norm_first(), attend, ff_block, norm1, norm2,
                                   dropout);
}

// ---- DualAttnDecoderBlock -------------------------------------------------------------------

DualAttnDecoderBlockImpl::DualAttnDecoderBlockImpl(const DualAttnDecoderBlockOptions& options_)
    : options(options_) {
  reset();
}

void DualAttnDecoderBlockImpl::reset() {
  const auto& o = options;
  register_dual_attention(*this, "DualAttnDecoderBlock");
  check_no_reserved_kwargs(o.cross_kwargs(), {"d_model", "n_heads", "dropout"},
                           "DualAttnDecoderBlock", "cross_kwargs");
  AttentionOptions cross(o.d_model(), o.n_heads_cross(), o.dropout_rate());
  apply_kwargs(cross, o.cross_kwargs(), "DualAttnDecoderBlock cross_kwargs (Attention)");
  cross_attn = register_module("cross_attn", Attention(cross));
  norm3 = detail::register_norm(*this, "norm3", o.d_model(), o.norm_type());
  ff_block = register_module(
      "ff_block", detail::block_feed_forward(o.d_model(), o.dff(), o.activation(), o.bias()));
}

void DualAttnDecoderBlockImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::DualAttnDecoderBlock(d_model=" << options.d_model()
         << ", n_heads_sa=" << options.n_heads_sa() << ", n_heads_ra=" << options.n_heads_ra()
         << ", n_heads_cross=" << options.n_heads_cross() << ", norm_first=" << options.norm_first()
         << ", norm_type=" << options.norm_type() << ", causal=" << options.causal() << ")";
}

torch::Tensor DualAttnDecoderBlockImpl::forward(const torch::Tensor& x,
                                                const torch::Tensor& context,
                                                const torch::Tensor& symbols) {
  TORCH_CHECK(context.defined() && context.dim() == 3 && context.size(2) == options.d_model(),
              "DualAttnDecoderBlock: context must be [batch, len, ", options.d_model(),
              "], got shape ", context.defined() ? context.sizes() : c10::IntArrayRef{});
  auto attend = [&](const torch::Tensor& h) {
    auto out = std::get<0>(
        dual_attn->forward(h, symbols, {}, options.causal(), {}, {}, /*need_weights=*/false));
    return dropout(out);
  };
  auto cross_attend = [&](const torch::Tensor& h) {
    return dropout(std::get<0>(cross_attn->forward(h, context, context)));
  };
  return detail::decoder_residuals(x, options.norm_first(), attend, cross_attend, ff_block, norm1,
                                   norm2, norm3);
}

}  // namespace dual_attention
