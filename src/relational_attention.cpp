#include "dual_attention/relational_attention.h"

#include <algorithm>
#include <cmath>

#include "dual_attention/attention_utils.h"

namespace dual_attention {
namespace {

using detail::linear;

// Symbols must be [b, n, d_model], or [n, n, d_model] for relative positional symbols.
void check_symbols(const torch::Tensor& symbols, int64_t b, int64_t n, int64_t d_model,
                   bool relative, const char* owner) {
  TORCH_CHECK(symbols.defined(), owner, ": symbols are required");
  if (relative) {
    TORCH_CHECK(symbols.dim() == 3 && symbols.size(0) == n && symbols.size(1) == n &&
                    symbols.size(2) == d_model,
                owner, ": with use_relative_positional_symbols, symbols must be [", n, ", ", n,
                ", ", d_model, "] (one symbol per pair of positions), got shape ", symbols.sizes());
  } else {
    TORCH_CHECK(symbols.dim() == 3 && symbols.size(0) == b && symbols.size(1) == n &&
                    symbols.size(2) == d_model,
                owner, ": symbols must be [", b, ", ", n, ", ", d_model, "] like x, got shape ",
                symbols.sizes());
  }
}

// W_s s split into query heads: [b, n, h, head_dim], or [n, n, h, head_dim] when relative.
torch::Tensor project_symbols(torch::nn::Linear& wv, const torch::Tensor& symbols,
                              int64_t n_kv_heads, int64_t head_dim, int64_t n_rep) {
  auto sv = wv(symbols);
  sv = sv.view({sv.size(0), sv.size(1), n_kv_heads, head_dim});
  return repeat_kv(sv, n_rep);
}

// sum_j scores[b, h, i, j] sv[b, j, h, :] (or sv[i, j, h, :] when relative) -> [b, n, h, head_dim].
torch::Tensor attend_symbols(const torch::Tensor& scores, const torch::Tensor& sv, bool relative) {
  if (relative) return torch::einsum("bhij,ijhd->bihd", {scores, sv});
  return torch::matmul(scores, sv.transpose(1, 2)).transpose(1, 2);
}

// Query/key heads for attention scores: [b, h, n, dim] each, RoPE applied, kv heads repeated.
std::tuple<torch::Tensor, torch::Tensor> attention_heads(
    torch::nn::Linear& wq, torch::nn::Linear& wk, const torch::Tensor& x, int64_t n_heads,
    int64_t n_kv_heads, int64_t dim, const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
    bool rope) {
  const int64_t b = x.size(0), n = x.size(1);
  auto q = wq(x).view({b, n, n_heads, dim});
  auto k = wk(x).view({b, n, n_kv_heads, dim});
  if (rope) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  k = repeat_kv(k, n_heads / n_kv_heads);
  return {q.transpose(1, 2), k.transpose(1, 2)};
}

}  // namespace

// ---- RelationalAttention ------------------------------------------------------------------------

RelationalAttentionImpl::RelationalAttentionImpl(const RelationalAttentionOptions& options_)
    : options(options_) {
  reset();
}

void RelationalAttentionImpl::reset() {
  const auto& o = options;
  const char* owner = "RelationalAttention";
  const auto heads = detail::resolve_heads(owner, o.d_model(), o.n_heads(), o.n_kv_heads(),
                                           o.total_n_heads(), o.dropout());
  n_kv_heads = heads.n_kv_heads;
  total_n_heads = heads.total_n_heads;
  head_dim = heads.head_dim;
  n_rep_kv = heads.n_rep_kv;
  n_relations = o.n_relations().value_or(o.n_heads());
  TORCH_CHECK(n_relations > 0, owner, ": n_relations must be positive, got ", n_relations);
  key_dim = o.key_dim().value_or(head_dim);
  TORCH_CHECK(key_dim > 0, owner, ": key_dim must be positive, got ", key_dim);
  rel_proj_dim = o.rel_proj_dim().value_or(head_dim * o.n_heads() / n_relations);
  TORCH_CHECK(rel_proj_dim > 0 && rel_proj_dim * n_relations == head_dim * o.n_heads(), owner,
              ": rel_proj_dim (", rel_proj_dim, ") * n_relations (", n_relations,
              ") must equal head_dim * n_heads (", head_dim, " * ", o.n_heads(), " = ",
              head_dim * o.n_heads(), ")");
  rel_activation =
      get_activation_function(o.rel_activation(), "RelationalAttention: rel_activation");
  attn_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  rel_scale = 1.0 / std::sqrt(static_cast<double>(rel_proj_dim));

  const int64_t d = o.d_model(), h = o.n_heads();
  wq_attn = register_module("wq_attn", linear(d, h * key_dim, false));
  wk_attn = register_module("wk_attn", linear(d, n_kv_heads * key_dim, o.add_bias_kv()));
  wq_rel = register_module("wq_rel", linear(d, n_relations * rel_proj_dim, false));
  // Symmetric relations: the key projection is the query projection, registered under both names
  // as in the reference's state_dict.
  wk_rel = register_module(
      "wk_rel", o.symmetric_rels() ? wq_rel : linear(d, n_relations * rel_proj_dim, false));
  wr = register_parameter("wr", torch::empty({h, head_dim, n_relations}));
  wv = register_module("wv", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wo = register_module("wo", linear(h * head_dim, h * head_dim, o.add_bias_out()));
  attn_dropout = register_module("attn_dropout", torch::nn::Dropout(o.dropout()));
  resid_dropout = register_module("resid_dropout", torch::nn::Dropout(o.dropout()));
  reset_parameters();
}

void RelationalAttentionImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(wr, std::sqrt(5.0));  // as nn.Linear initialises its weight
}

void RelationalAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::RelationalAttention(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", n_relations=" << n_relations
         << ", n_kv_heads=" << n_kv_heads << ", head_dim=" << head_dim
         << ", rel_proj_dim=" << rel_proj_dim << ", rel_activation=" << options.rel_activation()
         << ", symmetric_rels=" << options.symmetric_rels()
         << ", use_relative_positional_symbols=" << options.use_relative_positional_symbols()
         << ")";
}

void RelationalAttentionImpl::check_inputs(const torch::Tensor& x,
                                           const torch::Tensor& symbols) const {
  const char* owner = "RelationalAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  check_symbols(symbols, x.size(0), x.size(1), options.d_model(),
                options.use_relative_positional_symbols(), owner);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> RelationalAttentionImpl::forward(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin, const torch::Tensor& attn_mask, bool is_causal,
    bool need_weights) {
  const char* owner = "RelationalAttention";
  check_inputs(x, symbols);
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads();
  const bool rope = detail::check_rope_inputs(freqs_cos, freqs_sin, n, key_dim, owner);
  const bool relative = options.use_relative_positional_symbols();

  TORCH_CHECK(block_size > 0, owner, ": block_size must be positive, got ", block_size);
  // Without weights to return, nothing n x n needs to exist (src/relational_attention_fast.cpp).
  // (An empty batch or sequence has nothing to save either way: it materialises.)
  last_implementation =
      need_weights || x.numel() == 0 ? Implementation::Materialize : implementation;
  if (last_implementation == Implementation::Auto) {
    // SDPA needs a fused kernel that takes values wider than keys: CUDA's, not the CPU's.
    const bool sdpa_fits = options.rel_activation() == "identity" && !relative &&
                           x.device().is_cuda() && x.scalar_type() != torch::kDouble &&
                           !attn_mask.defined();
    // On the CPU, short sequences are cheaper materialised: the blocks' fixed costs (custom
    // autograd, recomputation, the parallel region) outweigh n x n tensors this small (measured
    // by benchmarks/bench_relational.py: materialising wins up to n = 256, blockwise from 512).
    const bool small = x.device().is_cpu() && n <= kMaterializeMaxLength &&
                       b * std::max(h, n_relations) * n * n <= kMaterializeMaxElements;
    last_implementation = sdpa_fits ? Implementation::SDPA
                          : small   ? Implementation::Materialize
                                    : Implementation::Blockwise;
  }
  if (last_implementation != Implementation::Materialize) {
    if (attn_mask.defined()) {  // validated here; the blocks read it a piece at a time
      detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);
    }
    auto heads = last_implementation == Implementation::SDPA
                     ? attend_sdpa(x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal)
                     : attend_blockwise(x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal);
    return {resid_dropout(wo(heads.reshape({b, n, h * head_dim}))), {}, {}};
  }

