// The operators of include/dual_attention/ops.h: their checks, the choice of path, the symbolic
// attention, and their registration with the dispatcher. The relational paths' maths is in
// src/relational_attention.cpp (materialize) and src/relational_attention_fast.cpp (blockwise,
// sdpa).
#include "dual_attention/ops.h"

#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/library.h>

#include <algorithm>

#include "dual_attention/attention_utils.h"
#include "dual_attention/model_utils.h"

namespace dual_attention::ops {
namespace {

using torch::Tensor;
using Implementation = RelationalAttentionImplementation;

constexpr Implementation kImplementations[] = {Implementation::Auto, Implementation::Materialize,
                                               Implementation::Blockwise, Implementation::SDPA};

// `t` is defined, of `dim` dimensions; `layout` says which ("[b, n, h, key_dim]").
void check_layout(const Tensor& t, const char* op, const char* name, int64_t dim,
                  const char* layout) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is required, as ", layout);
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", layout, ", got shape ", t.sizes());
}

// `t` has q's dtype (a floating one) and device.
void check_like(const Tensor& t, const Tensor& q, const char* op, const char* name,
                const char* q_name) {
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": ", name, " must have the dtype of ",
              q_name, " (", q.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == q.device(), op, ": ", name, " must be on the device of ", q_name, " (",
              q.device(), "), got ", t.device());
}

// Every check of relational_attention's arguments. Returns the resolved boolean mask [n, m] (or
// undefined), not yet combined with is_causal.
Tensor check_relational_attention(const Tensor& q, const Tensor& k, const Tensor& q_rel,
                                  const Tensor& k_rel, const Tensor& sv, const Tensor& wr,
                                  const std::optional<Tensor>& attn_mask, bool is_causal,
                                  bool relative_symbols, double dropout_p, int64_t block_size) {
  const char* op = "relational_attention";
  check_layout(q, op, "q", 4, "[b, n, h, key_dim]");
  check_layout(k, op, "k", 4, "[b, m, g, key_dim]");
  check_layout(q_rel, op, "q_rel", 4, "[b, n, R, dr]");
  check_layout(k_rel, op, "k_rel", 4, "[b, m, R, dr]");
  check_layout(
      sv, op, "sv", 4,
      relative_symbols ? "[n, m, g, head_dim] (relative_symbols=true)" : "[b, m, g, head_dim]");
  check_layout(wr, op, "wr", 3, "[h, head_dim, R]");
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), op, ": q must have a floating dtype, got ",
              q.scalar_type());
  check_like(k, q, op, "k", "q");
  check_like(q_rel, q, op, "q_rel", "q");
  check_like(k_rel, q, op, "k_rel", "q");
  check_like(sv, q, op, "sv", "q");
  check_like(wr, q, op, "wr", "q");

  const int64_t b = q.size(0), n = q.size(1), h = q.size(2), key_dim = q.size(3);
  TORCH_CHECK(h > 0 && key_dim > 0, op,
              ": q must have at least one head and key_dim > 0, got shape ", q.sizes());
  const int64_t m = k.size(1), g = k.size(2);
  TORCH_CHECK(k.size(0) == b && k.size(3) == key_dim, op,
              ": k must be [b, m, g, key_dim] with b = ", b, " and key_dim = ", key_dim,
              " as in q, got shape ", k.sizes());
  TORCH_CHECK(g > 0 && h % g == 0, op, ": k's kv heads g (", g, ") must divide q's heads h (", h,
              "), got k of shape ", k.sizes());
  const int64_t R = q_rel.size(2), dr = q_rel.size(3);
  TORCH_CHECK(q_rel.size(0) == b && q_rel.size(1) == n && R > 0 && dr > 0, op,
              ": q_rel must be [b, n, R, dr] with b = ", b, " and n = ", n,
              " as in q and R, dr > 0, got shape ", q_rel.sizes());
  TORCH_CHECK(k_rel.sizes() == at::IntArrayRef({b, m, R, dr}), op,
              ": k_rel must be [b, m, R, dr] = [", b, ", ", m, ", ", R, ", ", dr,
              "] (b, m from k; R, dr from q_rel), got shape ", k_rel.sizes());
  const int64_t head_dim = sv.size(3);
  if (relative_symbols) {
    TORCH_CHECK(sv.size(0) == n && sv.size(1) == m && sv.size(2) == g && head_dim > 0, op,
                ": with relative_symbols, sv must be [n, m, g, head_dim] = [", n, ", ", m, ", ", g,
                ", head_dim] (one symbol per pair of positions), got shape ", sv.sizes());
  } else {
    TORCH_CHECK(sv.size(0) == b && sv.size(1) == m && sv.size(2) == g && head_dim > 0, op,
                ": sv must be [b, m, g, head_dim] = [", b, ", ", m, ", ", g,
                ", head_dim] like k, got shape ", sv.sizes());
  }
  TORCH_CHECK(wr.sizes() == at::IntArrayRef({h, head_dim, R}), op,
              ": wr must be [h, head_dim, R] = [", h, ", ", head_dim, ", ", R, "], got shape ",
              wr.sizes());

  TORCH_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, op, ": dropout_p must be in [0, 1], got ",
              dropout_p);
  TORCH_CHECK(block_size > 0, op, ": block_size must be positive, got ", block_size);
  if (!attn_mask.has_value() || !attn_mask->defined()) return {};
  const Tensor& mask = *attn_mask;
  TORCH_CHECK(!is_causal, op,
              ": attn_mask and is_causal=true were both given; pass one of them (is_causal builds "
              "the causal mask itself)");
  TORCH_CHECK(mask.scalar_type() == torch::kBool, op,
              ": attn_mask must be a boolean tensor (True = may attend), got dtype ",
              mask.scalar_type());
  const bool broadcastable = mask.dim() <= 2 &&
                             (mask.dim() < 1 || mask.size(-1) == 1 || mask.size(-1) == m) &&
                             (mask.dim() < 2 || mask.size(0) == 1 || mask.size(0) == n);
  TORCH_CHECK(broadcastable, op, ": attn_mask must be broadcastable to [n, m] = [", n, ", ", m,
              "], got shape ", mask.sizes());
  return mask.to(q.device()).expand({n, m});
}

}  // namespace

