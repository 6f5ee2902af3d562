// The forwards that return intermediate results (model_analysis.h): parity with the reference's
// datlm_forward_w_intermediate_results on the checkpoints of tests/fixtures/lm/ (its outputs in
// intermediates.safetensors, made by tests/fixtures/make_intermediates_fixtures.py), and, where the
// reference crashes (post-norm, positional retrievers), against a manual computation from the
// model's own modules.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/language_models.h"
#include "dual_attention/model_analysis.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/symbol_retrieval.h"
#include "dual_attention/vision_models.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace dual_attention;

namespace {

const fs::path kFixtures = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "lm";

// max |a - b| <= tol * max(1, max |b|), with a message naming the tensor.
void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol,
                  const std::string& what) {
  ASSERT_TRUE(a.defined()) << what << ": undefined";
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = std::max(1.0, b.abs().max().item<double>());
  const double err = (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tol * scale) << what << ": max abs error " << err;
}

DualAttnTransformerLM load_fixture(const std::string& name) {
  // The reference loads the bf16 checkpoint into a float32 model; the others keep their dtype.
  return DualAttnTransformerLM::from_pretrained(
      (kFixtures / name).string(),
      name == "dat_bf16" ? PretrainedOptions().dtype(torch::kFloat) : PretrainedOptions());
}

torch::Tensor fixture_idx(const std::string& name) {
  return io::load_safetensors((kFixtures / name / "expected.safetensors").string())
      .tensors.at("idx");
}

// A language model's first block input, from its own modules: the token embeddings plus the
// learned positions, or the token embeddings and the RoPE tables of the idx.size(1) positions.
template <class LM>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> embed_by_hand(LM& model,
                                                                      const torch::Tensor& idx) {
  const int64_t n = idx.size(1);
  auto x = model.token_embedder(idx);  // [b, n, d]
  if (model.positional_embedder) return {x + model.positional_embedder(torch::arange(n)), {}, {}};
  return {x, model.freqs_cos.slice(0, 0, n), model.freqs_sin.slice(0, 0, n)};  // [n, hd / 2]
}

class IntermediatesParity : public ::testing::TestWithParam<std::string> {};

