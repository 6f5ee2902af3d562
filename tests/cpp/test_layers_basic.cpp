// Behaviour of the layer modules: positional encodings, symbol retrievers, transformer blocks.
// The expected state_dict keys below were read off the reference (dual-attention 0.0.7) with
// `list(Module(...).state_dict().keys())` for the same constructor arguments.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "dual_attention/positional_encoding.h"
#include "dual_attention/symbol_retrieval.h"
#include "dual_attention/transformer_blocks.h"
#include "test_support.h"

using namespace dual_attention;

using namespace test_support;

namespace {

// The keys of the module's state_dict in PyTorch's order: per module (pre-order), its own
// parameters, then its own buffers.
std::vector<std::string> state_dict_keys(const torch::nn::Module& module) {
  std::vector<std::string> keys;
  for (const auto& item : module.named_modules()) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
      keys.push_back(prefix + p.key());
    }
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) {
      keys.push_back(prefix + b.key());
    }
  }
  return keys;
}

bool all_close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  return a.sizes() == b.sizes() && torch::allclose(a, b, rtol, atol);
}

}  // namespace

// ---- positional encodings ------------------------------------------------------------------

TEST(SinusoidalPositionalEncoding, TableIsSinCosInterleavedAndPersistent) {
  SinusoidalPositionalEncoding pe(SinusoidalPositionalEncodingOptions(6).max_len(10));
  EXPECT_EQ(state_dict_keys(*pe), std::vector<std::string>({"pe"}));
  ASSERT_EQ(pe->pe.sizes(), torch::IntArrayRef({10, 6}));
  for (int64_t t : {0, 3, 9}) {
    for (int64_t i = 0; i < 3; ++i) {
      const double angle = t * std::exp(-(2.0 * i) * std::log(10000.0) / 6.0);
      EXPECT_NEAR(pe->pe[t][2 * i].item<double>(), std::sin(angle), 1e-6);
      EXPECT_NEAR(pe->pe[t][2 * i + 1].item<double>(), std::cos(angle), 1e-6);
    }
  }
}

TEST(SinusoidalPositionalEncoding, AddsScaledInputAndTable) {
  torch::manual_seed(0);
  SinusoidalPositionalEncoding pe(SinusoidalPositionalEncodingOptions(8).max_len(16).dropout(0.0));
  auto x = torch::randn({2, 5, 8});
  auto expected = x * std::sqrt(8.0) + pe->pe.slice(0, 0, 5);
  EXPECT_TRUE(all_close(pe(x), expected, 1e-6, 1e-6));

  SinusoidalPositionalEncoding unscaled(
      SinusoidalPositionalEncodingOptions(8).scale(false).max_len(5).dropout(0.0));
  EXPECT_TRUE(all_close(unscaled(x), x + unscaled->pe, 1e-6, 1e-6));
}

TEST(SinusoidalPositionalEncoding, RejectsLongSequencesAndOddWidth) {
  SinusoidalPositionalEncoding pe(SinusoidalPositionalEncodingOptions(8).max_len(4));
  expect_error([&] { pe(torch::zeros({1, 5, 8})); }, {"sequence length 5", "max_len 4"});
  expect_error([&] { pe(torch::zeros({1, 3, 6})); }, {"x", "8"});
  expect_error([] { SinusoidalPositionalEncoding(SinusoidalPositionalEncodingOptions(7)); },
               {"d_model", "even", "7"});
}

TEST(SinusoidalPositionalEncoding, DropoutOnlyInTraining) {
  torch::manual_seed(0);
  SinusoidalPositionalEncoding pe(SinusoidalPositionalEncodingOptions(8).dropout(0.5));
  auto x = torch::randn({2, 6, 8});
  pe->eval();
  auto expected = x * std::sqrt(8.0) + pe->pe.slice(0, 0, 6);
  EXPECT_TRUE(torch::equal(pe(x), expected));
  pe->train();
  auto y = pe(x);
  EXPECT_GT((y == 0).sum().item<int64_t>(), 0);
  EXPECT_FALSE(torch::allclose(y, expected));
}

TEST(LearnedPositionalEmbeddings, AddsEmbeddingRowsAndChecksLength) {
  torch::manual_seed(0);
  LearnedPositionalEmbeddings pe(LearnedPositionalEmbeddingsOptions(8).max_len(6).dropout(0.0));
  EXPECT_EQ(state_dict_keys(*pe), std::vector<std::string>({"position_embeddings.weight"}));
  auto x = torch::randn({3, 4, 8});
  auto expected = x * std::sqrt(8.0) + pe->position_embeddings->weight.slice(0, 0, 4);
  EXPECT_TRUE(all_close(pe(x), expected, 1e-6, 1e-6));
  expect_error([&] { pe(torch::zeros({1, 7, 8})); }, {"sequence length 7", "max_len 6"});
}