std::ostream& operator<<(std::ostream& stream, RelationalAttentionImplementation implementation) {
  switch (implementation) {
    case Implementation::Auto:
      return stream << "auto";
    case Implementation::Materialize:
      return stream << "materialize";
    case Implementation::Blockwise:
      return stream << "blockwise";
    case Implementation::SDPA:
      return stream << "sdpa";
  }
  return stream << "unknown";
}

RelationalAttentionImplementation parse_relational_attention_implementation(
    std::string_view name, std::string_view owner) {
  for (auto implementation : kImplementations) {
    if (c10::str(implementation) == name) return implementation;
  }
  TORCH_CHECK(false, owner,
              ": implementation must be one of 'auto', 'materialize', 'blockwise', 'sdpa', got '",
              name, "'");
}

bool is_traced(const torch::Tensor& t) {
  return t.key_set().has(c10::DispatchKey::Python) || c10::impl::dispatch_mode_enabled() ||
         t.is_meta();
}

RelationalAttentionImplementation resolve_relational_attention_path(
    RelationalAttentionImplementation requested, const RelationalAttentionPathInputs& in) {
  // Without weights to return, nothing n x m needs to exist; an empty input has nothing to save
  // either way.
  if (in.need_weights || in.batch == 0 || in.n_queries == 0 || in.n_keys == 0)
    return Implementation::Materialize;
  if (requested != Implementation::Auto) return requested;
  // A trace keeps the blockwise path as its two opaque operators (it reads no data and runs none
  // of their small block operators), but would freeze the seed of its dropout masks.
  if (in.traced && in.dropout_p > 0) return Implementation::Materialize;
  // SDPA needs a fused kernel that takes values wider than keys: CUDA's, not the CPU's.
  if (in.rel_activation == "identity" && !in.relative_symbols && in.device.is_cuda() &&
      in.dtype != torch::kDouble && !in.has_mask)
    return Implementation::SDPA;
  if (in.n_keys != in.n_queries) return Implementation::Materialize;
  // On the CPU, short sequences are cheaper materialised: the blocks' fixed costs (custom
  // autograd, recomputation, the parallel region) outweigh n x n tensors this small.
  const int64_t n = in.n_queries;
  const bool small =
      in.device.is_cpu() && n <= kMaterializeMaxLength &&
      in.batch * std::max(in.n_heads, in.n_relations) * n * n <= kMaterializeMaxElements;
  return small ? Implementation::Materialize : Implementation::Blockwise;
}

