#include "dual_attention/attention_utils.h"

namespace dual_attention {

torch::Tensor repeat_kv(const torch::Tensor& x, int64_t n_rep) {
  TORCH_CHECK(x.dim() == 4, "repeat_kv: x must be [batch, len, n_kv_heads, head_dim], got shape ",
              x.sizes());
  TORCH_CHECK(n_rep >= 1, "repeat_kv: n_rep must be >= 1, got ", n_rep);
  if (n_rep == 1) return x;
  const auto b = x.size(0), s = x.size(1), h = x.size(2), d = x.size(3);
  return x.unsqueeze(3).expand({b, s, h, n_rep, d}).reshape({b, s, h * n_rep, d});
}

std::tuple<torch::Tensor, torch::Tensor> precompute_freqs_cis(int64_t dim, int64_t end,
                                                              double theta) {
  TORCH_CHECK(dim > 0 && dim % 2 == 0,
              "precompute_freqs_cis: dim must be a positive even number, got ", dim);
  TORCH_CHECK(end >= 0, "precompute_freqs_cis: end must be >= 0, got ", end);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  // theta^(-2i/dim), computed as the reference does: 1 / theta ** (arange(0, dim, 2) / dim).
  auto freqs = 1.0 / torch::pow(theta, torch::arange(0, dim, 2, f32) / static_cast<double>(dim));
  auto angles = torch::outer(torch::arange(end, f32), freqs);  // [end, dim / 2]
  return {torch::cos(angles), torch::sin(angles)};
}

std::tuple<torch::Tensor, torch::Tensor> apply_rotary_emb(const torch::Tensor& xq,
                                                          const torch::Tensor& xk,
                                                          const torch::Tensor& freqs_cos,
                                                          const torch::Tensor& freqs_sin) {
  TORCH_CHECK(xq.dim() == 4 && xk.dim() == 4,
              "apply_rotary_emb: xq and xk must be [batch, len, heads, dim], got shapes ",
              xq.sizes(), " and ", xk.sizes());
  TORCH_CHECK(xq.size(-1) % 2 == 0, "apply_rotary_emb: the last dim must be even, got ",
              xq.size(-1));
  TORCH_CHECK(freqs_cos.dim() == 2 || freqs_cos.dim() == 3,
              "apply_rotary_emb: freqs_cos/freqs_sin must be [len, dim / 2] or [batch, len, dim / "
              "2], got ",
              freqs_cos.sizes());
  const auto compute = xq.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  // [len, dim / 2] -> [1, len, 1, dim / 2]; per-row angles [b, len, dim / 2] -> [b, len, 1, dim /
  // 2]
  const bool per_row = freqs_cos.dim() == 3;
  auto cos = per_row ? freqs_cos.to(compute).unsqueeze(2)
                     : freqs_cos.to(compute).unsqueeze(1).unsqueeze(0);
  auto sin = per_row ? freqs_sin.to(compute).unsqueeze(2)
                     : freqs_sin.to(compute).unsqueeze(1).unsqueeze(0);
  auto rotate = [&](const torch::Tensor& x) {
    TORCH_CHECK(cos.size(1) == x.size(1) && 2 * cos.size(3) == x.size(3) &&
                    (!per_row || cos.size(0) == x.size(0)),
                "apply_rotary_emb: freqs_cos/freqs_sin must be [", x.size(1), ", ", x.size(3) / 2,
                "] (or [", x.size(0), ", ", x.size(1), ", ", x.size(3) / 2, "]), got ",
                freqs_cos.sizes());
    auto pairs = x.to(compute).unflatten(-1, {-1, 2});  // [b, s, h, d/2, 2]
    auto re = pairs.select(-1, 0), im = pairs.select(-1, 1);
    auto out = torch::stack({re * cos - im * sin, re * sin + im * cos}, -1).flatten(3);
    return out.to(x.scalar_type());
  };
  return {rotate(xq), rotate(xk)};
}

torch::Tensor compute_causal_mask(int64_t size, torch::Device device) {
  return detail::causal_mask(size, size, 0, device);
}

torch::Tensor compute_diag_mask(int64_t size, torch::Device device) {
  return torch::eye(size, torch::TensorOptions().dtype(torch::kBool).device(device)).logical_not();
}

namespace detail {

HeadLayout resolve_heads(const char* owner, int64_t d_model, int64_t n_heads,
                         std::optional<int64_t> n_kv_heads, std::optional<int64_t> total_n_heads,
                         double dropout) {
  TORCH_CHECK(d_model > 0, owner, ": d_model must be positive, got ", d_model);
  TORCH_CHECK(n_heads > 0, owner, ": n_heads must be positive, got ", n_heads);
  TORCH_CHECK(dropout >= 0.0 && dropout <= 1.0, owner, ": dropout must be in [0, 1], got ",
              dropout);
  HeadLayout l{};
  l.n_heads = n_heads;
  l.n_kv_heads = n_kv_heads.value_or(n_heads);
  l.total_n_heads = total_n_heads.value_or(n_heads);
  TORCH_CHECK(l.n_kv_heads > 0 && n_heads % l.n_kv_heads == 0, owner, ": n_heads (", n_heads,
              ") must be divisible by n_kv_heads (", l.n_kv_heads, ")");
  TORCH_CHECK(l.total_n_heads > 0 && d_model % l.total_n_heads == 0, owner, ": d_model (", d_model,
              ") must be divisible by the total number of heads (", l.total_n_heads, ")");
  l.head_dim = d_model / l.total_n_heads;
  l.n_rep_kv = n_heads / l.n_kv_heads;
  return l;
}

torch::Tensor resolve_attn_mask(const torch::Tensor& attn_mask, bool is_causal, int64_t q_len,
                                int64_t k_len, torch::Device device, const char* owner) {
  if (attn_mask.defined()) {
    TORCH_CHECK(
        !is_causal, owner,
        ": attn_mask and is_causal=true were both given; pass one of them (is_causal builds "
        "the causal mask itself)");
    TORCH_CHECK(attn_mask.scalar_type() == torch::kBool, owner,
                ": attn_mask must be a boolean tensor (True = may attend), got dtype ",
                attn_mask.scalar_type());
    TORCH_CHECK(attn_mask.dim() == 2 && attn_mask.size(0) == q_len && attn_mask.size(1) == k_len,
                owner, ": attn_mask must have shape [", q_len, ", ", k_len, "], got ",
                attn_mask.sizes());
    return attn_mask.to(device);
  }
  // Top-left aligned, as scaled_dot_product_attention does when q_len != k_len.
  if (is_causal) return causal_mask(q_len, k_len, 0, device);
  return {};
}

torch::Tensor causal_mask(int64_t q_len, int64_t k_len, int64_t offset, torch::Device device) {
  return torch::ones({q_len, k_len}, torch::TensorOptions().dtype(torch::kBool).device(device))
      .tril(offset);
}

torch::Tensor apply_additive_mask(const torch::Tensor& scores, const torch::Tensor& mask) {
  if (!mask.defined()) return scores;
  // bitwise_not, which is logical_not on booleans, has a meta kernel in C++ (logical_not's is
  // registered from Python only): meta tensors trace through ops::relational_attention.
  return scores.masked_fill(mask.bitwise_not(), -std::numeric_limits<double>::infinity());
}

torch::nn::Linear linear(int64_t in_features, int64_t out_features, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in_features, out_features).bias(bias));
}

