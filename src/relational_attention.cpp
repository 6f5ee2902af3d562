#include "dual_attention/relational_attention.h"

#include <algorithm>
#include <cmath>

#include "dual_attention/attention_utils.h"
#include "dual_attention/ops.h"
#include "head_layout.h"

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

// W_s s split into kv heads: [b, n, g, head_dim], or [n, n, g, head_dim] when relative.
torch::Tensor project_symbols(torch::nn::Linear& wv, const torch::Tensor& symbols,
                              int64_t n_kv_heads, int64_t head_dim) {
  auto sv = wv(symbols);
  return sv.view({sv.size(0), sv.size(1), n_kv_heads, head_dim});
}

// <q_i, k_j> * scale for every query head: q [b, n, h, dim], k [b, m, g, dim] -> [b, h, n, m].
// Query head hh reads kv head hh / (h / g): the heads of a group share one matmul, so the keys are
// never repeated.
torch::Tensor grouped_scores(const torch::Tensor& q, const torch::Tensor& k, double scale) {
  const int64_t b = q.size(0), n = q.size(1), h = q.size(2), m = k.size(1), g = k.size(2);
  auto qg = q.reshape({b, n, g, h / g, q.size(3)})
                .permute({0, 2, 3, 1, 4})
                .reshape({b, g, h / g * n, q.size(3)});
  return torch::matmul(qg, k.permute({0, 2, 3, 1})).mul_(scale).view({b, h, n, m});
}

// sum_j scores[b, h, i, j] sv[b, j, g(h), :] (or sv[i, j, g(h), :] when relative) -> [b, n, h, hd].
torch::Tensor attend_symbols(const torch::Tensor& scores, const torch::Tensor& sv, bool relative) {
  const int64_t b = scores.size(0), h = scores.size(1), n = scores.size(2), m = scores.size(3);
  const int64_t g = sv.size(2), hd = sv.size(3);
  if (relative) return torch::einsum("bhij,ijhd->bihd", {scores, repeat_kv(sv, h / g)});
  auto out = torch::matmul(scores.reshape({b, g, h / g * n, m}), sv.transpose(1, 2));
  return out.view({b, h, n, hd}).transpose(1, 2);
}

// The keys' symbols of a cached step: W_s s_j appended to the cache, or, with relative symbols, the
// rows W_s s_ij = (W_s table)[clip(j - i, -M, M) + M] of the projected table (projected once per
// cache): [b, start + t, g, hd] or [t, start + t, g, hd].
torch::Tensor cached_symbols(torch::nn::Linear& wv, const torch::Tensor& symbols, bool relative,
                             int64_t n_kv_heads, int64_t head_dim, int64_t t, LayerCache& cache,
                             const CacheStep& step, const char* owner) {
  if (!relative)
    return detail::cache_append(cache.sv, project_symbols(wv, symbols, n_kv_heads, head_dim), step);
  TORCH_CHECK(symbols.defined() && symbols.dim() == 2 && symbols.size(0) % 2 == 1, owner,
              ": when decoding with relative positional symbols, symbols must be the symbol table "
              "[2 * max_rel_pos + 1, d_model], got ",
              symbols.defined() ? c10::str("shape ", symbols.sizes()) : "nothing");
  if (!cache.sv_table.defined()) {
    cache.sv_table = wv(symbols).view({symbols.size(0), n_kv_heads, head_dim});
  }
  const int64_t max_rel_pos = (symbols.size(0) - 1) / 2, end = step.start + t;
  auto idx = torch::dtype(torch::kLong).device(symbols.device());
  auto offsets =
      torch::arange(end, idx).unsqueeze(0) - torch::arange(step.start, end, idx).unsqueeze(1);
  return cache.sv_table.index({offsets.clamp(-max_rel_pos, max_rel_pos) + max_rel_pos});
}

// The mask of a cached step, broadcastable to [b, 1, t, start + t] (undefined: none).
torch::Tensor step_mask(const CacheStep& step, int64_t t, torch::Device device) {
  return step.causal ? detail::causal_mask(t, t, 0, device) : step.mask;
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
  detail::resolve_module_heads(*this, owner);
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
  TORCH_CHECK(block_size > 0, owner, ": block_size must be positive, got ", block_size);
}