TEST(RelativePositionalEncoding, RowIJIsTheClippedOffset) {
  torch::manual_seed(0);
  RelativePositionalEncoding rel(5, 2);
  EXPECT_EQ(state_dict_keys(*rel), std::vector<std::string>({"rel_pos_embeddings"}));
  ASSERT_EQ(rel->rel_pos_embeddings.sizes(), torch::IntArrayRef({5, 5}));
  auto out = rel(3, 6);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({3, 6, 5}));
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 6; ++j) {
      const int64_t row = std::clamp<int64_t>(j - i, -2, 2) + 2;
      EXPECT_TRUE(torch::equal(out[i][j], rel->rel_pos_embeddings[row])) << i << "," << j;
    }
  }
  EXPECT_EQ(rel(4).sizes(), torch::IntArrayRef({4, 4, 5}));
  expect_error([&] { rel(-1); }, {"length_q", "-1"});
}

// ---- symbol retrieval ----------------------------------------------------------------------

TEST(SymbolicAttention, ParametersMatchTheReference) {
  SymbolicAttention sa(8, 2, 5);
  EXPECT_EQ(state_dict_keys(*sa), std::vector<std::string>({"template_features", "symbol_library",
                                                            "q_proj.weight", "q_proj.bias"}));
  EXPECT_EQ(sa->template_features.sizes(), torch::IntArrayRef({5, 8}));
  EXPECT_TRUE(sa->symbol_library.requires_grad());
  SymbolicAttention frozen(SymbolicAttentionOptions(8, 2, 5).trainable_symbols(false));
  EXPECT_FALSE(frozen->symbol_library.requires_grad());
  EXPECT_TRUE(frozen->template_features.requires_grad());
}

TEST(SymbolicAttention, EachHeadAttendsFromQueryToTemplatesOverSymbols) {
  torch::manual_seed(0);
  const int64_t b = 2, n = 3, d = 8, h = 2, ns = 5, hd = d / h;
  for (std::optional<double> scale : {std::optional<double>(), std::optional<double>(0.3)}) {
    SymbolicAttention sa(SymbolicAttentionOptions(d, h, ns).scale(scale));
    auto x = torch::randn({b, n, d});
    auto out = sa(x);
    ASSERT_EQ(out.sizes(), torch::IntArrayRef({b, n, d}));
    auto q = sa->q_proj(x);
    for (int64_t head = 0; head < h; ++head) {
      auto cols = torch::indexing::Slice(head * hd, (head + 1) * hd);
      auto qh = q.index({"...", cols});                      // [b, n, hd]
      auto fh = sa->template_features.index({"...", cols});  // [ns, hd]
      auto sh = sa->symbol_library.index({"...", cols});     // [ns, hd]
      auto w = torch::softmax(torch::matmul(qh, fh.t()) * scale.value_or(1.0 / std::sqrt(hd)), -1);
      EXPECT_TRUE(all_close(out.index({"...", cols}), torch::matmul(w, sh), 1e-5, 1e-6));
    }
  }
}

TEST(SymbolicAttention, DropoutOnlyInTraining) {
  torch::manual_seed(0);
  SymbolicAttention sa(SymbolicAttentionOptions(8, 2, 16).dropout(0.5));
  SymbolicAttention no_dropout(SymbolicAttentionOptions(8, 2, 16).dropout(0.0));
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : no_dropout->named_parameters()) {
      p.value().copy_(sa->named_parameters()[p.key()]);
    }
  }
  auto x = torch::randn({2, 4, 8});
  sa->eval();
  EXPECT_TRUE(all_close(sa(x), no_dropout(x), 1e-6, 1e-7));
  sa->train();
  EXPECT_FALSE(torch::allclose(sa(x), no_dropout(x), 1e-3, 1e-4));
}

TEST(SymbolicAttention, RejectsBadShapes) {
  expect_error([] { SymbolicAttention(10, 3, 4); }, {"d_model (10)", "n_heads (3)"});
  expect_error([] { SymbolicAttention(8, 2, 0); }, {"n_symbols", "0"});
  SymbolicAttention sa(8, 2, 4);
  expect_error([&] { sa(torch::zeros({2, 3, 6})); }, {"SymbolicAttention", "x", "8", "[2, 3, 6]"});
  expect_error([&] { sa(torch::zeros({3, 8})); }, {"SymbolicAttention", "x", "[3, 8]"});
}

