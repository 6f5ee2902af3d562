#include "dual_attention/dual_attn_blocks.h"

namespace dual_attention {
namespace {

torch::nn::AnyModule make_norm(torch::nn::Module& owner, const char* name, int64_t d_model,
                               const std::string& norm_type) {
  auto norm = create_norm(d_model, norm_type);
  owner.register_module(name, norm.ptr());
  return norm;
}

DualAttention make_dual_attention(int64_t d_model, int64_t n_heads_sa, int64_t n_heads_ra,
                                  double dropout, const Kwargs& sa_kwargs, const Kwargs& ra_kwargs,
                                  const std::string& ra_type, bool share_attn_params) {
  return DualAttention(DualAttentionOptions(d_model, n_heads_sa, n_heads_ra, dropout)
                           .sa_kwargs(sa_kwargs.is_null() ? Kwargs::object() : sa_kwargs)
                           .ra_kwargs(ra_kwargs.is_null() ? Kwargs::object() : ra_kwargs)
                           .ra_type(ra_type)
                           .share_attn_params(share_attn_params));
}

FeedForwardBlock make_ff_block(int64_t d_model, std::optional<int64_t> dff,
                               const std::string& activation, bool bias) {
  return FeedForwardBlock(
      FeedForwardBlockOptions(d_model).dff(dff).activation(activation).use_bias(bias));
}

}  // namespace

// ---- DualAttnEncoderBlock -------------------------------------------------------------------

DualAttnEncoderBlockImpl::DualAttnEncoderBlockImpl(const DualAttnEncoderBlockOptions& options_)
    : options(options_) {
  reset();
}

void DualAttnEncoderBlockImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.dropout_rate() >= 0.0 && o.dropout_rate() <= 1.0,
              "DualAttnEncoderBlock: dropout_rate must be in [0, 1], got ", o.dropout_rate());
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout_rate()));
  norm1 = make_norm(*this, "norm1", o.d_model(), o.norm_type());
  dual_attn = register_module(
      "dual_attn", make_dual_attention(o.d_model(), o.n_heads_sa(), o.n_heads_ra(), o.dropout_rate(),
                                       o.sa_kwargs(), o.ra_kwargs(), o.ra_type(),
                                       o.share_attn_params()));
  norm2 = make_norm(*this, "norm2", o.d_model(), o.norm_type());
  ff_block = register_module("ff_block",
                             make_ff_block(o.d_model(), o.dff(), o.activation(), o.bias()));
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
  auto feed_forward = [&](const torch::Tensor& h) { return dropout(ff_block(h)); };
  if (options.norm_first()) {
    auto h = x + attend(norm1.forward(x));
    return h + feed_forward(norm2.forward(h));
  }
  auto h = dropout(norm1.forward(x + attend(x)));
  return norm2.forward(h + feed_forward(h));
}

// ---- DualAttnDecoderBlock -------------------------------------------------------------------

DualAttnDecoderBlockImpl::DualAttnDecoderBlockImpl(const DualAttnDecoderBlockOptions& options_)
    : options(options_) {
  reset();
}

void DualAttnDecoderBlockImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.dropout_rate() >= 0.0 && o.dropout_rate() <= 1.0,
              "DualAttnDecoderBlock: dropout_rate must be in [0, 1], got ", o.dropout_rate());
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout_rate()));
  norm1 = make_norm(*this, "norm1", o.d_model(), o.norm_type());
  dual_attn = register_module(
      "dual_attn", make_dual_attention(o.d_model(), o.n_heads_sa(), o.n_heads_ra(), o.dropout_rate(),
                                       o.sa_kwargs(), o.ra_kwargs(), o.ra_type(),
                                       o.share_attn_params()));
  norm2 = make_norm(*this, "norm2", o.d_model(), o.norm_type());
  check_no_reserved_kwargs(o.cross_kwargs(), {"d_model", "n_heads", "dropout"},
                           "DualAttnDecoderBlock", "cross_kwargs");
  AttentionOptions cross(o.d_model(), o.n_heads_cross(), o.dropout_rate());
  apply_kwargs(cross, o.cross_kwargs(), "DualAttnDecoderBlock cross_kwargs (Attention)");
  cross_attn = register_module("cross_attn", Attention(cross));
  norm3 = make_norm(*this, "norm3", o.d_model(), o.norm_type());
  ff_block = register_module("ff_block",
                             make_ff_block(o.d_model(), o.dff(), o.activation(), o.bias()));
}

void DualAttnDecoderBlockImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::DualAttnDecoderBlock(d_model=" << options.d_model()
         << ", n_heads_sa=" << options.n_heads_sa() << ", n_heads_ra=" << options.n_heads_ra()
         << ", n_heads_cross=" << options.n_heads_cross() << ", norm_first=" << options.norm_first()
         << ", norm_type=" << options.norm_type() << ", causal=" << options.causal() << ")";
}

torch::Tensor DualAttnDecoderBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
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
  if (options.norm_first()) {
    auto h = x + attend(norm1.forward(x));
    h = h + cross_attend(norm2.forward(h));
    return h + ff_block(norm3.forward(h));
  }
  auto h = norm1.forward(x + attend(x));
  h = norm2.forward(h + cross_attend(h));
  return norm3.forward(h + ff_block(h));
}

}  // namespace dual_attention