RelationalAttentionImplementation relational_attention_path(
    RelationalAttentionImplementation requested, const torch::Tensor& q, const torch::Tensor& k,
    const torch::Tensor& q_rel, bool has_mask, bool relative_symbols,
    std::string_view rel_activation, bool need_weights, double dropout_p) {
  RelationalAttentionPathInputs in;
  in.device = q.device();
  in.dtype = q.scalar_type();
  in.batch = q.size(0);
  in.n_queries = q.size(1);
  in.n_keys = k.size(1);
  in.n_heads = q.size(2);
  in.n_relations = q_rel.size(2);
  in.rel_activation = std::string(rel_activation);
  in.relative_symbols = relative_symbols;
  in.has_mask = has_mask;
  in.need_weights = need_weights;
  in.traced = is_traced(q);
  in.dropout_p = dropout_p;
  return resolve_relational_attention_path(requested, in);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> relational_attention(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& q_rel,
    const torch::Tensor& k_rel, const torch::Tensor& sv, const torch::Tensor& wr,
    const std::optional<torch::Tensor>& attn_mask, bool is_causal, bool relative_symbols,
    std::string_view rel_activation, double dropout_p, bool need_weights,
    std::string_view implementation, int64_t block_size) {
  const char* op = "relational_attention";
  const auto mask = check_relational_attention(q, k, q_rel, k_rel, sv, wr, attn_mask, is_causal,
                                               relative_symbols, dropout_p, block_size);
  const std::string activation(rel_activation);
  get_activation(activation, "relational_attention: rel_activation");  // a known name
  const auto path = relational_attention_path(
      parse_relational_attention_implementation(implementation, op), q, k, q_rel, mask.defined(),
      relative_symbols, activation, need_weights, dropout_p);
  const int64_t n = q.size(1), m = k.size(1);

  Tensor heads, scores, relations;  // [b, n, h, head_dim], [b, h, n, m], [b, n, m, R]
  switch (path) {
    case Implementation::Blockwise:
      TORCH_CHECK(m == n, op, ": the blockwise implementation needs as many keys as queries, got ",
                  n, " queries (q) and ", m, " keys (k)");
      heads = relational_attention_blockwise(q, k, q_rel, k_rel, sv, wr, mask, is_causal,
                                             relative_symbols, activation, dropout_p, block_size);
      break;
    case Implementation::SDPA:  // identity relations and per-position symbols, or an error
      heads = relational_attention_sdpa(q, k, q_rel, k_rel, sv, wr, mask, is_causal,
                                        relative_symbols, activation, dropout_p);
      break;
    default: {
      const auto full_mask = is_causal ? detail::causal_mask(n, m, 0, q.device()) : mask;
      std::tie(heads, scores, relations) = relational_attention_materialize(
          q, k, q_rel, k_rel, sv, wr, full_mask, relative_symbols, activation, dropout_p);
    }
  }
  if (!need_weights) return {heads, at::empty({0}, q.options()), at::empty({0}, q.options())};
  return {heads, scores, relations};
}

torch::Tensor symbolic_attention(const torch::Tensor& query, const torch::Tensor& template_features,
                                 const torch::Tensor& symbol_library, int64_t n_heads,
                                 double dropout_p, std::optional<double> scale) {
  const char* op = "symbolic_attention";
  check_layout(query, op, "query", 3, "[b, n, d]");
  check_layout(template_features, op, "template_features", 2, "[n_symbols, d]");
  check_layout(symbol_library, op, "symbol_library", 2, "[n_symbols, d]");
  const int64_t b = query.size(0), n = query.size(1), d = query.size(2);
  TORCH_CHECK(n_heads > 0 && d % n_heads == 0, op, ": n_heads must be positive and divide d = ", d,
              " (query's last dimension), got ", n_heads);
  const int64_t n_s = template_features.size(0), head_dim = d / n_heads;
  TORCH_CHECK(n_s > 0 && template_features.size(1) == d, op,
              ": template_features must be [n_symbols, d] with n_symbols > 0 and d = ", d,
              " as in query, got shape ", template_features.sizes());
  TORCH_CHECK(symbol_library.sizes() == template_features.sizes(), op,
              ": symbol_library must be [n_symbols, d] = ", template_features.sizes(),
              " like template_features, got shape ", symbol_library.sizes());
  TORCH_CHECK(at::isFloatingType(query.scalar_type()), op,
              ": query must have a floating dtype, got ", query.scalar_type());
  check_like(template_features, query, op, "template_features", "query");
  check_like(symbol_library, query, op, "symbol_library", "query");
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, op, ": dropout_p must be in [0, 1], got ",
              dropout_p);

  // Per head: [b, h, n, head_dim] queries against the library's [n_s, head_dim] blocks, which the
  // batch shares (a broadcast view, not a copy).
  auto per_head = [&](const Tensor& t) {
    return t.view({n_s, n_heads, head_dim})
        .transpose(0, 1)
        .unsqueeze(0)
        .expand({b, n_heads, n_s, head_dim});
  };
  auto q = query.reshape({b, n, n_heads, head_dim}).transpose(1, 2);  // [b, h, n, head_dim]
  auto out = at::scaled_dot_product_attention(q, per_head(template_features),
                                              per_head(symbol_library), std::nullopt, dropout_p,
                                              /*is_causal=*/false, scale);
  return out.transpose(1, 2).reshape({b, n, d});  // [b, n, d]
}

}  // namespace dual_attention::ops