TEST(PositionalSymbolRetriever, SymbolTIsEmbeddingRowT) {
  torch::manual_seed(0);
  PositionalSymbolRetriever ps(6, 10);
  EXPECT_EQ(state_dict_keys(*ps), std::vector<std::string>({"symbol_library.weight"}));
  auto out = ps(torch::randn({3, 4, 16}));
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({3, 4, 6}));
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(torch::equal(out[i], ps->symbol_library->weight.slice(0, 0, 4)));
  }
  expect_error([&] { ps(torch::zeros({1, 11, 16})); }, {"sequence length 11", "max_length 10"});
}

TEST(PositionRelativeSymbolRetriever, ReturnsPairwiseOffsetSymbols) {
  torch::manual_seed(0);
  PositionRelativeSymbolRetriever pr(6, 2);
  EXPECT_EQ(state_dict_keys(*pr), std::vector<std::string>({"rel_pos_enc.rel_pos_embeddings"}));
  auto out = pr(torch::randn({3, 5, 16}));
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({5, 5, 6}));
  EXPECT_TRUE(torch::equal(out, pr->rel_pos_enc(5)));
  EXPECT_TRUE(torch::equal(out[0][4], pr->rel_pos_enc->rel_pos_embeddings[4]));  // offset +4 -> +2
  EXPECT_TRUE(torch::equal(out[4][0], pr->rel_pos_enc->rel_pos_embeddings[0]));  // offset -4 -> -2
}