TEST_P(IntermediatesParity, EqualsTheReferenceWithin1e5) {
  const std::string name = GetParam();
  auto model = load_fixture(name);
  auto expected =
      io::load_safetensors((kFixtures / name / "intermediates.safetensors").string()).tensors;
  torch::NoGradGuard no_grad;
  auto [logits, results] = datlm_forward_w_intermediate_results(*model, fixture_idx(name));
  expect_close(logits, expected.at("logits"), 1e-5, name + " logits");
  const auto n_layers = static_cast<size_t>(model->options.n_layers());
  ASSERT_EQ(results.size(), 4u);
  for (const char* key : {"symbol_attn_scores", "sa_attn_scores", "ra_attn_scores", "ra_rels"}) {
    ASSERT_EQ(results.at(key).size(), n_layers) << key;
    for (size_t i = 0; i < n_layers; ++i) {
      const std::string entry = std::string(key) + "." + std::to_string(i);
      expect_close(results.at(key)[i], expected.at(entry), 1e-5, name + " " + entry);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ReferenceFixtures, IntermediatesParity,
                         ::testing::Values("dat_posemb_symattn", "dat_rope_gqa_swiglu_rmsnorm",
                                           "dat_symattn_unshared_tied_symrels",
                                           "dat_share_attn_params", "dat_disrca_ra_heavy",
                                           "dat_bf16"));

// Where the reference crashes: the model's own pieces, composed by hand. Post-norm: the dual
// attention sees the layer input itself (not norm1 of it); each layer's input is the previous
// block's own forward.
class IntermediatesManual : public ::testing::TestWithParam<std::string> {};

TEST_P(IntermediatesManual, EqualsTheModelsOwnModulesComposedByHand) {
  const std::string name = GetParam();
  auto model = load_fixture(name);
  auto idx = fixture_idx(name);
  torch::NoGradGuard no_grad;
  auto [logits, results] = datlm_forward_w_intermediate_results(*model, idx);
  const double tol = model->parameters()[0].scalar_type() == torch::kDouble ? 1e-12 : 1e-5;
  expect_close(logits, std::get<0>(model->forward(idx)), tol, name + " logits");

  const int64_t n = idx.size(1);
  auto [x, cos, sin] = embed_by_hand(*model, idx);
  for (int64_t i = 0; i < model->options.n_layers(); ++i) {
    auto block = model->blocks->ptr<DualAttnEncoderBlockImpl>(i);
    auto symbols = model->symbol_retriever[i].forward(x);
    auto attn_input = block->options.norm_first() ? block->norm1.forward(x) : x;
    auto [out, sa, ra] =
        block->dual_attn->forward(attn_input, symbols, {}, /*is_causal=*/true, cos, sin, true);
    const std::string layer = name + " layer " + std::to_string(i);
    expect_close(results.at("sa_attn_scores")[i], sa, tol, layer + " sa_attn_scores");
    expect_close(results.at("ra_attn_scores")[i], ra.at(0), tol, layer + " ra_attn_scores");
    expect_close(results.at("ra_rels")[i], ra.at(1), tol, layer + " ra_rels");
    // Positional retrievers have no attention weights; symbolic attention's rows sum to one.
    auto* symbolic = model->symbol_retriever[i].ptr()->as<SymbolicAttention>();
    const auto& weights = results.at("symbol_attn_scores")[i];
    EXPECT_EQ(weights.defined(), symbolic != nullptr) << layer;
    if (symbolic) {
      EXPECT_EQ(weights.sizes(), (std::vector<int64_t>{idx.size(0), symbolic->options.n_heads(), n,
                                                       symbolic->options.n_symbols()}));
      expect_close(weights.sum(-1), torch::ones_like(weights.sum(-1)), tol, layer + " rows");
    }
    x = block->forward(x, symbols, cos, sin);
  }
}

INSTANTIATE_TEST_SUITE_P(PostNormAndPositionalRetrievers, IntermediatesManual,
                         ::testing::Values("dat_symattn_unshared_postnorm",
                                           "dat_posrel_postnorm_relu", "dat_possym_unshared_tied",
                                           "dat_posemb_symattn_f64", "dat_posemb_symattn"));

TEST(Intermediates, RelationalCrossAttentionScoresAreTheRelationalWeights) {
  auto model = load_fixture("dat_rca");
  auto idx = fixture_idx("dat_rca");
  torch::NoGradGuard no_grad;
  auto [logits, results] = datlm_forward_w_intermediate_results(*model, idx);
  expect_close(logits, std::get<0>(model->forward(idx)), 1e-5, "dat_rca logits");
  for (size_t i = 0; i < results.at("ra_rels").size(); ++i) {
    EXPECT_FALSE(results.at("ra_rels")[i].defined());
    EXPECT_EQ(
        results.at("ra_attn_scores")[i].sizes(),
        (std::vector<int64_t>{idx.size(0), model->options.n_heads_ra(), idx.size(1), idx.size(1)}));
  }
}

TEST(Intermediates, TransformerLMAttentionScoresMatchTheExplicitWeightsPath) {
  for (const char* name : {"t_posemb_gelu_postnorm", "t_rope_swiglu_gqa_weights"}) {
    auto model = TransformerLM::from_pretrained((kFixtures / name).string());
    auto idx = fixture_idx(name);
    torch::NoGradGuard no_grad;
    auto [logits, results] = transformerlm_forward_w_intermediate_results(*model, idx);
    expect_close(logits, std::get<0>(model->forward(idx)), 1e-5, std::string(name) + " logits");
    ASSERT_EQ(results.at("attn_scores").size(), 2u);
    // Layer 0 by hand: the attention of the (normed) embedding.
    auto [x, cos, sin] = embed_by_hand(*model, idx);
    auto block = model->blocks->ptr<EncoderBlockImpl>(0);
    auto h = block->options.norm_first() ? block->norm1.forward(x) : x;
    auto scores = std::get<1>(block->self_attn->forward(h, h, h, cos, sin, {}, true, true));
    expect_close(results.at("attn_scores")[0], scores, 1e-5, std::string(name) + " layer 0");
    // Causal: nothing above the diagonal.
    EXPECT_EQ(results.at("attn_scores")[1].triu(1).abs().max().item<double>(), 0.0);
  }
}

TEST(Intermediates, GradientsFlowToTheParameters) {
  auto model = load_fixture("dat_posemb_symattn");
  auto [logits, results] =
      datlm_forward_w_intermediate_results(*model, fixture_idx("dat_posemb_symattn"));
  (results.at("ra_rels")[1].sum() + logits.sum()).backward();
  auto block = model->blocks->ptr<DualAttnEncoderBlockImpl>(1);
  const auto grad = block->dual_attn->relational_attention->wq_rel->weight.grad();
  ASSERT_TRUE(grad.defined());
  const double total = grad.abs().sum().item<double>();
  EXPECT_GT(total, 0.0);
}

TEST(Intermediates, BadTokenIdsAreErrorsNamingThem) {
  auto model = load_fixture("dat_posemb_symattn");
  auto expect_error = [&](const torch::Tensor& idx, const std::string& part) {
    try {
      datlm_forward_w_intermediate_results(*model, idx);
      ADD_FAILURE() << "expected an error containing '" << part << "'";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(part), std::string::npos)
          << e.what_without_backtrace();
    }
  };
  expect_error(torch::zeros({4}, torch::kLong), "idx must be token ids of shape [batch, seq_len]");
  expect_error(torch::zeros({1, 4}), "idx must hold integer token ids, got dtype Float");
  expect_error(torch::full({1, 4}, 48, torch::kLong), "token ids must be in [0, 48)");
  expect_error(torch::zeros({1, 17}, torch::kLong), "exceeds max_block_size 16");
}

// ---- seq2seq and vision models: each model's own forward, and each block's weights by hand ----

Kwargs token_spec(int64_t vocab_size) {
  return Kwargs{{"type", "token"}, {"vocab_size", vocab_size}};
}

// Rows of attention weights are distributions: each sums to 1 over the last dimension.
void expect_rows_sum_to_one(const torch::Tensor& weights, const std::string& what) {
  ASSERT_TRUE(weights.defined()) << what << ": undefined";
  expect_close(weights.sum(-1), torch::ones_like(weights.sum(-1)), 1e-5, what + " rows sum");
}

class SeqIntermediates : public ::testing::TestWithParam<bool> {};  // norm_first

TEST_P(SeqIntermediates, Seq2SeqTransformerScoresAreItsBlocksAttentionWeights) {
  const bool norm_first = GetParam();
  Kwargs enc = {{"n_heads", 2},
                {"dff", 32},
                {"dropout_rate", 0.0},
                {"activation", "relu"},
                {"norm_first", norm_first}};
  Kwargs dec = enc;
  dec["n_heads_cross"] = 2;
  dec["causal"] = true;
  torch::manual_seed(0);
  Seq2SeqTransformer model(
      Seq2SeqTransformerOptions(token_spec(11), token_spec(13), 16, 13, 2, 2, enc, dec, 8, 7));
  auto x = torch::randint(0, 11, {2, 8}), y = torch::randint(0, 13, {2, 7});
  torch::NoGradGuard no_grad;
  auto [logits, results] = seq2seq_forward_w_intermediate_results(*model, x, y);
  EXPECT_FALSE(model->is_training());
  // The model's forward with targets gives every position's logits.
  expect_close(logits, std::get<0>(model->forward(x, y, torch::zeros({2, 7}, torch::kLong))), 1e-6,
               "logits");
  ASSERT_EQ(results.size(), 3u);
  ASSERT_EQ(results.at("encoder_attn_scores").size(), 2u);
  ASSERT_EQ(results.at("decoder_cross_attn_scores").size(), 2u);
  EXPECT_EQ(results.at("decoder_self_attn_scores")[1].sizes(), (std::vector<int64_t>{2, 2, 7, 7}));
  EXPECT_EQ(results.at("decoder_cross_attn_scores")[1].sizes(), (std::vector<int64_t>{2, 2, 7, 8}));
  for (const auto& [key, list] : results)
    for (size_t i = 0; i < list.size(); ++i)
      expect_rows_sum_to_one(list[i], key + "[" + std::to_string(i) + "]");
  // Encoder block 0 and decoder block 0 by hand, from the embeddings.
  auto [source, target] = model->embed(x, y);
  auto& e0 = *model->encoder_blocks[0];
  auto h = norm_first ? e0.norm1.forward(source) : source;
  expect_close(results.at("encoder_attn_scores")[0],
               std::get<1>(e0.self_attn->forward(h, h, h, {}, {}, {}, e0.options.causal(), true)),
               1e-6, "encoder 0");
  for (auto& block : model->encoder_blocks) source = block(source);
  auto& d0 = *model->decoder_blocks[0];
  auto g = norm_first ? d0.norm1.forward(target) : target;
  auto [attended, self_weights] =
      d0.self_attn->forward(g, g, g, {}, {}, {}, d0.options.causal(), true);
  expect_close(results.at("decoder_self_attn_scores")[0], self_weights, 1e-6, "decoder 0 self");
  auto after_self = norm_first ? target + attended : d0.norm1.forward(target + attended);
  auto q = norm_first ? d0.norm2.forward(after_self) : after_self;
  expect_close(results.at("decoder_cross_attn_scores")[0],
               std::get<1>(d0.cross_attn->forward(q, source, source, {}, {}, {}, false, true)),
               1e-6, "decoder 0 cross");
  // Causal decoder self-attention: nothing above the diagonal.
  EXPECT_EQ(results.at("decoder_self_attn_scores")[1].triu(1).abs().max().item<double>(), 0.0);
}

TEST_P(SeqIntermediates, Seq2SeqDualAttnTransformerResultsAreItsBlocksWeights) {
  const bool norm_first = GetParam();
  Kwargs enc = {{"n_heads_sa", 1},      {"n_heads_ra", 1},     {"dff", 32},
                {"activation", "relu"}, {"dropout_rate", 0.0}, {"norm_first", norm_first}};
  Kwargs dec = enc;
  dec["n_heads_cross"] = 2;
  torch::manual_seed(0);
  Seq2SeqDualAttnTransformer model(Seq2SeqDualAttnTransformerOptions(
      token_spec(11), token_spec(13), "symbolic_attention",
      {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 5}}, 16, 13, 2, 2, enc, dec, 8, 7));
  auto x = torch::randint(0, 11, {2, 8}), y = torch::randint(0, 13, {2, 7});
  torch::NoGradGuard no_grad;
  auto [logits, results] = seq2seq_dat_forward_w_intermediate_results(*model, x, y);
  expect_close(logits, std::get<0>(model->forward(x, y, torch::zeros({2, 7}, torch::kLong))), 1e-6,
               "logits");
  ASSERT_EQ(results.size(), 9u);
  for (const char* side : {"encoder_", "decoder_"}) {
    for (const char* key : {"symbol_attn_scores", "sa_attn_scores", "ra_attn_scores", "ra_rels"}) {
      ASSERT_EQ(results.at(std::string(side) + key).size(), 2u) << side << key;
    }
  }
  const int64_t n = 8, m = 7;
  EXPECT_EQ(results.at("encoder_symbol_attn_scores")[0].sizes(),
            (std::vector<int64_t>{2, 2, n, 5}));
  EXPECT_EQ(results.at("encoder_ra_rels")[1].sizes(), (std::vector<int64_t>{2, n, n, 1}));
  EXPECT_EQ(results.at("decoder_ra_attn_scores")[1].sizes(), (std::vector<int64_t>{2, 1, m, m}));
  EXPECT_EQ(results.at("decoder_cross_attn_scores")[1].sizes(), (std::vector<int64_t>{2, 2, m, n}));
  // Encoder layer 0 and decoder layer 0 by hand.
  auto [source, target] = model->embed(x, y);
  torch::nn::AnyModule& retriever = model->symbol_retriever;
  auto [symbols, symbol_weights] = symbolic_attn_forward_get_weights(retriever, source);
  expect_close(results.at("encoder_symbol_attn_scores")[0], symbol_weights, 1e-6, "enc symbols");
  auto [out, sa, ra, rels] = block_forward_get_weights(*model->encoder_blocks[0], source, symbols);
  expect_close(results.at("encoder_sa_attn_scores")[0], sa, 1e-6, "enc sa");
  expect_close(results.at("encoder_ra_rels")[0], rels, 1e-6, "enc rels");
  expect_close(out, model->encoder_blocks[0](source, symbols), 1e-6, "enc block output");
  for (auto& block : model->encoder_blocks) source = block(source, retriever.forward(source));
  auto& d0 = *model->decoder_blocks[0];
  auto target_symbols = retriever.forward(target);
  auto g = norm_first ? d0.norm1.forward(target) : target;
  auto [attended, dsa, dra] = d0.dual_attn->forward(g, target_symbols, {}, d0.options.causal(), {},
                                                    {}, /*need_weights=*/true);
  expect_close(results.at("decoder_sa_attn_scores")[0], dsa, 1e-6, "dec sa");
  expect_close(results.at("decoder_ra_attn_scores")[0], dra[0], 1e-6, "dec ra");
  expect_close(results.at("decoder_ra_rels")[0], dra[1], 1e-6, "dec rels");
  auto after_self = norm_first ? target + attended : d0.norm1.forward(target + attended);
  auto q = norm_first ? d0.norm2.forward(after_self) : after_self;
  expect_close(results.at("decoder_cross_attn_scores")[0],
               std::get<1>(d0.cross_attn->forward(q, source, source, {}, {}, {}, false, true)),
               1e-6, "dec cross");
}