// The schemas, and the kernels: CompositeImplicitAutograd, so that autograd comes from the ATen
// operators inside and meta / fake tensors trace through them.
TORCH_LIBRARY(dual_attention, m) {
  m.def(
      "relational_attention(Tensor q, Tensor k, Tensor q_rel, Tensor k_rel, Tensor sv, Tensor wr, "
      "Tensor? attn_mask, bool is_causal, bool relative_symbols, str rel_activation, "
      "float dropout_p, bool need_weights, str implementation, int block_size) "
      "-> (Tensor, Tensor, Tensor)");
  // The blockwise path's forward and backward (src/relational_attention_fast.cpp), internal:
  // relational_attention(implementation='blockwise') calls them. Row-major outputs [n, b * h, w]:
  // attended symbols (v) or relative symbols, and attended relations.
  m.def(
      "relational_attention_blockwise_forward(Tensor q, Tensor k, Tensor? v, Tensor? symbols, "
      "Tensor q_rel, Tensor k_rel, Tensor? mask, bool is_causal, float attn_scale, "
      "float rel_scale, str rel_activation, float dropout_p, int seed, int block_size) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "relational_attention_blockwise_backward(Tensor? grad_out_v, Tensor? grad_out_s, "
      "Tensor? grad_out_r, Tensor q, Tensor k, Tensor? v, Tensor? symbols, Tensor q_rel, "
      "Tensor k_rel, Tensor? mask, Tensor out_v, Tensor out_s, Tensor out_r, bool is_causal, "
      "float attn_scale, float rel_scale, str rel_activation, float dropout_p, int seed, "
      "int block_size, bool want_v, bool want_symbols) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "symbolic_attention(Tensor query, Tensor template_features, Tensor symbol_library, "
      "int n_heads, float dropout_p, float? scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(dual_attention, CompositeImplicitAutograd, m) {
  m.impl("relational_attention", &dual_attention::ops::relational_attention);
  m.impl("symbolic_attention", &dual_attention::ops::symbolic_attention);
}