RelationalAttentionImpl::Projections RelationalAttentionImpl::project(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin) {
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads(), R = n_relations;
  Projections p;
  p.q = wq_attn(x).view({b, n, h, key_dim});
  p.k = wk_attn(x).view({b, n, n_kv_heads, key_dim});
  if (freqs_cos.defined()) std::tie(p.q, p.k) = apply_rotary_emb(p.q, p.k, freqs_cos, freqs_sin);
  p.q_rel = wq_rel(x).view({b, n, R, rel_proj_dim});
  p.k_rel = options.symmetric_rels() ? p.q_rel : wk_rel(x).view({b, n, R, rel_proj_dim});
  if (symbols.defined()) p.sv = project_symbols(wv, symbols, n_kv_heads, head_dim);
  return p;
}

double RelationalAttentionImpl::attention_dropout() const {
  return attn_dropout->is_training() ? attn_dropout->options.p() : 0.0;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> RelationalAttentionImpl::forward(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin, const torch::Tensor& attn_mask, bool is_causal,
    bool need_weights) {
  const char* owner = "RelationalAttention";
  check_inputs(x, symbols);
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads();
  detail::check_rope_inputs(freqs_cos, freqs_sin, n, key_dim, owner);
  // The module's own mask errors ([n, n] exactly), before the operator's.
  if (attn_mask.defined()) detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);
  const bool relative = options.use_relative_positional_symbols();

  const auto p = project(x, symbols, freqs_cos, freqs_sin);
  std::optional<torch::Tensor> mask;
  if (attn_mask.defined()) mask = attn_mask;
  // The attention itself (its formula and paths: ops.h), heads [b, n, h, head_dim].
  auto [heads, scores, relations] = ops::relational_attention(
      p.q, p.k, p.q_rel, p.k_rel, p.sv, wr, mask, is_causal, relative, options.rel_activation(),
      attention_dropout(), need_weights, c10::str(implementation), block_size);
  last_implementation =
      ops::relational_attention_path(implementation, p.q, p.k, p.q_rel, attn_mask.defined(),
                                     relative, options.rel_activation(), need_weights);
  auto out = resid_dropout(wo(heads.reshape({b, n, h * head_dim})));  // [b, n, d_out]
  if (!need_weights) return {out, torch::Tensor(), torch::Tensor()};
  return {out, scores, relations};
}

torch::Tensor RelationalAttentionImpl::forward_cached(const torch::Tensor& x,
                                                      const torch::Tensor& symbols,
                                                      const torch::Tensor& freqs_cos,
                                                      const torch::Tensor& freqs_sin,
                                                      LayerCache& cache, const CacheStep& step) {
  const char* owner = "RelationalAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), t = x.size(1), h = options.n_heads();
  const bool relative = options.use_relative_positional_symbols();
  if (!relative) check_symbols(symbols, b, t, options.d_model(), false, owner);

  auto p = project(x, /*symbols=*/{}, freqs_cos, freqs_sin);
  p.k = detail::cache_append(cache.k, p.k, step);              // [b, T, g, key_dim]
  p.k_rel = detail::cache_append(cache.k_rel, p.k_rel, step);  // [b, T, R, rel_proj_dim]
  p.sv = cached_symbols(wv, symbols, relative, n_kv_heads, head_dim, t, cache, step, owner);
  // A long prompt (a causal prefill: T = t) takes the memory-linear path; the rest materialise,
  // with the step's mask.
  const auto path = ops::relational_attention_path(implementation, p.q, p.k, p.q_rel, false,
                                                   relative, options.rel_activation(), false);
  last_implementation = step.causal && path == Implementation::Blockwise
                            ? Implementation::Blockwise
                            : Implementation::Materialize;
  const auto& act = options.rel_activation();
  torch::Tensor heads;  // [b, t, h, head_dim]
  if (last_implementation == Implementation::Blockwise) {
    heads = ops::relational_attention_blockwise(p.q, p.k, p.q_rel, p.k_rel, p.sv, wr, {},
                                                /*is_causal=*/true, relative, act, 0.0, block_size);
  } else {
    heads = std::get<0>(ops::relational_attention_materialize(
        p.q, p.k, p.q_rel, p.k_rel, p.sv, wr, step_mask(step, t, x.device()), relative, act, 0.0));
  }
  return wo(heads.reshape({b, t, h * head_dim}));
}