TEST(RelationalSymbolicAttention, ParametersMatchTheReference) {
  RelationalSymbolicAttention rsa(RelationalSymbolicAttentionOptions(8, 2, 2, 5, 3));
  EXPECT_EQ(state_dict_keys(*rsa),
            std::vector<std::string>(
                {"symbolic_attention.template_features", "symbolic_attention.symbol_library",
                 "symbolic_attention.q_proj.weight", "symbolic_attention.q_proj.bias",
                 "q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                 "model_dim_proj.weight", "model_dim_proj.bias"}));
  // nbhd_rel_dim: rel_n_heads * neighbourhood size (reference: 6 causal, 12 two-sided).
  EXPECT_EQ(rsa->nbhd_rel_dim, 6);
  EXPECT_EQ(rsa->model_dim_proj->weight.sizes(), torch::IntArrayRef({8, 6}));
  RelationalSymbolicAttention two_sided(
      RelationalSymbolicAttentionOptions(8, 2, 2, 5, 3).causal_nbhd(false));
  EXPECT_EQ(two_sided->nbhd_rel_dim, 12);
  RelationalSymbolicAttention with_self(
      RelationalSymbolicAttentionOptions(8, 2, 2, 5, 3).include_self(true));
  EXPECT_EQ(with_self->nbhd_rel_dim, 8);
}

TEST(RelationalSymbolicAttention, NeighbourMasksMatchTheReference) {
  // Printed by the reference's static methods for n=5, delta=2.
  auto t = [](std::vector<int64_t> v, int64_t cols) {
    return torch::tensor(v, torch::kLong).view({5, cols});
  };
  using R = RelationalSymbolicAttentionImpl;
  EXPECT_TRUE(torch::equal(
      R::compute_neighbor_mask(5, 2, true),
      t({0, 0, 0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 2, 3, 4, 1, 2, 3, 4, 4, 2, 3, 4, 4, 4}, 5)));
  EXPECT_TRUE(torch::equal(R::compute_neighbor_mask(5, 2, false),
                           t({0, 0, 1, 2, 0, 0, 2, 3, 0, 1, 3, 4, 1, 2, 4, 4, 2, 3, 4, 4}, 4)));
  EXPECT_TRUE(torch::equal(R::compute_causal_neighbor_mask(5, 2, false),
                           t({0, 0, 0, 0, 1, 0, 2, 1, 3, 2}, 2)));
  EXPECT_TRUE(torch::equal(R::compute_causal_neighbor_mask(5, 2, true),
                           t({0, 0, 0, 1, 0, 0, 2, 1, 0, 3, 2, 1, 4, 3, 2}, 3)));
}

TEST(RelationalSymbolicAttention, ComputesNeighbourhoodRelations) {
  torch::manual_seed(0);
  const int64_t b = 2, n = 4, d = 8, h = 2, hd = d / h;
  RelationalSymbolicAttention rsa(RelationalSymbolicAttentionOptions(d, h, 2, 5, 1));
  auto x = torch::randn({b, n, d});
  auto out = rsa(x);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({b, n, d}));
  // With delta 1, causal and without self, the only neighbour of i is max(i - 1, 0); softmax over a
  // single neighbour is 1, so every relation is 1 and every position gets the same symbols.
  auto ones = torch::ones({b, n, h});
  EXPECT_TRUE(all_close(out, rsa->symbolic_attention(rsa->model_dim_proj(ones)), 1e-5, 1e-6));
  // Unnormalised, the relation is the per-head dot product with the neighbour's key.
  RelationalSymbolicAttention raw(
      RelationalSymbolicAttentionOptions(d, h, 2, 5, 1).normalize_rels(false));
  auto q = raw->q_proj(x).view({b, n, h, hd});
  auto k = raw->k_proj(x).view({b, n, h, hd});
  auto prev = torch::tensor({0, 0, 1, 2}, torch::kLong);
  auto rels = (q * k.index_select(1, prev)).sum(-1);  // [b, n, h]
  EXPECT_TRUE(all_close(raw(x), raw->symbolic_attention(raw->model_dim_proj(rels)), 1e-5, 1e-6));
}

TEST(RelationalSymbolicAttention, RejectsBadOptionsAndInputs) {
  expect_error(
      [] { RelationalSymbolicAttention(RelationalSymbolicAttentionOptions(8, 3, 2, 5, 1)); },
      {"d_model (8)", "rel_n_heads (3)"});
  expect_error(
      [] { RelationalSymbolicAttention(RelationalSymbolicAttentionOptions(8, 2, 3, 5, 1)); },
      {"d_model (8)", "n_heads (3)"});
  expect_error(
      [] { RelationalSymbolicAttention(RelationalSymbolicAttentionOptions(8, 2, 2, 5, 0)); },
      {"nbhd_delta", "include_self"});
  RelationalSymbolicAttention rsa(RelationalSymbolicAttentionOptions(8, 2, 2, 5, 1));
  expect_error([&] { rsa(torch::zeros({1, 3, 4})); }, {"RelationalSymbolicAttention", "x", "8"});
}

TEST(SymbolRetrievers, LookupByNameBuildsEachRetriever) {
  EXPECT_EQ(symbol_retriever_names(),
            std::vector<std::string>(
                {"symbolic_attention", "rel_sym_attn", "positional_symbols", "position_relative"}));
  auto x = torch::randn({2, 5, 8});
  auto sa = make_symbol_retriever(
      "symbolic_attention", {{"d_model", 8}, {"n_heads", 2}, {"n_symbols", 4}, {"scale", 0.5}});
  EXPECT_EQ(sa.get<SymbolicAttention>()->options.scale(), std::optional<double>(0.5));
  EXPECT_EQ(sa.forward(x).sizes(), torch::IntArrayRef({2, 5, 8}));
  auto rsa = make_symbol_retriever("rel_sym_attn", {{"d_model", 8},
                                                    {"rel_n_heads", 2},
                                                    {"symbolic_attn_n_heads", 2},
                                                    {"n_symbols", 4},
                                                    {"nbhd_delta", 2},
                                                    {"causal_nbhd", false}});
  EXPECT_FALSE(rsa.get<RelationalSymbolicAttention>()->options.causal_nbhd());
  EXPECT_EQ(rsa.forward(x).sizes(), torch::IntArrayRef({2, 5, 8}));
  auto ps = make_symbol_retriever("positional_symbols", {{"symbol_dim", 8}, {"max_length", 5}});
  EXPECT_EQ(ps.forward(x).sizes(), torch::IntArrayRef({2, 5, 8}));
  auto pr = make_symbol_retriever("position_relative", {{"symbol_dim", 6}, {"max_rel_pos", 3}});
  EXPECT_EQ(pr.forward(x).sizes(), torch::IntArrayRef({5, 5, 6}));
}

TEST(SymbolRetrievers, LookupErrorsNameTheProblem) {
  expect_error([] { make_symbol_retriever("pos_relative", {}); },
               {"'pos_relative'", "'symbolic_attention'", "'rel_sym_attn'", "'positional_symbols'",
                "'position_relative'"});
  try {
    make_symbol_retriever("rel_sym_attn", {}, /*allow_rel_sym_attn=*/false);
    ADD_FAILURE() << "rel_sym_attn must be refused";
  } catch (const c10::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'symbolic_attention'"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("'rel_sym_attn'", msg.find("expected")), std::string::npos) << msg;
  }
  expect_error(
      [] {
        make_symbol_retriever("symbolic_attention", {{"d_model", 8}, {"n_heads", 2}});
      },
      {"SymbolicAttention", "missing", "'n_symbols'"});
  expect_error(
      [] {
        make_symbol_retriever("positional_symbols",
                              {{"symbol_dim", 8}, {"max_length", 5}, {"max_len", 5}});
      },
      {"PositionalSymbolRetriever", "'max_len'", "symbol_dim, max_length, sinusoidal"});
  expect_error(
      [] {
        make_symbol_retriever("position_relative", {{"symbol_dim", 8}, {"max_rel_pos", "3"}});
      },
      {"max_rel_pos", "an int"});
}

TEST(SymbolRetrievers, OptionsReadTheReferenceKeywords) {
  auto o = SymbolicAttentionOptions(1, 1, 1);
  apply_kwargs(o,
               {{"d_model", 64},
                {"n_heads", 4},
                {"n_symbols", 32},
                {"dropout", 0.1},
                {"scale", nullptr},
                {"trainable_symbols", false}},
               "SymbolicAttention");
  EXPECT_EQ(o.d_model(), 64);
  EXPECT_EQ(o.n_symbols(), 32);
  EXPECT_FALSE(o.scale().has_value());
  EXPECT_FALSE(o.trainable_symbols());
  auto kw = to_kwargs(RelationalSymbolicAttentionOptions(8, 2, 2, 5, 1));
  std::vector<std::string> keys;
  for (const auto& item : kw.items()) keys.push_back(item.key());
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, std::vector<std::string>({"causal_nbhd", "d_model", "dropout", "include_self",
                                            "n_symbols", "nbhd_delta", "normalize_rels",
                                            "rel_n_heads", "rel_scale", "symbolic_attn_n_heads",
                                            "symbolic_attn_scale"}));
}

// ---- transformer blocks --------------------------------------------------------------------

TEST(FeedForwardBlock, ParametersAndDefaultWidths) {
  FeedForwardBlock relu(8);
  EXPECT_EQ(state_dict_keys(*relu), std::vector<std::string>({"linear1.weight", "linear2.weight"}));
  EXPECT_EQ(relu->dff, 32);
  FeedForwardBlock swiglu(FeedForwardBlockOptions(8).activation("swiglu").use_bias(true));
  EXPECT_EQ(state_dict_keys(*swiglu),
            std::vector<std::string>({"linear1.weight", "linear1.bias", "linear2.weight",
                                      "linear2.bias", "linear3.weight", "linear3.bias"}));
  // int(2/3 * 4 * embed_dim) as Python computes it: 8 -> 21, 1024 -> 2730, 3 -> 8, 1 -> 2.
  EXPECT_EQ(swiglu->dff, 21);
  for (auto [d, dff] : std::vector<std::pair<int64_t, int64_t>>{{1024, 2730}, {3, 8}, {1, 2}}) {
    EXPECT_EQ(FeedForwardBlock(FeedForwardBlockOptions(d).activation("swiglu"))->dff, dff) << d;
  }
  EXPECT_EQ(FeedForwardBlock(FeedForwardBlockOptions(8).dff(5).activation("swiglu"))->dff, 5);
}

TEST(FeedForwardBlock, ComputesActivationAndGate) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 3, 8});
  FeedForwardBlock gelu(FeedForwardBlockOptions(8).dff(16).activation("gelu"));
  auto h = gelu->linear1(x);
  EXPECT_TRUE(all_close(gelu(x), gelu->linear2(torch::gelu(h, "tanh")), 1e-5, 1e-6));
  FeedForwardBlock swiglu(FeedForwardBlockOptions(8).activation("swiglu"));
  auto gated = torch::silu(swiglu->linear1(x)) * swiglu->linear3(x);
  EXPECT_TRUE(all_close(swiglu(x), swiglu->linear2(gated), 1e-5, 1e-6));
}

