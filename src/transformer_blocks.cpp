#include "dual_attention/transformer_blocks.h"

#include <functional>
#include <sstream>
#include <utility>

#include "dual_attention/attention_utils.h"
#include "lookup_tables.h"

namespace dual_attention {

// ---- FeedForwardBlock ----------------------------------------------------------------------

FeedForwardBlockImpl::FeedForwardBlockImpl(const FeedForwardBlockOptions& options_)
    : options(options_) {
  reset();
}

void FeedForwardBlockImpl::reset() {
  const auto& o = options;
  const char* owner = "FeedForwardBlock";
  TORCH_CHECK(o.embed_dim() > 0, owner, ": embed_dim must be positive, got ", o.embed_dim());
  const bool swiglu = o.activation() == "swiglu";
  if (!swiglu) {
    try {
      activation = get_activation_function(o.activation(), "FeedForwardBlock: activation");
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, e.msg(), ", or 'swiglu'");
    }
  }
  // int(2/3 * 4 * embed_dim) in double precision, evaluated left to right as Python does.
  const auto swiglu_dff =
      static_cast<int64_t>(2.0 / 3.0 * 4.0 * static_cast<double>(o.embed_dim()));
  dff = o.dff().value_or(swiglu ? swiglu_dff : 4 * o.embed_dim());
  TORCH_CHECK(dff > 0, owner, ": dff must be positive, got ", dff);

  using torch::nn::LinearOptions;
  linear1 = register_module(
      "linear1", torch::nn::Linear(LinearOptions(o.embed_dim(), dff).bias(o.use_bias())));
  linear2 = register_module(
      "linear2", torch::nn::Linear(LinearOptions(dff, o.embed_dim()).bias(o.use_bias())));
  if (swiglu) {
    linear3 = register_module(
        "linear3", torch::nn::Linear(LinearOptions(o.embed_dim(), dff).bias(o.use_bias())));
  }
}

void FeedForwardBlockImpl::pretty_print(std::ostream& stream) const {
  stream << "dual_attention::FeedForwardBlock(embed_dim=" << options.embed_dim() << ", dff=" << dff
         << ", activation=" << options.activation() << ", use_bias=" << std::boolalpha
         << options.use_bias() << ")";
}

torch::Tensor FeedForwardBlockImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == options.embed_dim(),
              "FeedForwardBlock: x must be [..., ", options.embed_dim(), "], got ",
              x.defined() ? c10::str("a tensor of shape ", x.sizes()) : "nothing");
  if (linear3) return linear2(torch::silu(linear1(x)) * linear3(x));
  return linear2(activation(linear1(x)));
}

// ---- RMSNorm -------------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(const RMSNormOptions& options_) : options(options_) { reset(); }

void RMSNormImpl::reset() {
  TORCH_CHECK(options.dim() > 0, "RMSNorm: dim must be positive, got ", options.dim());
  TORCH_CHECK(options.eps() >= 0.0, "RMSNorm: eps must be >= 0, got ", options.eps());
  weight = register_parameter("weight", torch::ones({options.dim()}));
}

void RMSNormImpl::pretty_print(std::ostream& stream) const {
  stream << "dual_attention::RMSNorm(dim=" << options.dim() << ", eps=" << options.eps() << ")";
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == options.dim(),
              "RMSNorm: x must be [..., ", options.dim(), "], got ",
              x.defined() ? c10::str("a tensor of shape ", x.sizes()) : "nothing");
  // The reference normalises in float32 always; float64 stays float64 here rather than losing
  // precision.
  const auto compute = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto xc = x.to(compute);
  auto normed = xc * torch::rsqrt(xc.pow(2).mean(-1, /*keepdim=*/true) + options.eps());
  return normed.to(x.scalar_type()) * weight;
}

// ---- norms by name -------------------------------------------------------------------------

namespace {

const std::vector<std::pair<std::string, std::function<torch::nn::AnyModule(int64_t)>>>&
norm_table() {
  static const std::vector<std::pair<std::string, std::function<torch::nn::AnyModule(int64_t)>>>
      table = {
          {"layernorm",
           [](int64_t d) {
             return torch::nn::AnyModule(
                 torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(1e-5)));
           }},
          {"rmsnorm", [](int64_t d) { return torch::nn::AnyModule(RMSNorm(d)); }},
          {"none", [](int64_t) { return torch::nn::AnyModule(torch::nn::Identity()); }},
      };
  return table;
}