// The materialising path of ops::relational_attention (the formula: ops.h).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> ops::relational_attention_materialize(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& q_rel,
    const torch::Tensor& k_rel, const torch::Tensor& sv, const torch::Tensor& wr,
    const torch::Tensor& mask, bool relative_symbols, const std::string& rel_activation,
    double dropout_p) {
  const double attn_scale = 1.0 / std::sqrt(static_cast<double>(sv.size(-1)));
  const double rel_scale = 1.0 / std::sqrt(static_cast<double>(q_rel.size(-1)));
  // a^h_ij = softmax_j(<q_i, k_j> / sqrt(head_dim))
  auto scores = grouped_scores(q, k, attn_scale);  // [b, h, n, m]
  scores = torch::softmax(detail::apply_additive_mask(scores, mask), -1);
  if (dropout_p > 0) scores = torch::dropout(scores, dropout_p, /*train=*/true);
  // r_ijl = act(<qrel_il, krel_jl> / sqrt(dr))
  const auto& act = get_activation(rel_activation, "relational_attention: rel_activation").forward;
  auto relations =
      act(torch::matmul(q_rel.transpose(1, 2), k_rel.permute({0, 2, 3, 1})) * rel_scale)
          .permute({0, 2, 3, 1});  // [b, n, m, R]
  // A_i^h = sum_j a^h_ij sv_j + W_r^h sum_j a^h_ij r_ij
  auto attended_symbols = attend_symbols(scores, sv, relative_symbols);        // [b, n, h, hd]
  auto attended_relations = torch::matmul(scores.transpose(1, 2), relations);  // [b, n, h, R]
  auto heads = attended_symbols + torch::einsum("bihr,hdr->bihd", {attended_relations, wr});
  return {heads, scores, relations};
}

// ---- RelationalCrossAttention -------------------------------------------------------------------

RelationalCrossAttentionImpl::RelationalCrossAttentionImpl(
    const RelationalCrossAttentionOptions& options_)
    : options(options_) {
  reset();
}

