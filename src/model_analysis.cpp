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

// The token embedding of idx (checked) plus the learned positions, or the RoPE angles of the
// first n positions.
template <class Model>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> embed(Model& model,
                                                              const torch::Tensor& idx,
                                                              const char* owner) {
  auto ids =
      checked_token_ids(idx, model.options.vocab_size(), model.options.max_block_size(), owner);
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

// The per-layer keys of a DAT encoder layer (retriever + DualAttnEncoderBlock).
constexpr const char* kDualAttnKeys[] = {"symbol_attn_scores", "sa_attn_scores", "ra_attn_scores",
                                         "ra_rels"};

template <size_t N>
IntermediateResults empty_results(const char* const (&keys)[N], const std::string& prefix) {
  IntermediateResults results;
  for (const char* key : keys) results[prefix + key] = {};
  return results;
}

// One DAT encoder layer: the retriever's symbols for x, then the block, each with its weights,
// appended to results under prefix + kDualAttnKeys. Returns the block's output.
torch::Tensor dual_attn_encoder_layer(DualAttnEncoderBlockImpl& block,
                                      torch::nn::AnyModule& retriever, const torch::Tensor& x,
                                      const torch::Tensor& cos, const torch::Tensor& sin,
                                      IntermediateResults& results, const std::string& prefix);

// A block's dual-attention sublayer (dropout included) that records its weights: the
// self-attention scores, the relational scores and the relations (see block_forward_get_weights).
template <class Block>
auto dual_attention_recording(Block& block, const torch::Tensor& symbols,
                              const torch::Tensor& freqs_cos, const torch::Tensor& freqs_sin,
                              torch::Tensor& sa_attn_scores, torch::Tensor& ra_attn_scores,
                              torch::Tensor& ra_rels) {
  return [&, symbols, freqs_cos, freqs_sin](const torch::Tensor& h) {
    auto [out, sa_scores, ra_scores] =
        block.dual_attn->forward(h, symbols, {}, block.options.causal(), freqs_cos, freqs_sin,
                                 /*need_weights=*/true);
    sa_attn_scores = sa_scores;
    if (!ra_scores.empty()) ra_attn_scores = ra_scores[0];
    if (ra_scores.size() > 1) ra_rels = ra_scores[1];
    return block.dropout(out);
  };
}

// A decoder block's forward (either kind), its first sublayer given as `attend` (which records
// its own weights); the cross-attention's weights [b, n_heads, m, n] go to cross_scores.
template <class Block, class Attend>
torch::Tensor decoder_forward_recording(Block& block, const torch::Tensor& x,
                                        const torch::Tensor& context, const Attend& attend,
                                        torch::Tensor& cross_scores) {
  auto cross_attend = [&](const torch::Tensor& h) {
    auto [out, weights] =
        block.cross_attn->forward(h, context, context, {}, {}, {}, false, /*need_weights=*/true);
    cross_scores = weights;
    return block.dropout(out);
  };
  return detail::decoder_residuals(x, block.options.norm_first(), attend, cross_attend,
                                   block.ff_block, block.norm1, block.norm2, block.norm3);
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
  auto attend = dual_attention_recording(block, symbols, freqs_cos, freqs_sin, sa_attn_scores,
                                         ra_attn_scores, ra_rels);
  auto out = detail::encoder_residuals(x, block.options.norm_first(), attend, block.ff_block,
                                       block.norm1, block.norm2, block.dropout);
  return {out, sa_attn_scores, ra_attn_scores, ra_rels};
}

namespace {

torch::Tensor dual_attn_encoder_layer(DualAttnEncoderBlockImpl& block,
                                      torch::nn::AnyModule& retriever, const torch::Tensor& x,
                                      const torch::Tensor& cos, const torch::Tensor& sin,
                                      IntermediateResults& results, const std::string& prefix) {
  auto [symbols, symbol_attn_scores] = symbolic_attn_forward_get_weights(retriever, x);
  auto [out, sa_attn_scores, ra_attn_scores, ra_rels] =
      block_forward_get_weights(block, x, symbols, cos, sin);
  results[prefix + "symbol_attn_scores"].push_back(symbol_attn_scores);
  results[prefix + "sa_attn_scores"].push_back(sa_attn_scores);
  results[prefix + "ra_attn_scores"].push_back(ra_attn_scores);
  results[prefix + "ra_rels"].push_back(ra_rels);
  return out;
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> decoder_block_forward_get_weights(
    DecoderBlockImpl& block, const torch::Tensor& x, const torch::Tensor& context) {
  torch::Tensor self_scores, cross_scores;
  auto attend = [&](const torch::Tensor& h) {
    auto [out, weights] = block.self_attn->forward(h, h, h, {}, {}, {}, block.options.causal(),
                                                   /*need_weights=*/true);
    self_scores = weights;
    return block.dropout(out);
  };
  auto out = decoder_forward_recording(block, x, context, attend, cross_scores);
  return {out, self_scores, cross_scores};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
dual_attn_decoder_block_forward_get_weights(DualAttnDecoderBlockImpl& block, const torch::Tensor& x,
                                            const torch::Tensor& context,
                                            const torch::Tensor& symbols) {
  torch::Tensor sa_attn_scores, ra_attn_scores, ra_rels, cross_scores;
  auto attend =
      dual_attention_recording(block, symbols, {}, {}, sa_attn_scores, ra_attn_scores, ra_rels);
  auto out = decoder_forward_recording(block, x, context, attend, cross_scores);
  return {out, sa_attn_scores, ra_attn_scores, ra_rels, cross_scores};
}

std::tuple<torch::Tensor, IntermediateResults> datlm_forward_w_intermediate_results(
    DualAttnTransformerLMImpl& model, const torch::Tensor& idx) {
  model.eval();
  auto [x, cos, sin] =
      embed(model, idx, "datlm_forward_w_intermediate_results");  // [b, n, d_model]
  IntermediateResults results = empty_results(kDualAttnKeys, "");
  for (size_t i = 0; i < model.blocks->size(); ++i) {
    x = dual_attn_encoder_layer(*model.blocks->ptr<DualAttnEncoderBlockImpl>(i),
                                model.symbol_retriever[i], x, cos, sin, results, "");
  }
  auto logits = model.final_out(model.norm.forward(x));  // [b, n, vocab_size]
  return {logits, results};
}

std::tuple<torch::Tensor, IntermediateResults> transformerlm_forward_w_intermediate_results(
    TransformerLMImpl& model, const torch::Tensor& idx) {
  model.eval();
  auto [x, cos, sin] =
      embed(model, idx, "transformerlm_forward_w_intermediate_results");  // [b, n, d_model]
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

// ---- seq2seq and vision models -------------------------------------------------------------

std::tuple<torch::Tensor, IntermediateResults> seq2seq_forward_w_intermediate_results(
    Seq2SeqTransformerImpl& model, const torch::Tensor& x, const torch::Tensor& y) {
  model.eval();
  auto [source, target] = model.embed(x, y);  // [b, n, d], [b, m, d]
  IntermediateResults results{{"encoder_attn_scores", {}},
                              {"decoder_self_attn_scores", {}},
                              {"decoder_cross_attn_scores", {}}};
  for (auto& block : model.encoder_blocks) {
    auto [out, scores] = encoder_block_forward_get_weights(*block, source, {}, {});
    source = out;  // [b, n, d]
    results["encoder_attn_scores"].push_back(scores);
  }
  for (auto& block : model.decoder_blocks) {
    auto [out, self_scores, cross_scores] =
        decoder_block_forward_get_weights(*block, target, source);
    target = out;  // [b, m, d]
    results["decoder_self_attn_scores"].push_back(self_scores);
    results["decoder_cross_attn_scores"].push_back(cross_scores);
  }
  return {model.final_out(target), results};  // [b, m, out_dim]
}

std::tuple<torch::Tensor, IntermediateResults> seq2seq_dat_forward_w_intermediate_results(
    Seq2SeqDualAttnTransformerImpl& model, const torch::Tensor& x, const torch::Tensor& y) {
  model.eval();
  auto [source, target] = model.embed(x, y);  // [b, n, d], [b, m, d]
  IntermediateResults results = empty_results(kDualAttnKeys, "encoder_");
  results.merge(empty_results(kDualAttnKeys, "decoder_"));
  results["decoder_cross_attn_scores"] = {};
  for (auto& block : model.encoder_blocks) {  // [b, n, d]
    source = dual_attn_encoder_layer(*block, model.symbol_retriever, source, {}, {}, results,
                                     "encoder_");
  }
  for (auto& block : model.decoder_blocks) {
    auto [symbols, symbol_attn_scores] =
        symbolic_attn_forward_get_weights(model.symbol_retriever, target);
    auto [out, sa_attn_scores, ra_attn_scores, ra_rels, cross_scores] =
        dual_attn_decoder_block_forward_get_weights(*block, target, source, symbols);
    target = out;  // [b, m, d]
    results["decoder_symbol_attn_scores"].push_back(symbol_attn_scores);
    results["decoder_sa_attn_scores"].push_back(sa_attn_scores);
    results["decoder_ra_attn_scores"].push_back(ra_attn_scores);
    results["decoder_ra_rels"].push_back(ra_rels);
    results["decoder_cross_attn_scores"].push_back(cross_scores);
  }
  return {model.final_out(target), results};  // [b, m, out_dim]
}

std::tuple<torch::Tensor, IntermediateResults> vit_forward_w_intermediate_results(
    VisionTransformerImpl& model, const torch::Tensor& x) {
  model.eval();
  auto h = model.embed(x);  // [b, n + 1, d]
  IntermediateResults results{{"attn_scores", {}}};
  for (auto& block : model.encoder_blocks) {
    auto [out, scores] = encoder_block_forward_get_weights(*block, h, {}, {});
    h = out;  // [b, n + 1, d]
    results["attn_scores"].push_back(scores);
  }
  return {model.final_out(detail::pool_tokens(h, model.options.pool())), results};  // [b, classes]
}

std::tuple<torch::Tensor, IntermediateResults> vidat_forward_w_intermediate_results(
    VisionDualAttnTransformerImpl& model, const torch::Tensor& x) {
  model.eval();
  auto h = model.embed(x);  // [b, n + 1, d]
  IntermediateResults results = empty_results(kDualAttnKeys, "");
  for (auto& block : model.encoder_blocks) {  // [b, n + 1, d]
    h = dual_attn_encoder_layer(*block, model.symbol_retriever, h, {}, {}, results, "");
  }
  return {model.final_out(detail::pool_tokens(h, model.options.pool())), results};  // [b, classes]
}

}  // namespace dual_attention
