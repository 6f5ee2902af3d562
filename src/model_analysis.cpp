#include "dual_attention/model_analysis.h"

#include <cmath>

#include "dual_attention/symbol_retrieval.h"

namespace dual_attention {
namespace {

// idx must be [b, n] integer ids in [0, vocab_size) with n <= max_block_size; returns them as
// int64 (what Embedding takes).
torch::Tensor checked_token_ids(const torch::Tensor& idx, int64_t vocab_size,
                                int64_t max_block_size, const char* owner) {
  TORCH_CHECK(idx.defined() && idx.dim() == 2 && idx.numel() > 0, owner,
              ": idx must be token ids of shape [batch, seq_len], got ",
              idx.defined() ? c10::str("shape ", idx.sizes()) : "an undefined tensor");
  TORCH_CHECK(c10::isIntegralType(idx.scalar_type(), /*includeBool=*/false), owner,
              ": idx must hold integer token ids, got dtype ", idx.scalar_type());
  TORCH_CHECK(idx.size(1) <= max_block_size, owner, ": idx has length ", idx.size(1),
              ", which exceeds max_block_size ", max_block_size);
  const auto [lo, hi] = torch::aminmax(idx);
  TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < vocab_size, owner,
              ": token ids must be in [0, ", vocab_size, "), got ids from ", lo.item<int64_t>(),
              " to ", hi.item<int64_t>());
  return idx.to(torch::kLong);
}

// The token embedding plus the learned positions, or the RoPE angles of the first n positions.
template <class Model>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> embed(Model& model,
                                                              const torch::Tensor& ids) {
  const int64_t n = ids.size(1);
  auto x = model.token_embedder(ids);  // [b, n, d_model]
  torch::Tensor cos, sin;              // [n, head_dim / 2]
  if (model.positional_embedder) {
    x = x + model.positional_embedder(torch::arange(n, ids.options()));
  } else {
    cos = model.freqs_cos.slice(0, 0, n);
    sin = model.freqs_sin.slice(0, 0, n);
  }
  return {x, cos, sin};
}

// softmax(q_proj(x)_h F_h^T * scale) over the symbols, per head: [b, n_heads, n, n_symbols].
torch::Tensor symbolic_attention_weights(SymbolicAttentionImpl& retriever, const torch::Tensor& x) {
  const auto& o = retriever.options;
  const int64_t b = x.size(0), n = x.size(1), h = o.n_heads(), head_dim = o.d_model() / h;
  const double scale = o.scale().value_or(
      1.0 / std::sqrt(static_cast<double>(o.d_model()) / static_cast<double>(h)));
  auto query = retriever.q_proj(x).view({b, n, h, head_dim}).transpose(1, 2);  // [b, h, n, hd]
  auto keys = retriever.template_features.view({o.n_symbols(), h, head_dim})
                  .permute({1, 2, 0});                            // [h, hd, n_symbols]
  return torch::softmax(torch::matmul(query, keys) * scale, -1);  // [b, h, n, n_symbols]
}

// What RelationalSymbolicAttention feeds its inner SymbolicAttention: model_dim_proj of the
// softmax-normalised relations of each position with its neighbours (as its forward computes).
torch::Tensor relational_symbolic_attention_input(RelationalSymbolicAttentionImpl& retriever,
                                                  const torch::Tensor& x) {
  const auto& o = retriever.options;
  const int64_t b = x.size(0), n = x.size(1), h = o.rel_n_heads(), head_dim = o.d_model() / h;
  auto query = retriever.q_proj(x).view({b, n, h, head_dim}).transpose(1, 2);  // [b, h, n, hd]
  auto key = retriever.k_proj(x).view({b, n, h, head_dim}).transpose(1, 2);    // [b, h, n, hd]
  auto neighbors = o.causal_nbhd() ? RelationalSymbolicAttentionImpl::compute_causal_neighbor_mask(
                                         n, o.nbhd_delta(), o.include_self(), x.device())
                                   : RelationalSymbolicAttentionImpl::compute_neighbor_mask(
                                         n, o.nbhd_delta(), o.include_self(), x.device());
  using torch::indexing::Slice;
  auto neighbor_keys = key.index({Slice(), Slice(), neighbors});          // [b, h, n, D, hd]
  auto rels = torch::einsum("bhid,bhijd->bhij", {query, neighbor_keys});  // [b, h, n, D]
  if (o.normalize_rels()) rels = torch::softmax(rels * retriever.rel_scale, -1);
  rels = rels.permute({0, 2, 3, 1}).contiguous().view({b, n, retriever.nbhd_rel_dim});
  return retriever.model_dim_proj(rels);  // [b, n, d_model]
}

// An EncoderBlock's forward that also returns its attention weights [b, n_heads, n, n].
std::tuple<torch::Tensor, torch::Tensor> encoder_block_forward_get_weights(
    EncoderBlockImpl& block, const torch::Tensor& x, const torch::Tensor& freqs_cos,
    const torch::Tensor& freqs_sin) {
  torch::Tensor scores;
  auto attend = [&](const torch::Tensor& h) {
    auto [out, weights] = block.self_attn->forward(h, h, h, freqs_cos, freqs_sin, {},
                                                   block.options.causal(), /*need_weights=*/true);
    scores = weights;
    return block.dropout(out);
  };
  auto out = detail::encoder_residuals(x, block.options.norm_first(), attend, block.ff_block,
                                       block.norm1, block.norm2, block.dropout);
  return {out, scores};
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> symbolic_attn_forward_get_weights(
    torch::nn::AnyModule& retriever, const torch::Tensor& x) {
  TORCH_CHECK(!retriever.is_empty(), "symbolic_attn_forward_get_weights: retriever is empty");
  auto symbols = retriever.forward(x);
  auto* module = retriever.ptr().get();
  if (auto* symbolic = module->as<SymbolicAttention>()) {
    return {symbols, symbolic_attention_weights(*symbolic, x)};
  }
  if (auto* relational = module->as<RelationalSymbolicAttention>()) {
    auto input = relational_symbolic_attention_input(*relational, x);
    return {symbols, symbolic_attention_weights(*relational->symbolic_attention, input)};
  }
  return {symbols, torch::Tensor()};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> block_forward_get_weights(
    DualAttnEncoderBlockImpl& block, const torch::Tensor& x, const torch::Tensor& symbols,
    const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin) {
  torch::Tensor sa_attn_scores, ra_attn_scores, ra_rels;
  auto attend = [&](const torch::Tensor& h) {
    auto [out, sa_scores, ra_scores] =
        block.dual_attn->forward(h, symbols, {}, block.options.causal(), freqs_cos, freqs_sin,
                                 /*need_weights=*/true);
    sa_attn_scores = sa_scores;
    if (!ra_scores.empty()) ra_attn_scores = ra_scores[0];
    if (ra_scores.size() > 1) ra_rels = ra_scores[1];
    return block.dropout(out);
  };
  auto out = detail::encoder_residuals(x, block.options.norm_first(), attend, block.ff_block,
                                       block.norm1, block.norm2, block.dropout);
  return {out, sa_attn_scores, ra_attn_scores, ra_rels};
}

std::tuple<torch::Tensor, IntermediateResults> datlm_forward_w_intermediate_results(
    DualAttnTransformerLMImpl& model, const torch::Tensor& idx) {
  const char* owner = "datlm_forward_w_intermediate_results";
  model.eval();
  auto ids =
      checked_token_ids(idx, model.options.vocab_size(), model.options.max_block_size(), owner);
  auto [x, cos, sin] = embed(model, ids);  // [b, n, d_model]
  IntermediateResults results;
  for (const char* key : {"symbol_attn_scores", "sa_attn_scores", "ra_attn_scores", "ra_rels"})
    results[key] = {};
  for (size_t i = 0; i < model.blocks->size(); ++i) {
    auto [symbols, symbol_attn_scores] =
        symbolic_attn_forward_get_weights(model.symbol_retriever[i], x);
    auto [out, sa_attn_scores, ra_attn_scores, ra_rels] = block_forward_get_weights(
        *model.blocks->ptr<DualAttnEncoderBlockImpl>(i), x, symbols, cos, sin);
    x = out;
    results["symbol_attn_scores"].push_back(symbol_attn_scores);
    results["sa_attn_scores"].push_back(sa_attn_scores);
    results["ra_attn_scores"].push_back(ra_attn_scores);
    results["ra_rels"].push_back(ra_rels);
  }
  auto logits = model.final_out(model.norm.forward(x));  // [b, n, vocab_size]
  return {logits, results};
}

std::tuple<torch::Tensor, IntermediateResults> transformerlm_forward_w_intermediate_results(
    TransformerLMImpl& model, const torch::Tensor& idx) {
  const char* owner = "transformerlm_forward_w_intermediate_results";
  model.eval();
  auto ids =
      checked_token_ids(idx, model.options.vocab_size(), model.options.max_block_size(), owner);
  auto [x, cos, sin] = embed(model, ids);  // [b, n, d_model]
  IntermediateResults results{{"attn_scores", {}}};
  for (size_t i = 0; i < model.blocks->size(); ++i) {
    auto [out, scores] =
        encoder_block_forward_get_weights(*model.blocks->ptr<EncoderBlockImpl>(i), x, cos, sin);
    x = out;
    results["attn_scores"].push_back(scores);
  }
  auto logits = model.final_out(model.norm.forward(x));  // [b, n, vocab_size]
  return {logits, results};
}

}  // namespace dual_attention