void RelationalCrossAttentionImpl::reset() {
  const auto& o = options;
  detail::resolve_module_heads(*this, "RelationalCrossAttention");
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

namespace {

// RCA's A_i = sum_j act(<q_i, k_j> / sqrt(head_dim)) W_v s_j over q [b, n, h, hd], k [b, m, g, hd],
// sv as attend_symbols takes it. With softmax the mask adds -inf before it; another activation
// zeroes masked scores after it. Returns (heads [b, n, h, hd], scores [b, h, n, m]).
std::tuple<torch::Tensor, torch::Tensor> attend_rca(RelationalCrossAttentionImpl& m,
                                                    const torch::Tensor& q, const torch::Tensor& k,
                                                    const torch::Tensor& sv,
                                                    const torch::Tensor& mask) {
  auto scores = grouped_scores(q, k, m.attn_scale);  // [b, h, n, m]
  const bool softmax = m.options.activation() == "softmax";
  if (softmax) scores = detail::apply_additive_mask(scores, mask);
  scores = m.activation(scores);
  if (!softmax && mask.defined()) scores = scores * mask;
  scores = m.attn_dropout(scores);
  return {attend_symbols(scores, sv, m.options.use_relative_positional_symbols()), scores};
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> RelationalCrossAttentionImpl::forward(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin, const torch::Tensor& attn_mask, bool is_causal) {
  const char* owner = "RelationalCrossAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads();
  check_symbols(symbols, b, n, options.d_model(), options.use_relative_positional_symbols(), owner);
  const bool rope = detail::check_rope_inputs(freqs_cos, freqs_sin, n, head_dim, owner);
  const auto mask = detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);

  auto q = wq(x).view({b, n, h, head_dim});
  auto k = wk(x).view({b, n, n_kv_heads, head_dim});
  if (rope) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  auto sv = project_symbols(wv, symbols, n_kv_heads, head_dim);
  auto [heads, scores] = attend_rca(*this, q, k, sv, mask);
  return {resid_dropout(wo(heads.reshape({b, n, h * head_dim}))), scores};
}

torch::Tensor RelationalCrossAttentionImpl::forward_cached(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin, LayerCache& cache, const CacheStep& step) {
  const char* owner = "RelationalCrossAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), t = x.size(1), h = options.n_heads();
  const bool relative = options.use_relative_positional_symbols();
  if (!relative) check_symbols(symbols, b, t, options.d_model(), false, owner);
  auto q = wq(x).view({b, t, h, head_dim});
  auto k = wk(x).view({b, t, n_kv_heads, head_dim});
  if (freqs_cos.defined()) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  k = detail::cache_append(cache.k, k, step);
  auto sv = cached_symbols(wv, symbols, relative, n_kv_heads, head_dim, t, cache, step, owner);
  auto heads = std::get<0>(attend_rca(*this, q, k, sv, step_mask(step, t, x.device())));
  return wo(heads.reshape({b, t, h * head_dim}));
}

// ---- DisentangledRelationalCrossAttention -------------------------------------------------------

DisentangledRelationalCrossAttentionImpl::DisentangledRelationalCrossAttentionImpl(
    const DisentangledRelationalCrossAttentionOptions& options_)
    : options(options_) {
  reset();
}

void DisentangledRelationalCrossAttentionImpl::reset() {
  const auto& o = options;
  detail::resolve_module_heads(*this, "DisentangledRelationalCrossAttention");
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

namespace {

// disrca's A_i = sum_j softmax_j(<q_i, k_j>) act(<qrel_i, krel_j>) W_v s_j, both inner products
// scaled by 1/sqrt(head_dim); q, q_rel [b, n, h, hd], k, k_rel [b, m, g, hd]. Returns
// (heads [b, n, h, hd], attn_scores, rel_scores [b, h, n, m]).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> attend_disrca(
    DisentangledRelationalCrossAttentionImpl& m, const torch::Tensor& q, const torch::Tensor& k,
    const torch::Tensor& q_rel, const torch::Tensor& k_rel, const torch::Tensor& sv,
    const torch::Tensor& mask) {
  auto attn_scores = grouped_scores(q, k, m.attn_scale);  // [b, h, n, m]
  attn_scores = torch::softmax(detail::apply_additive_mask(attn_scores, mask), -1);
  auto rel_scores = m.rel_activation(grouped_scores(q_rel, k_rel, m.attn_scale));
  auto rca_scores = m.attn_dropout(attn_scores * rel_scores);
  auto heads = attend_symbols(rca_scores, sv, m.options.use_relative_positional_symbols());
  return {heads, attn_scores, rel_scores};
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>
DisentangledRelationalCrossAttentionImpl::forward(const torch::Tensor& x,
                                                  const torch::Tensor& symbols,
                                                  const torch::Tensor& freqs_cos,
                                                  const torch::Tensor& freqs_sin,
                                                  const torch::Tensor& attn_mask, bool is_causal) {
  const char* owner = "DisentangledRelationalCrossAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), n = x.size(1), h = options.n_heads(), g = n_kv_heads;
  check_symbols(symbols, b, n, options.d_model(), options.use_relative_positional_symbols(), owner);
  const bool rope = detail::check_rope_inputs(freqs_cos, freqs_sin, n, head_dim, owner);
  const auto mask = detail::resolve_attn_mask(attn_mask, is_causal, n, n, x.device(), owner);

  auto q = wq_attn(x).view({b, n, h, head_dim});
  auto k = wk_attn(x).view({b, n, g, head_dim});
  // RoPE applies to the attention pair only, as in the reference.
  if (rope) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  auto q_rel = wq_rel(x).view({b, n, h, head_dim});
  auto k_rel = wk_rel(x).view({b, n, g, head_dim});
  auto sv = project_symbols(wv, symbols, g, head_dim);
  auto [heads, attn_scores, rel_scores] = attend_disrca(*this, q, k, q_rel, k_rel, sv, mask);
  return {resid_dropout(wo(heads.reshape({b, n, h * head_dim}))), attn_scores, rel_scores};
}

torch::Tensor DisentangledRelationalCrossAttentionImpl::forward_cached(
    const torch::Tensor& x, const torch::Tensor& symbols, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin, LayerCache& cache, const CacheStep& step) {
  const char* owner = "DisentangledRelationalCrossAttention";
  detail::check_sequence_input(x, options.d_model(), owner, "x");
  const int64_t b = x.size(0), t = x.size(1), h = options.n_heads(), g = n_kv_heads;
  const bool relative = options.use_relative_positional_symbols();
  if (!relative) check_symbols(symbols, b, t, options.d_model(), false, owner);
  auto q = wq_attn(x).view({b, t, h, head_dim});
  auto k = wk_attn(x).view({b, t, g, head_dim});
  if (freqs_cos.defined()) std::tie(q, k) = apply_rotary_emb(q, k, freqs_cos, freqs_sin);
  k = detail::cache_append(cache.k, k, step);
  auto q_rel = wq_rel(x).view({b, t, h, head_dim});
  auto k_rel = detail::cache_append(cache.k_rel, wk_rel(x).view({b, t, g, head_dim}), step);
  auto sv = cached_symbols(wv, symbols, relative, g, head_dim, t, cache, step, owner);
  auto heads =
      std::get<0>(attend_disrca(*this, q, k, q_rel, k_rel, sv, step_mask(step, t, x.device())));
  return wo(heads.reshape({b, t, h * head_dim}));
}

// ---- lookup helpers
// ------------------------------------------------------------------------------

std::vector<RelationalAttentionImpl*> relational_attention_layers(torch::nn::Module& module) {
  std::vector<RelationalAttentionImpl*> found;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* ra = dynamic_cast<RelationalAttentionImpl*>(m.get())) found.push_back(ra);
  }
  return found;
}

}  // namespace dual_attention