void check_sequence_input(const torch::Tensor& x, int64_t width, const char* owner,
                          const char* argument) {
  TORCH_CHECK(x.defined(), owner, ": ", argument, " is required");
  TORCH_CHECK(x.dim() == 3, owner, ": ", argument, " must be [batch, len, ", width,
              "], got a tensor of shape ", x.sizes());
  TORCH_CHECK(x.size(2) == width, owner, ": ", argument, " must have last dim ", width,
              ", got shape ", x.sizes());
}

bool check_rope_inputs(const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin, int64_t len,
                       int64_t rotary_dim, const char* owner) {
  TORCH_CHECK(freqs_cos.defined() == freqs_sin.defined(), owner,
              ": freqs_cos and freqs_sin must be given together");
  if (!freqs_cos.defined()) return false;
  TORCH_CHECK(rotary_dim % 2 == 0, owner, ": RoPE needs an even key dim, got ", rotary_dim);
  for (const auto* f : {&freqs_cos, &freqs_sin}) {
    TORCH_CHECK(f->dim() == 2 && f->size(0) == len && f->size(1) == rotary_dim / 2, owner,
                ": freqs_cos and freqs_sin must be [", len, ", ", rotary_dim / 2, "], got ",
                f->sizes());
  }
  return true;
}

}  // namespace detail
}  // namespace dual_attention