TEST(FeedForwardBlock, UnknownActivationListsTheValidNames) {
  expect_error([] { FeedForwardBlock(FeedForwardBlockOptions(8).activation("swish")); },
               {"'swish'", "'relu'", "'gelu'", "'identity'", "'swiglu'"});
  FeedForwardBlock ff(8);
  expect_error([&] { ff(torch::zeros({2, 7})); }, {"FeedForwardBlock", "8", "[2, 7]"});
}

TEST(RMSNorm, MatchesTheFormula) {
  torch::manual_seed(0);
  RMSNorm norm(RMSNormOptions(6).eps(1e-3));
  EXPECT_EQ(state_dict_keys(*norm), std::vector<std::string>({"weight"}));
  {
    torch::NoGradGuard no_grad;
    norm->weight.copy_(torch::linspace(0.5, 2.0, 6));
  }
  auto x = torch::randn({2, 3, 6}) * 0.05;
  auto expected = x / torch::sqrt(x.pow(2).mean(-1, true) + 1e-3) * norm->weight;
  EXPECT_TRUE(all_close(norm(x), expected, 1e-5, 1e-6));
  expect_error([&] { norm(torch::zeros({2, 5})); }, {"RMSNorm", "6", "[2, 5]"});
}

TEST(RMSNorm, NormalisesLowPrecisionInFloat32AndFloat64InFloat64) {
  torch::manual_seed(0);
  RMSNorm norm(16);
  auto x = torch::randn({4, 16}, torch::kDouble) * 3;
  auto exact = x / torch::sqrt(x.pow(2).mean(-1, true) + 1e-5);
  norm->to(torch::kDouble);
  auto out64 = norm(x);
  EXPECT_EQ(out64.scalar_type(), torch::kDouble);
  EXPECT_TRUE(all_close(out64, exact, 1e-13, 1e-14));  // a float32 computation misses by ~1e-7

  RMSNorm norm32(16);
  auto xb = x.to(torch::kBFloat16);
  auto xf = xb.to(torch::kFloat);
  auto from_float32 = (xf / torch::sqrt(xf.pow(2).mean(-1, true) + 1e-5)).to(torch::kBFloat16);
  auto out = norm32(xb);  // bfloat16 normalised output times the float32 weight
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(out, from_float32.to(torch::kFloat)));
}