TEST_P(SeqIntermediates, VisionModelsResultsAreTheirBlocksWeights) {
  const bool norm_first = GetParam();
  torch::manual_seed(0);
  // 3 channels, width 8, height 12, patches 4 wide and 2 high: 12 patches, n = 13 with the class
  // token.
  VisionTransformer vit(
      VisionTransformerOptions({3, 8, 12}, {4, 2}, 5, 16, 2, 2, 32, 0.0, "relu", norm_first));
  VisionDualAttnTransformer vidat(
      VisionDualAttnTransformerOptions({3, 8, 12}, {4, 2}, 5, 16, 2, 1, 1, 32, 0.0, "relu",
                                       norm_first, "symbolic_attention",
                                       {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 4}})
          .pool("mean"));
  auto images = torch::randn({2, 3, 12, 8});
  torch::NoGradGuard no_grad;
  auto [logits, results] = vit_forward_w_intermediate_results(*vit, images);
  expect_close(logits, vit->forward(images), 1e-6, "vit logits");
  ASSERT_EQ(results.at("attn_scores").size(), 2u);
  auto tokens = vit->embed(images);
  auto& b0 = *vit->encoder_blocks[0];
  auto h = norm_first ? b0.norm1.forward(tokens) : tokens;
  expect_close(results.at("attn_scores")[0],
               std::get<1>(b0.self_attn->forward(h, h, h, {}, {}, {}, b0.options.causal(), true)),
               1e-6, "vit block 0");
  EXPECT_EQ(results.at("attn_scores")[1].sizes(), (std::vector<int64_t>{2, 2, 13, 13}));

  auto [dat_logits, dat_results] = vidat_forward_w_intermediate_results(*vidat, images);
  expect_close(dat_logits, vidat->forward(images), 1e-6, "vidat logits");
  ASSERT_EQ(dat_results.size(), 4u);
  auto dat_tokens = vidat->embed(images);
  auto [symbols, weights] = symbolic_attn_forward_get_weights(vidat->symbol_retriever, dat_tokens);
  expect_close(dat_results.at("symbol_attn_scores")[0], weights, 1e-6, "vidat symbols");
  auto [out, sa, ra, rels] =
      block_forward_get_weights(*vidat->encoder_blocks[0], dat_tokens, symbols);
  expect_close(dat_results.at("ra_attn_scores")[0], ra, 1e-6, "vidat ra");
  expect_close(dat_results.at("ra_rels")[0], rels, 1e-6, "vidat rels");
  EXPECT_EQ(dat_results.at("ra_rels")[1].sizes(), (std::vector<int64_t>{2, 13, 13, 1}));
}

INSTANTIATE_TEST_SUITE_P(NormFirst, SeqIntermediates, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "PreNorm" : "PostNorm"; });

}  // namespace
