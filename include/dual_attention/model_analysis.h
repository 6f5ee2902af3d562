// Looking inside a model: forward passes that also return the attention weights, relations and
// symbol assignments of every layer (reference: dual_attention.model_analysis.datlm_utils).
//
//   auto [logits, results] = datlm_forward_w_intermediate_results(*model, idx);
//   results["ra_rels"][layer]   // [b, n, n, n_relations]
//
// The forwards walk the models' public members (embedding, symbol retrievers, blocks, norms) and
// run every attention with need_weights=true, i.e. on the materialising path: memory grows as n^2
// per head and per relation, so use them for analysis, not for long sequences. They compute what
// the model's own forward computes (the logits are equal) and switch the model to eval mode first,
// as the reference does. Gradients flow unless the caller holds a torch::NoGradGuard.
//
// Differences from the reference's datlm_forward_w_intermediate_results, which handles pre-norm
// models with SymbolicAttention only: post-norm blocks are supported (the reference unpacks three
// of four values there and crashes), and every symbol retriever is (the reference calls q_proj).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/language_models.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/transformer_blocks.h"
#include "dual_attention/vision_models.h"

namespace dual_attention {

// One list entry per layer under each key, as the reference's dict. An entry is an undefined
// tensor where a layer has no such result (sa_attn_scores without self-attention heads,
// symbol_attn_scores for a retriever that does not attend).
using IntermediateResults = std::map<std::string, std::vector<torch::Tensor>>;

// The symbols a retriever gives for x ([b, n, d_model]), and its attention weights over the
// symbol library when it has them:
//   SymbolicAttention:            softmax(q_proj(x)_h F_h^T * scale)  [b, n_heads, n, n_symbols]
//   RelationalSymbolicAttention:  the weights of its inner SymbolicAttention, same shape
//   PositionalSymbolRetriever,
//   PositionRelativeSymbolRetriever: undefined (symbols are chosen by position, not by content).
// The symbols are the retriever's own forward, so they are exactly what the model uses.
std::tuple<torch::Tensor, torch::Tensor> symbolic_attn_forward_get_weights(
    torch::nn::AnyModule& retriever, const torch::Tensor& x);

// A DualAttnEncoderBlock's forward (see dual_attn_blocks.h for the residual wiring, pre- or
// post-norm) that also returns its dual attention's weights: (x_out [b, n, d_model],
// sa_attn_scores [b, n_heads_sa, n, n] or undefined, ra_attn_scores [b, n_heads_ra, n, n],
// ra_rels). ra_rels is [b, n, n, n_relations] for 'relational_attention'; for 'disrca' it is the
// relation scores [b, n_heads_ra, n, n]; for 'rca' (whose scores are its only weights, returned as
// ra_attn_scores) it is undefined.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> block_forward_get_weights(
    DualAttnEncoderBlockImpl& block, const torch::Tensor& x, const torch::Tensor& symbols,
    const torch::Tensor& freqs_cos = {}, const torch::Tensor& freqs_sin = {});

// DualAttnTransformerLM's forward (idx [b, n] token ids, n <= max_block_size) returning
// (logits [b, n, vocab_size], results) with the keys
//   symbol_attn_scores  [b, heads, n, n_symbols]   (undefined for positional retrievers)
//   sa_attn_scores      [b, n_heads_sa, n, n]      (undefined when n_heads_sa = 0)
//   ra_attn_scores      [b, n_heads_ra, n, n]      (undefined when n_heads_ra = 0)
//   ra_rels             [b, n, n, n_relations]     (see block_forward_get_weights for rca/disrca)
// Bad idx (not [b, n] integer ids in [0, vocab_size), too long) is an error naming it.
std::tuple<torch::Tensor, IntermediateResults> datlm_forward_w_intermediate_results(
    DualAttnTransformerLMImpl& model, const torch::Tensor& idx);

// TransformerLM's forward returning (logits [b, n, vocab_size], results) with the key
//   attn_scores  [b, n_heads, n, n]
std::tuple<torch::Tensor, IntermediateResults> transformerlm_forward_w_intermediate_results(
    TransformerLMImpl& model, const torch::Tensor& idx);

// ---- seq2seq and vision models ---------------------------------------------------------------
// The same for the other four models. Their blocks take no RoPE; the seq2seq DAT's one symbol
// retriever serves every block (as in its forward), and the vision models' sequence is the class
// token followed by the patches (n = num_patches + 1 for a full-size image).

// A DecoderBlock's forward that also returns (x_out [b, m, d_model], self-attention scores
// [b, n_heads, m, m], cross-attention scores [b, n_heads, m, n]); context is [b, n, d_model].
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> decoder_block_forward_get_weights(
    DecoderBlockImpl& block, const torch::Tensor& x, const torch::Tensor& context);

// A DualAttnDecoderBlock's: (x_out, sa_attn_scores, ra_attn_scores, ra_rels, cross_attn_scores),
// the first four as block_forward_get_weights gives them, cross_attn_scores [b, n_heads, m, n].
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
dual_attn_decoder_block_forward_get_weights(DualAttnDecoderBlockImpl& block, const torch::Tensor& x,
                                            const torch::Tensor& context,
                                            const torch::Tensor& symbols);

// Seq2SeqTransformer's forward on (x, y) (each token ids [b, len] or vectors [b, len, dim], as
// its input_spec / output_spec say) returning (logits [b, m, out_dim], results) with the keys
//   encoder_attn_scores        [b, n_heads, n, n]  per encoder block
//   decoder_self_attn_scores   [b, n_heads, m, m]  per decoder block
//   decoder_cross_attn_scores  [b, n_heads, m, n]  per decoder block
std::tuple<torch::Tensor, IntermediateResults> seq2seq_forward_w_intermediate_results(
    Seq2SeqTransformerImpl& model, const torch::Tensor& x, const torch::Tensor& y);

// Seq2SeqDualAttnTransformer's: the keys of datlm_forward_w_intermediate_results prefixed with
// encoder_ (per encoder block, over the source) and decoder_ (per decoder block, over the
// target), and decoder_cross_attn_scores [b, n_heads, m, n].
std::tuple<torch::Tensor, IntermediateResults> seq2seq_dat_forward_w_intermediate_results(
    Seq2SeqDualAttnTransformerImpl& model, const torch::Tensor& x, const torch::Tensor& y);

// VisionTransformer's forward on images x [b, channels, H, W] returning (logits [b, num_classes],
// {"attn_scores": [b, n_heads, n, n] per block}).
std::tuple<torch::Tensor, IntermediateResults> vit_forward_w_intermediate_results(
    VisionTransformerImpl& model, const torch::Tensor& x);

// VisionDualAttnTransformer's: (logits [b, num_classes], results with the four keys of
// datlm_forward_w_intermediate_results).
std::tuple<torch::Tensor, IntermediateResults> vidat_forward_w_intermediate_results(
    VisionDualAttnTransformerImpl& model, const torch::Tensor& x);

}  // namespace dual_attention