  const auto mask = detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);

  // a^h_ij = softmax_j(<q_i, k_j> / sqrt(head_dim))
  auto [q, k] = attention_heads(wq_attn, wk_attn, x, h, n_kv_heads, key_dim, freqs_cos, freqs_sin,
                                rope);                             // [b, h, n, key_dim]
  auto scores = torch::matmul(q, k.transpose(2, 3)) * attn_scale;  // [b, h, n, n]
  scores = attn_dropout(torch::softmax(detail::apply_additive_mask(scores, mask), -1));

  // r_ijl = act(<qrel_il, krel_jl> / sqrt(rel_proj_dim))
  auto q_rel = wq_rel(x).view({b, n, n_relations, rel_proj_dim}).transpose(1, 2);
  auto k_rel = wk_rel(x).view({b, n, n_relations, rel_proj_dim}).transpose(1, 2);
  auto relations = rel_activation(torch::matmul(q_rel, k_rel.transpose(2, 3)) * rel_scale);
  relations = relations.permute({0, 2, 3, 1});  // [b, n, n, R]

  // sum_j a^h_ij s_j W_s^h + W_r^h sum_j a^h_ij r_ij
  auto sv = project_symbols(wv, symbols, n_kv_heads, head_dim, n_rep_kv);
  auto attended_symbols = attend_symbols(scores, sv, relative);  // [b, n, h, head_dim]
  auto attended_relations = torch::matmul(scores.transpose(1, 2), relations);  // [b, n, h, R]
  auto out = attended_symbols + torch::einsum("bihr,hdr->bihd", {attended_relations, wr});
  out = resid_dropout(wo(out.reshape({b, n, h * head_dim})));
  if (!need_weights) return {out, torch::Tensor(), torch::Tensor()};
  return {out, scores, relations};
}

