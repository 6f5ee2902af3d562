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
#include "dual_attention/symbol_retrieval.h"
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
  auto x = model->token_embedder(idx);
  torch::Tensor cos, sin;
  if (model->positional_embedder) {
    x = x + model->positional_embedder(torch::arange(n));
  } else {
    cos = model->freqs_cos.slice(0, 0, n);
    sin = model->freqs_sin.slice(0, 0, n);
  }
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
    const int64_t n = idx.size(1);
    auto x = model->token_embedder(idx);
    torch::Tensor cos, sin;
    if (model->positional_embedder) {
      x = x + model->positional_embedder(torch::arange(n));
    } else {
      cos = model->freqs_cos.slice(0, 0, n);
      sin = model->freqs_sin.slice(0, 0, n);
    }
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

}  // namespace