TEST(CreateNorm, BuildsEachNormByName) {
  EXPECT_EQ(norm_names(), std::vector<std::string>({"layernorm", "rmsnorm", "none"}));
  auto ln = create_norm(4, "layernorm");
  EXPECT_EQ(state_dict_keys(*ln.ptr()), std::vector<std::string>({"weight", "bias"}));
  EXPECT_EQ(ln.get<torch::nn::LayerNorm>()->options.eps(), 1e-5);
  // The eps is visible on a low-variance input: x / sqrt(var + eps) with var = 2.5e-7.
  auto x = torch::tensor({{0.0, 1e-3, 0.0, 1e-3}}, torch::kFloat);
  const double expected = 5e-4 / std::sqrt(2.5e-7 + 1e-5);
  EXPECT_NEAR(ln.forward(x)[0][1].item<double>(), expected, 1e-5);
  auto rms = create_norm(4, "rmsnorm");
  EXPECT_EQ(state_dict_keys(*rms.ptr()), std::vector<std::string>({"weight"}));
  auto none = create_norm(4, "none");
  EXPECT_TRUE(state_dict_keys(*none.ptr()).empty());
  EXPECT_TRUE(torch::equal(none.forward(x), x));
  expect_error([] { create_norm(4, "batchnorm"); },
               {"norm_type", "'batchnorm'", "'layernorm'", "'rmsnorm'", "'none'"});
}

TEST(EncoderBlock, ParametersMatchTheReference) {
  EncoderBlock block(EncoderBlockOptions(8, 2, 16, 0.1, "relu", true));
  EXPECT_EQ(state_dict_keys(*block),
            std::vector<std::string>(
                {"norm1.weight", "norm1.bias", "self_attn.wq.weight", "self_attn.wk.weight",
                 "self_attn.wv.weight", "self_attn.wo.weight", "self_attn.wo.bias", "norm2.weight",
                 "norm2.bias", "ff_block.linear1.weight", "ff_block.linear1.bias",
                 "ff_block.linear2.weight", "ff_block.linear2.bias"}));
  EncoderBlock rms(EncoderBlockOptions(8, 2, 16, 0.1, "relu", true)
                       .norm_type("rmsnorm")
                       .bias(false)
                       .attn_kwargs({{"add_bias_kv", true}, {"n_kv_heads", 1}}));
  EXPECT_EQ(state_dict_keys(*rms),
            std::vector<std::string>({"norm1.weight", "self_attn.wq.weight", "self_attn.wk.weight",
                                      "self_attn.wk.bias", "self_attn.wv.weight",
                                      "self_attn.wv.bias", "self_attn.wo.weight", "norm2.weight",
                                      "ff_block.linear1.weight", "ff_block.linear2.weight"}));
  EXPECT_EQ(rms->self_attn->n_kv_heads, 1);
  EncoderBlock none(EncoderBlockOptions(8, 2, 16, 0.1, "relu", true).norm_type("none"));
  EXPECT_EQ(state_dict_keys(*none),
            std::vector<std::string>(
                {"self_attn.wq.weight", "self_attn.wk.weight", "self_attn.wv.weight",
                 "self_attn.wo.weight", "self_attn.wo.bias", "ff_block.linear1.weight",
                 "ff_block.linear1.bias", "ff_block.linear2.weight", "ff_block.linear2.bias"}));
}