// ---- RelationalCrossAttention -------------------------------------------------------------------

RelationalCrossAttentionImpl::RelationalCrossAttentionImpl(
    const RelationalCrossAttentionOptions& options_)
    : options(options_) {
  reset();
}

void RelationalCrossAttentionImpl::reset() {
  const auto& o = options;
  const auto heads = detail::resolve_heads("RelationalCrossAttention", o.d_model(), o.n_heads(),
                                           o.n_kv_heads(), o.total_n_heads(), o.dropout());
  n_kv_heads = heads.n_kv_heads;
  total_n_heads = heads.total_n_heads;
  head_dim = heads.head_dim;
  n_rep_kv = heads.n_rep_kv;
  activation = get_activation_function(o.activation(), "RelationalCrossAttention: activation");
  attn_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));

  const int64_t d = o.d_model(), h = o.n_heads();
  wq = register_module("wq", linear(d, h * head_dim, false));
  wk = register_module("wk", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wv = register_module("wv", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wo = register_module("wo", linear(h * head_dim, h * head_dim, o.add_bias_out()));
  attn_dropout = register_module("attn_dropout", torch::nn::Dropout(o.dropout()));
  resid_dropout = register_module("resid_dropout", torch::nn::Dropout(o.dropout()));
}

void RelationalCrossAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::RelationalCrossAttention(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", n_kv_heads=" << n_kv_heads
         << ", activation=" << options.activation()
         << ", use_relative_positional_symbols=" << options.use_relative_positional_symbols()
         << ")";
}

std::tuple<torch::Tensor, torch::Tensor> RelationalCrossAttentionImpl::forward(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin, const torch::Tensor& attn_mask, bool is_causal) {
  const char* owner = "RelationalCrossAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads();
  const bool relative = options.use_relative_positional_symbols();
  check_symbols(symbols, b, n, options.d_model(), relative, owner);
  const bool rope = detail::check_rope_inputs(freqs_cos, freqs_sin, n, head_dim, owner);
  const auto mask = detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);

  auto [q, k] = attention_heads(wq, wk, x, h, n_kv_heads, head_dim, freqs_cos, freqs_sin, rope);
  auto scores = torch::matmul(q, k.transpose(2, 3)) * attn_scale;  // [b, h, n, n]
  const bool softmax = options.activation() == "softmax";
  if (softmax) scores = detail::apply_additive_mask(scores, mask);
  scores = activation(scores);
  if (!softmax && mask.defined()) scores = scores * mask;
  scores = attn_dropout(scores);

  auto sv = project_symbols(wv, symbols, n_kv_heads, head_dim, n_rep_kv);
  auto out = attend_symbols(scores, sv, relative).reshape({b, n, h * head_dim});
  return {resid_dropout(wo(out)), scores};
}