// Attention keywords of a block: the reference's defaults updated by the user's dict, on top of the
// arguments the block passes itself.
AttentionOptions block_attention_options(int64_t d_model, int64_t n_heads, double dropout,
                                         bool bias, const Kwargs& attn_kwargs, const char* owner) {
  TORCH_CHECK(attn_kwargs.is_null() || attn_kwargs.is_object(), owner,
              ": attn_kwargs must be a dict or None, got ", attn_kwargs.dump());
  check_no_reserved_kwargs(attn_kwargs, {"d_model", "n_heads", "dropout", "add_bias_out"}, owner,
                           "attn_kwargs");
  Kwargs merged = {{"n_kv_heads", nullptr}, {"add_bias_kv", false}};
  if (attn_kwargs.is_object()) merged.update(attn_kwargs);
  auto options = AttentionOptions(d_model, n_heads, dropout).add_bias_out(bias);
  apply_kwargs(options, merged, std::string(owner) + " attn_kwargs");
  return options;
}

void check_block_options(int64_t d_model, int64_t n_heads, double dropout_rate, const char* owner) {
  TORCH_CHECK(d_model > 0, owner, ": d_model must be positive, got ", d_model);
  TORCH_CHECK(n_heads > 0, owner, ": n_heads must be positive, got ", n_heads);
  TORCH_CHECK(d_model % n_heads == 0, owner, ": d_model (", d_model,
              ") must be divisible by n_heads (", n_heads, ")");
  TORCH_CHECK(dropout_rate >= 0.0 && dropout_rate <= 1.0, owner,
              ": dropout_rate must be in [0, 1], got ", dropout_rate);
}

}  // namespace

const std::vector<std::string>& norm_names() {
  static const auto names = detail::names_in(norm_table(), [](const auto& e) { return e.first; });
  return names;
}

torch::nn::AnyModule create_norm(int64_t d_model, const std::string& norm_type) {
  TORCH_CHECK(d_model > 0, "create_norm: d_model must be positive, got ", d_model);
  for (const auto& entry : norm_table()) {
    if (entry.first == norm_type) return entry.second(d_model);
  }
  std::ostringstream valid;
  for (const auto& n : norm_names()) valid << (valid.tellp() ? ", " : "") << "'" << n << "'";
  TORCH_CHECK(false, "norm_type '", norm_type, "' is not a known norm; expected one of ",
              valid.str());
}

// ---- what the blocks share ------------------------------------------------------------------

namespace detail {

torch::nn::AnyModule register_norm(torch::nn::Module& block, const std::string& name,
                                   int64_t d_model, const std::string& norm_type) {
  auto norm = create_norm(d_model, norm_type);
  block.register_module(name, norm.ptr());
  return norm;
}

FeedForwardBlock block_feed_forward(int64_t d_model, std::optional<int64_t> dff,
                                    const std::string& activation, bool bias) {
  return FeedForwardBlock(
      FeedForwardBlockOptions(d_model).dff(dff).activation(activation).use_bias(bias));
}

torch::Tensor encoder_residuals(const torch::Tensor& x, bool norm_first, const Sublayer& attend,
                                const Sublayer& feed_forward, torch::nn::AnyModule& norm1,
                                torch::nn::AnyModule& norm2, torch::nn::Dropout& dropout) {
  if (norm_first) {
    auto h = x + attend(norm1.forward(x));
    return h + dropout(feed_forward(norm2.forward(h)));
  }
  auto h = dropout(norm1.forward(x + attend(x)));
  return norm2.forward(h + dropout(feed_forward(h)));
}

torch::Tensor decoder_residuals(const torch::Tensor& x, bool norm_first, const Sublayer& attend,
                                const Sublayer& cross_attend, const Sublayer& feed_forward,
                                torch::nn::AnyModule& norm1, torch::nn::AnyModule& norm2,
                                torch::nn::AnyModule& norm3) {
  if (norm_first) {
    auto h = x + attend(norm1.forward(x));
    h = h + cross_attend(norm2.forward(h));
    return h + feed_forward(norm3.forward(h));
  }
  auto h = norm1.forward(x + attend(x));
  h = norm2.forward(h + cross_attend(h));
  return norm3.forward(h + feed_forward(h));
}

}  // namespace detail

// ---- EncoderBlock --------------------------------------------------------------------------

EncoderBlockImpl::EncoderBlockImpl(const EncoderBlockOptions& options_) : options(options_) {
  reset();
}