TEST(EncoderBlock, PreAndPostNormOrders) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 5, 8});
  EncoderBlock pre(EncoderBlockOptions(8, 2, 16, 0.0, "relu", true).causal(true));
  auto attend = [](EncoderBlock& b, const torch::Tensor& in) {
    return std::get<0>(b->self_attn->forward(in, in, in, {}, {}, {}, true));
  };
  auto y = x + attend(pre, pre->norm1.forward(x));
  EXPECT_TRUE(all_close(pre(x), y + pre->ff_block(pre->norm2.forward(y)), 1e-5, 1e-6));

  EncoderBlock post(EncoderBlockOptions(8, 2, 16, 0.0, "relu", false).causal(true));
  auto z = post->norm1.forward(x + attend(post, x));
  EXPECT_TRUE(all_close(post(x), post->norm2.forward(z + post->ff_block(z)), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(post->forward(x, {}, {}, /*need_weights=*/true), post(x), 1e-5, 1e-6));
}

TEST(EncoderBlock, DropoutOnlyInTraining) {
  torch::manual_seed(0);
  EncoderBlock block(EncoderBlockOptions(8, 2, 16, 0.5, "relu", false));
  auto x = torch::randn({2, 5, 8});
  block->eval();
  auto a = block(x);
  EXPECT_TRUE(torch::equal(a, block(x)));
  block->train();
  EXPECT_FALSE(torch::allclose(block(x), a, 1e-3, 1e-4));
}

TEST(EncoderBlock, RejectsBadOptionsAndInputs) {
  expect_error([] { EncoderBlock(EncoderBlockOptions(10, 4, 16, 0.1, "relu", true)); },
               {"EncoderBlock", "d_model (10)", "n_heads (4)"});
  expect_error(
      [] { EncoderBlock(EncoderBlockOptions(8, 2, 16, 0.1, "relu", true).norm_type("ln")); },
      {"'ln'", "'layernorm'", "'rmsnorm'", "'none'"});
  expect_error([] { EncoderBlock(EncoderBlockOptions(8, 2, 16, 0.1, "rleu", true)); },
               {"'rleu'", "'relu'", "'swiglu'"});
  expect_error(
      [] {
        EncoderBlock(
            EncoderBlockOptions(8, 2, 16, 0.1, "relu", true).attn_kwargs({{"n_heads", 4}}));
      },
      {"attn_kwargs", "'n_heads'"});
  expect_error(
      [] {
        EncoderBlock(
            EncoderBlockOptions(8, 2, 16, 0.1, "relu", true).attn_kwargs({{"kv_heads", 1}}));
      },
      {"'kv_heads'", "n_kv_heads"});
  EncoderBlock block(EncoderBlockOptions(8, 2, 16, 0.1, "relu", true));
  expect_error([&] { block(torch::zeros({2, 5, 6})); }, {"EncoderBlock", "x", "8", "[2, 5, 6]"});
}

TEST(DecoderBlock, ParametersMatchTheReferenceAndCrossAttentionUsesNHeads) {
  DecoderBlock block(DecoderBlockOptions(8, 2, 1, 16, 0.1, "relu", true));
  EXPECT_EQ(state_dict_keys(*block), std::vector<std::string>({"norm1.weight",
                                                               "norm1.bias",
                                                               "self_attn.wq.weight",
                                                               "self_attn.wk.weight",
                                                               "self_attn.wv.weight",
                                                               "self_attn.wo.weight",
                                                               "self_attn.wo.bias",
                                                               "norm2.weight",
                                                               "norm2.bias",
                                                               "cross_attn.wq.weight",
                                                               "cross_attn.wk.weight",
                                                               "cross_attn.wv.weight",
                                                               "cross_attn.wo.weight",
                                                               "cross_attn.wo.bias",
                                                               "norm3.weight",
                                                               "norm3.bias",
                                                               "ff_block.linear1.weight",
                                                               "ff_block.linear1.bias",
                                                               "ff_block.linear2.weight",
                                                               "ff_block.linear2.bias"}));
  EXPECT_EQ(block->cross_attn->options.n_heads(), 2);  // n_heads, not n_heads_cross = 1
}