// ---- DisentangledRelationalCrossAttention -------------------------------------------------------

DisentangledRelationalCrossAttentionImpl::DisentangledRelationalCrossAttentionImpl(
    const DisentangledRelationalCrossAttentionOptions& options_)
    : options(options_) {
  reset();
}

void DisentangledRelationalCrossAttentionImpl::reset() {
  const auto& o = options;
  const auto heads =
      detail::resolve_heads("DisentangledRelationalCrossAttention", o.d_model(), o.n_heads(),
                            o.n_kv_heads(), o.total_n_heads(), o.dropout());
  n_kv_heads = heads.n_kv_heads;
  total_n_heads = heads.total_n_heads;
  head_dim = heads.head_dim;
  n_rep_kv = heads.n_rep_kv;
  rel_activation = get_activation_function(o.rel_activation(),
                                           "DisentangledRelationalCrossAttention: rel_activation");
  attn_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));

  const int64_t d = o.d_model(), h = o.n_heads();
  wq_attn = register_module("wq_attn", linear(d, h * head_dim, false));
  wk_attn = register_module("wk_attn", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wq_rel = register_module("wq_rel", linear(d, h * head_dim, false));
  wk_rel = register_module("wk_rel", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wv = register_module("wv", linear(d, n_kv_heads * head_dim, o.add_bias_kv()));
  wo = register_module("wo", linear(h * head_dim, h * head_dim, o.add_bias_out()));
  attn_dropout = register_module("attn_dropout", torch::nn::Dropout(o.dropout()));
  resid_dropout = register_module("resid_dropout", torch::nn::Dropout(o.dropout()));
}

void DisentangledRelationalCrossAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::DisentangledRelationalCrossAttention(d_model=" << options.d_model()
         << ", n_heads=" << options.n_heads() << ", n_kv_heads=" << n_kv_heads
         << ", rel_activation=" << options.rel_activation()
         << ", use_relative_positional_symbols=" << options.use_relative_positional_symbols()
         << ")";
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>
DisentangledRelationalCrossAttentionImpl::forward(const torch::Tensor& x,
                                                  const torch::Tensor& symbols,
                                                  const torch::Tensor& freqs_cos,
                                                  const torch::Tensor& freqs_sin,
                                                  const torch::Tensor& attn_mask, bool is_causal) {
  const char* owner = "DisentangledRelationalCrossAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads();
  const bool relative = options.use_relative_positional_symbols();
  check_symbols(symbols, b, n, options.d_model(), relative, owner);
  const bool rope = detail::check_rope_inputs(freqs_cos, freqs_sin, n, head_dim, owner);
  const auto mask = detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);

  auto [q, k] =
      attention_heads(wq_attn, wk_attn, x, h, n_kv_heads, head_dim, freqs_cos, freqs_sin, rope);
  auto attn_scores = torch::matmul(q, k.transpose(2, 3)) * attn_scale;  // [b, h, n, n]
  attn_scores = torch::softmax(detail::apply_additive_mask(attn_scores, mask), -1);
  // RoPE applies to the attention pair only, as in the reference.
  auto [q_rel, k_rel] =
      attention_heads(wq_rel, wk_rel, x, h, n_kv_heads, head_dim, {}, {}, /*rope=*/false);
  auto rel_scores = rel_activation(torch::matmul(q_rel, k_rel.transpose(2, 3)) * attn_scale);
  auto rca_scores = attn_dropout(attn_scores * rel_scores);

  auto sv = project_symbols(wv, symbols, n_kv_heads, head_dim, n_rep_kv);
  auto out = attend_symbols(rca_scores, sv, relative).reshape({b, n, h * head_dim});
  return {resid_dropout(wo(out)), attn_scores, rel_scores};
}

}  // namespace dual_attention
