// Helpers shared by every attention mechanism (reference: dual_attention.attention_utils).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <tuple>

namespace dual_attention {

// Grouped-query attention: [b, s, n_kv_heads, d] -> [b, s, n_kv_heads * n_rep, d], each kv head
// repeated n_rep times consecutively (torch.repeat_interleave along dim 2).
torch::Tensor repeat_kv(const torch::Tensor& x, int64_t n_rep);

// RoPE tables for interleaved pairs: freqs[t, i] = t * theta^(-2i/dim), returned as (cos, sin),
// each [end, dim / 2], float32.
std::tuple<torch::Tensor, torch::Tensor> precompute_freqs_cis(int64_t dim, int64_t end,
                                                              double theta = 10000.0);

// Rotates xq, xk ([b, s, h, d]) by the angles of (freqs_cos, freqs_sin): [s, d / 2], or
// [b, s, d / 2] for angles that differ per row (left-padded batches); dims 2i, 2i+1 form one
// complex number. Computed in float32, or float64 for float64 inputs (the reference always uses
// float32), and returned in the inputs' dtypes.
std::tuple<torch::Tensor, torch::Tensor> apply_rotary_emb(const torch::Tensor& xq,
                                                          const torch::Tensor& xk,
                                                          const torch::Tensor& freqs_cos,
                                                          const torch::Tensor& freqs_sin);

// Boolean [size, size] mask, True at (i, j) when j <= i (i may attend to j).
torch::Tensor compute_causal_mask(int64_t size, torch::Device device = torch::kCPU);
// Boolean [size, size] mask, False on the diagonal and True elsewhere.
torch::Tensor compute_diag_mask(int64_t size, torch::Device device = torch::kCPU);

namespace detail {

// Head bookkeeping shared by every attention variant: n_kv_heads and total_n_heads defaulted to
// n_heads, head_dim = d_model / total_n_heads, with the divisibility checks the reference asserts.
struct HeadLayout {
  int64_t n_heads, n_kv_heads, total_n_heads, head_dim, n_rep_kv;
};
HeadLayout resolve_heads(const char* owner, int64_t d_model, int64_t n_heads,
                         std::optional<int64_t> n_kv_heads, std::optional<int64_t> total_n_heads,
                         double dropout);

// Validates the mask arguments every attention forward takes and returns the boolean mask to apply
// ([q_len, k_len], True = may attend), or an undefined tensor for no mask. is_causal builds the
// causal mask; attn_mask with is_causal, a non-boolean mask or a misshapen one is an error.
torch::Tensor resolve_attn_mask(const torch::Tensor& attn_mask, bool is_causal, int64_t q_len,
                                int64_t k_len, torch::Device device, const char* owner);

// The one causal mask: boolean [q_len, k_len], True at (i, j) when j <= i + offset (query i sits at
// key position i + offset: 0 for a whole sequence, the cached length when decoding).
torch::Tensor causal_mask(int64_t q_len, int64_t k_len, int64_t offset, torch::Device device);

// Adds -inf where `mask` is False to `scores` ([..., q_len, k_len]).
torch::Tensor apply_additive_mask(const torch::Tensor& scores, const torch::Tensor& mask);

// nn.Linear(in_features, out_features, bias=bias).
torch::nn::Linear linear(int64_t in_features, int64_t out_features, bool bias);

// Checks x is [batch, len, width] with the expected width; `argument` names it in the error.
void check_sequence_input(const torch::Tensor& x, int64_t width, const char* owner,
                          const char* argument);

// RoPE arguments: both or neither, each [len, rotary_dim / 2]. Returns true when RoPE applies.
bool check_rope_inputs(const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin, int64_t len,
                       int64_t rotary_dim, const char* owner);

}  // namespace detail
}  // namespace dual_attention