TEST(DecoderBlock, PreAndPostNormOrders) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 5, 8}), ctx = torch::randn({2, 7, 8});
  auto self = [](DecoderBlock& b, const torch::Tensor& in) {
    return std::get<0>(b->self_attn->forward(in, in, in, {}, {}, {}, b->options.causal()));
  };
  auto cross = [&](DecoderBlock& b, const torch::Tensor& in) {
    return std::get<0>(b->cross_attn->forward(in, ctx, ctx));
  };
  DecoderBlock pre(DecoderBlockOptions(8, 2, 2, 16, 0.0, "relu", true).causal(true));
  auto y = x + self(pre, pre->norm1.forward(x));
  y = y + cross(pre, pre->norm2.forward(y));
  auto out = pre(x, ctx);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({2, 5, 8}));
  EXPECT_TRUE(all_close(out, y + pre->ff_block(pre->norm3.forward(y)), 1e-5, 1e-6));

  DecoderBlock post(DecoderBlockOptions(8, 2, 2, 16, 0.0, "relu", false).norm_type("rmsnorm"));
  auto z = post->norm1.forward(x + self(post, x));
  z = post->norm2.forward(z + cross(post, z));
  EXPECT_TRUE(all_close(post(x, ctx), post->norm3.forward(z + post->ff_block(z)), 1e-5, 1e-6));
  expect_error([&] { post(x, torch::zeros({2, 7, 4})); }, {"DecoderBlock", "context", "8"});
  expect_error([&] { post(x, torch::zeros({3, 7, 8})); }, {"DecoderBlock", "batch", "2", "3"});
}

// ---- dtypes, devices, cloning --------------------------------------------------------------

TEST(Layers, RunInEveryFloatingDtype) {
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16}) {
    torch::manual_seed(0);
    auto x = torch::randn({2, 5, 8}).to(dtype);
    auto check = [&](torch::nn::Module& m, const torch::Tensor& out, const char* what) {
      for (const auto& p : m.parameters()) EXPECT_EQ(p.scalar_type(), dtype) << what;
      EXPECT_EQ(out.scalar_type(), dtype) << what;
      EXPECT_TRUE(out.isfinite().all().item<bool>()) << what;
    };
    SinusoidalPositionalEncoding sin(8);
    sin->to(dtype);
    EXPECT_EQ(sin->pe.scalar_type(), dtype);
    check(*sin, sin(x), "SinusoidalPositionalEncoding");
    LearnedPositionalEmbeddings learned(8);
    learned->to(dtype);
    check(*learned, learned(x), "LearnedPositionalEmbeddings");
    std::vector<torch::nn::AnyModule> retrievers = {
        make_symbol_retriever("symbolic_attention",
                              {{"d_model", 8}, {"n_heads", 2}, {"n_symbols", 4}}),
        make_symbol_retriever("rel_sym_attn", {{"d_model", 8},
                                               {"rel_n_heads", 2},
                                               {"symbolic_attn_n_heads", 2},
                                               {"n_symbols", 4},
                                               {"nbhd_delta", 2}}),
        make_symbol_retriever("positional_symbols", {{"symbol_dim", 8}, {"max_length", 5}}),
        make_symbol_retriever("position_relative", {{"symbol_dim", 8}, {"max_rel_pos", 2}})};
    for (auto& r : retrievers) {
      r.ptr()->to(dtype);
      check(*r.ptr(), r.forward(x), "symbol retriever");
    }
    EncoderBlock enc(
        EncoderBlockOptions(8, 2, std::nullopt, 0.1, "swiglu", true).norm_type("rmsnorm"));
    enc->to(dtype);
    check(*enc, enc(x), "EncoderBlock");
    DecoderBlock dec(DecoderBlockOptions(8, 2, 2, 16, 0.1, "gelu", false));
    dec->to(dtype);
    check(*dec, dec(x, x), "DecoderBlock");
  }
}

TEST(Layers, CloneCopiesParametersIntoIndependentModules) {
  torch::manual_seed(0);
  EncoderBlock block(EncoderBlockOptions(8, 2, 16, 0.0, "relu", false).norm_type("rmsnorm"));
  auto copy = std::dynamic_pointer_cast<EncoderBlockImpl>(block->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(state_dict_keys(*copy), state_dict_keys(*block));
  auto x = torch::randn({1, 4, 8});
  EXPECT_TRUE(torch::equal(copy->forward(x), block(x)));
  {
    torch::NoGradGuard no_grad;
    copy->named_parameters()["norm1.weight"].fill_(2.0);
  }
  EXPECT_TRUE(torch::equal(block->named_parameters()["norm1.weight"], torch::ones({8})));
  EXPECT_TRUE(torch::equal(copy->norm1.forward(x),
                           copy->named_parameters()["norm1.weight"] * block->norm1.forward(x)));
}