void EncoderBlockImpl::reset() {
  const auto& o = options;
  const char* owner = "EncoderBlock";
  check_block_options(o.d_model(), o.n_heads(), o.dropout_rate(), owner);
  auto attn_options = block_attention_options(o.d_model(), o.n_heads(), o.dropout_rate(), o.bias(),
                                              o.attn_kwargs(), owner);

  dropout = register_module("dropout", torch::nn::Dropout(o.dropout_rate()));
  norm1 = detail::register_norm(*this, "norm1", o.d_model(), o.norm_type());
  self_attn = register_module("self_attn", Attention(attn_options));
  norm2 = detail::register_norm(*this, "norm2", o.d_model(), o.norm_type());
  ff_block = register_module(
      "ff_block", detail::block_feed_forward(o.d_model(), o.dff(), o.activation(), o.bias()));
}

void EncoderBlockImpl::pretty_print(std::ostream& stream) const {
  stream << "dual_attention::EncoderBlock(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", dropout_rate=" << options.dropout_rate()
         << ", activation=" << options.activation() << ", norm_first=" << std::boolalpha
         << options.norm_first() << ", norm_type=" << options.norm_type()
         << ", causal=" << options.causal() << ")";
}

torch::Tensor EncoderBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& freqs_cos,
                                        const torch::Tensor& freqs_sin, bool need_weights) {
  detail::check_sequence_input(x, options.d_model(), "EncoderBlock", "x");
  auto attend = [&](const torch::Tensor& input) {
    auto out = std::get<0>(self_attn->forward(input, input, input, freqs_cos, freqs_sin, {},
                                              options.causal(), need_weights));
    return dropout(out);
  };
  return detail::encoder_residuals(x, options.norm_first(), attend, ff_block, norm1, norm2,
                                   dropout);
}

torch::Tensor EncoderBlockImpl::forward_cached(const torch::Tensor& x,
                                               const torch::Tensor& freqs_cos,
                                               const torch::Tensor& freqs_sin, LayerCache& cache,
                                               const CacheStep& step) {
  detail::check_sequence_input(x, options.d_model(), "EncoderBlock", "x");
  TORCH_CHECK(options.causal(), "EncoderBlock: forward_cached needs a causal block");
  auto attend = [&](const torch::Tensor& input) {
    return dropout(self_attn->forward_cached(input, freqs_cos, freqs_sin, cache, step));
  };
  return detail::encoder_residuals(x, options.norm_first(), attend, ff_block, norm1, norm2,
                                   dropout);
}

// ---- DecoderBlock --------------------------------------------------------------------------

DecoderBlockImpl::DecoderBlockImpl(const DecoderBlockOptions& options_) : options(options_) {
  reset();
}

void DecoderBlockImpl::reset() {
  const auto& o = options;
  const char* owner = "DecoderBlock";
  check_block_options(o.d_model(), o.n_heads(), o.dropout_rate(), owner);
  auto attn_options = AttentionOptions(o.d_model(), o.n_heads(), o.dropout_rate())
                          .n_kv_heads(std::nullopt)
                          .add_bias_kv(false)
                          .add_bias_out(o.bias());

  dropout = register_module("dropout", torch::nn::Dropout(o.dropout_rate()));
  norm1 = detail::register_norm(*this, "norm1", o.d_model(), o.norm_type());
  self_attn = register_module("self_attn", Attention(attn_options));
  norm2 = detail::register_norm(*this, "norm2", o.d_model(), o.norm_type());
  // n_heads, not n_heads_cross: the reference's choice, kept for checkpoint compatibility.
  cross_attn = register_module("cross_attn", Attention(attn_options));
  norm3 = detail::register_norm(*this, "norm3", o.d_model(), o.norm_type());
  ff_block = register_module(
      "ff_block", detail::block_feed_forward(o.d_model(), o.dff(), o.activation(), o.bias()));
}

void DecoderBlockImpl::pretty_print(std::ostream& stream) const {
  stream << "dual_attention::DecoderBlock(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", dropout_rate=" << options.dropout_rate()
         << ", activation=" << options.activation() << ", norm_first=" << std::boolalpha
         << options.norm_first() << ", norm_type=" << options.norm_type()
         << ", causal=" << options.causal() << ")";
}

torch::Tensor DecoderBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const char* owner = "DecoderBlock";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  detail::check_sequence_input(context, options.d_model(), owner, "context");
  TORCH_CHECK(context.size(0) == x.size(0), owner,
              ": x and context must have the same batch size, got ", x.size(0), " and ",
              context.size(0));
  auto self_attend = [&](const torch::Tensor& input) {
    return dropout(
        std::get<0>(self_attn->forward(input, input, input, {}, {}, {}, options.causal())));
  };
  auto cross_attend = [&](const torch::Tensor& input) {
    return dropout(std::get<0>(cross_attn->forward(input, context, context)));
  };
  return detail::decoder_residuals(x, options.norm_first(), self_attend, cross_attend, ff_block,
                                   norm1, norm2, norm3);
}

}  // namespace dual_attention
