// Behaviour of the core layers (Attention, RelationalAttention, DualAttention), one test per
// property, with the expected values computed here from the formulas of the paper and the
// reference (relational_attention.h) on the module's own parameters. Parity with the reference's
// outputs is in test_parity.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dual_attention/attention.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/language_models.h"
#include "dual_attention/relational_attention.h"
#include "test_support.h"

using namespace dual_attention;
using test_support::expect_error;
using torch::indexing::Slice;

namespace {

constexpr double kRtol = 1e-5, kAtol = 1e-6;

// [b, n, h * w] -> [b, n, h, w]
torch::Tensor split_heads(const torch::Tensor& t, int64_t heads) {
  return t.view({t.size(0), t.size(1), heads, -1});
}

// softmax_j(q_i . k_j * scale) over heads: q, k [b, n, h, w] -> [b, h, n, n]
torch::Tensor attention_weights(const torch::Tensor& q, const torch::Tensor& k, double scale) {
  return torch::softmax(torch::einsum("bihw,bjhw->bhij", {q, k}) * scale, -1);
}

}  // namespace

// ---- Attention -------------------------------------------------------------------------------

TEST(Attention, FusedAndManualPathsAgree) {
  torch::manual_seed(0);
  Attention attn(AttentionOptions(16, 4, 0.0).n_kv_heads(2));
  auto x = torch::randn({2, 5, 16});
  auto [fused, none] =
      attn->forward(x, x, x, {}, {}, {}, /*is_causal=*/true, /*need_weights=*/false);
  auto [manual, scores] = attn->forward(x, x, x, {}, {}, {}, true, true);
  EXPECT_FALSE(none.defined());
  ASSERT_TRUE(scores.defined());
  EXPECT_TRUE(torch::allclose(fused, manual, kRtol, kAtol));
}

TEST(Attention, ConsecutiveQueryHeadsShareEachKeyValueHead) {
  torch::manual_seed(1);
  Attention attn(AttentionOptions(16, 4, 0.0).n_kv_heads(2));
  ASSERT_EQ(attn->n_rep_kv, 2);
  EXPECT_EQ(attn->wk->weight.sizes(), torch::IntArrayRef({8, 16}));  // 2 kv heads of width 4
  auto x = torch::randn({2, 5, 16});
  auto [out, scores] = attn->forward(x, x, x, {}, {}, {}, false, /*need_weights=*/true);

  auto q = split_heads(attn->wq(x), 4);
  auto k = split_heads(attn->wk(x), 2).repeat_interleave(2, /*dim=*/2);  // heads 0,1 <- kv 0
  auto v = split_heads(attn->wv(x), 2).repeat_interleave(2, 2);
  auto a = attention_weights(q, k, 1.0 / std::sqrt(4.0));
  auto heads = torch::einsum("bhij,bjhw->bihw", {a, v}).reshape({2, 5, 16});
  EXPECT_TRUE(torch::allclose(scores, a, kRtol, kAtol));
  EXPECT_TRUE(torch::allclose(out, attn->wo(heads), kRtol, kAtol));
}

TEST(Attention, CausalOutputAtAPositionIgnoresLaterPositions) {
  torch::manual_seed(2);
  Attention attn(AttentionOptions(16, 4, 0.0));
  auto x = torch::randn({1, 6, 16});
  auto changed = x.clone();
  changed.index_put_({0, Slice(4)}, torch::randn({2, 16}));
  auto [out, s1] = attn->forward(x, x, x, {}, {}, {}, /*is_causal=*/true);
  auto [out_changed, s2] = attn->forward(changed, changed, changed, {}, {}, {}, true);
  EXPECT_TRUE(torch::allclose(out.index({0, Slice(0, 4)}), out_changed.index({0, Slice(0, 4)}),
                              kRtol, kAtol));
  EXPECT_FALSE(torch::allclose(out.index({0, 5}), out_changed.index({0, 5}), kRtol, kAtol));
}

TEST(Attention, TotalNHeadsSetsTheHeadWidthAndTheOutputWidth) {
  Attention attn(AttentionOptions(16, 2, 0.0).total_n_heads(4));
  EXPECT_EQ(attn->head_dim, 4);  // d_model / total_n_heads
  EXPECT_DOUBLE_EQ(attn->attn_scale, 0.5);
  auto x = torch::randn({1, 3, 16});
  EXPECT_EQ(std::get<0>(attn->forward(x, x, x)).sizes(), torch::IntArrayRef({1, 3, 8}));
}

// ---- RelationalAttention ---------------------------------------------------------------------

TEST(RelationalAttention, OutputScoresAndRelationsFollowTheFormula) {
  for (const char* activation : {"identity", "tanh"}) {
    SCOPED_TRACE(activation);
    torch::manual_seed(3);
    RelationalAttention ra(
        RelationalAttentionOptions(16, 4).n_relations(8).rel_activation(activation));
    torch::NoGradGuard no_grad;
    auto x = torch::randn({2, 5, 16}), s = torch::randn({2, 5, 16});
    auto [out, scores, relations] = ra->forward(x, s, {}, {}, {}, false, /*need_weights=*/true);

    // a^h_ij = softmax_j(<q_i, k_j>_h / sqrt(head_dim)), head_dim = 4
    auto a = attention_weights(split_heads(ra->wq_attn(x), 4), split_heads(ra->wk_attn(x), 4), 0.5);
    // r_ijl = act(<qrel_il, krel_jl> / sqrt(rel_proj_dim)), rel_proj_dim = 16 / 8 = 2
    auto r = torch::einsum("bilw,bjlw->bijl",
                           {split_heads(ra->wq_rel(x), 8), split_heads(ra->wk_rel(x), 8)}) /
             std::sqrt(2.0);
    if (std::string(activation) == "tanh") r = torch::tanh(r);
    // A_i^h = sum_j a^h_ij (sum_l r_ijl W_r[h, :, l] + s_j W_s^h), then W_o concat_h A_i^h
    auto heads = torch::einsum("bhij,bijl,hwl->bihw", {a, r, ra->wr}) +
                 torch::einsum("bhij,bjhw->bihw", {a, split_heads(ra->wv(s), 4)});
    EXPECT_TRUE(torch::allclose(scores, a, kRtol, kAtol));
    EXPECT_TRUE(torch::allclose(relations, r, kRtol, kAtol));
    EXPECT_TRUE(torch::allclose(out, ra->wo(heads.reshape({2, 5, 16})), kRtol, kAtol));
  }
}

TEST(RelationalAttention, SymmetricRelationsShareTheKeyProjection) {
  torch::manual_seed(4);
  RelationalAttention ra(RelationalAttentionOptions(16, 4).symmetric_rels(true));
  EXPECT_TRUE(ra->wk_rel->weight.is_same(ra->wq_rel->weight));
  auto params = ra->named_parameters();
  ASSERT_TRUE(params.contains("wq_rel.weight") && params.contains("wk_rel.weight"));
  EXPECT_TRUE(params["wk_rel.weight"].is_same(params["wq_rel.weight"]));
  // So every relation is symmetric: r_ijl = r_jil.
  auto x = torch::randn({2, 5, 16});
  auto relations = std::get<2>(ra->forward(x, torch::randn({2, 5, 16})));
  EXPECT_TRUE(torch::allclose(relations, relations.transpose(1, 2), kRtol, kAtol));

  RelationalAttention asymmetric(RelationalAttentionOptions(16, 4));
  EXPECT_FALSE(asymmetric->wk_rel->weight.is_same(asymmetric->wq_rel->weight));
}

TEST(RelationalAttention, NRelationsDefaultsToNHeadsAndRelProjDimFillsTheHeads) {
  RelationalAttention ra(RelationalAttentionOptions(16, 4));
  EXPECT_EQ(ra->n_relations, 4);
  EXPECT_EQ(ra->rel_proj_dim, 4);  // head_dim * n_heads / n_relations
  EXPECT_EQ(ra->wr.sizes(), torch::IntArrayRef({4, 4, 4}));
  RelationalAttention more(RelationalAttentionOptions(16, 4).n_relations(8));
  EXPECT_EQ(more->rel_proj_dim, 2);
  EXPECT_EQ(more->wq_rel->weight.sizes(), torch::IntArrayRef({16, 16}));  // 8 relations x 2
  try {
    RelationalAttention(RelationalAttentionOptions(16, 4).n_relations(3));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rel_proj_dim (5) * n_relations (3) must equal"),
              std::string::npos)
        << e.what();
  }
}

TEST(RelationalAttention, RelativeSymbolsEqualToPositionSymbolsGiveTheSameOutput) {
  torch::manual_seed(5);
  RelationalAttention per_position(RelationalAttentionOptions(16, 4));
  RelationalAttention per_pair(
      RelationalAttentionOptions(16, 4).use_relative_positional_symbols(true));
  {
    torch::NoGradGuard no_grad;
    auto source = per_position->named_parameters();
    for (auto& p : per_pair->named_parameters()) p.value().copy_(source[p.key()]);
  }
  auto x = torch::randn({1, 5, 16}), s = torch::randn({1, 5, 16});
  auto s_ij = s[0].unsqueeze(0).expand({5, 5, 16});  // s_ij = s_j
  auto expected = std::get<0>(per_position->forward(x, s));
  EXPECT_TRUE(torch::allclose(std::get<0>(per_pair->forward(x, s_ij)), expected, kRtol, kAtol));
}

TEST(RelationalAttention, CausalOutputAtAPositionIgnoresLaterPositions) {
  torch::manual_seed(6);
  RelationalAttention ra(RelationalAttentionOptions(16, 4).rel_activation("tanh"));
  auto x = torch::randn({1, 6, 16}), s = torch::randn({1, 6, 16});
  auto x2 = x.clone(), s2 = s.clone();
  x2.index_put_({0, 5}, torch::randn({16}));
  s2.index_put_({0, 5}, torch::randn({16}));
  for (bool need_weights : {true, false}) {
    auto out = std::get<0>(ra->forward(x, s, {}, {}, {}, /*is_causal=*/true, need_weights));
    auto out2 = std::get<0>(ra->forward(x2, s2, {}, {}, {}, true, need_weights));
    EXPECT_TRUE(
        torch::allclose(out.index({0, Slice(0, 5)}), out2.index({0, Slice(0, 5)}), kRtol, kAtol));
  }
}

// ---- DualAttention ---------------------------------------------------------------------------

TEST(DualAttention, ShareAttnParamsIsOneTensorUnderTwoNames) {
  DualAttention da(DualAttentionOptions(16, 2, 2, 0.0).share_attn_params(true));
  auto params = da->named_parameters();
  for (const auto& [sa, ra] :
       {std::pair{"self_attention.wq.weight", "relational_attention.wq_attn.weight"},
        std::pair{"self_attention.wk.weight", "relational_attention.wk_attn.weight"}}) {
    ASSERT_TRUE(params.contains(sa) && params.contains(ra)) << sa << " / " << ra;
    EXPECT_TRUE(params[sa].is_same(params[ra])) << sa << " / " << ra;
  }
  // The values are separate.
  EXPECT_FALSE(
      params["self_attention.wv.weight"].is_same(params["relational_attention.wv.weight"]));
  DualAttention unshared(DualAttentionOptions(16, 2, 2, 0.0));
  EXPECT_FALSE(unshared->self_attention->wq->weight.is_same(
      unshared->relational_attention->wq_attn->weight));
}

TEST(DualAttention, OutputIsTheSelfAttentionHeadsThenTheRelationalHeads) {
  torch::manual_seed(7);
  DualAttention da(DualAttentionOptions(16, 1, 3, 0.0));
  EXPECT_EQ(da->total_n_heads, 4);
  EXPECT_EQ(da->self_attention->head_dim, 4);  // d_model / (n_heads_sa + n_heads_ra)
  auto x = torch::randn({2, 5, 16}), s = torch::randn({2, 5, 16});
  auto [out, sa_scores, ra_scores] = da->forward(x, s, {}, /*is_causal=*/true, {}, {}, true);
  auto sa = std::get<0>(da->self_attention->forward(x, x, x, {}, {}, {}, true));     // [2, 5, 4]
  auto ra = std::get<0>(da->relational_attention->forward(x, s, {}, {}, {}, true));  // [2, 5, 12]
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({2, 5, 16}));
  EXPECT_TRUE(torch::allclose(out, torch::cat({sa, ra}, -1), kRtol, kAtol));
  EXPECT_EQ(sa_scores.sizes(), torch::IntArrayRef({2, 1, 5, 5}));
  ASSERT_EQ(ra_scores.size(), 2u);  // attention scores and relations
  EXPECT_EQ(ra_scores[0].sizes(), torch::IntArrayRef({2, 3, 5, 5}));
  EXPECT_EQ(ra_scores[1].sizes(), torch::IntArrayRef({2, 5, 5, 3}));
}

TEST(DualAttention, WithoutSelfAttentionHeadsItIsRelationalAttention) {
  torch::manual_seed(8);
  DualAttention da(DualAttentionOptions(16, 0, 4, 0.0));
  EXPECT_FALSE(da->use_self_attn);
  EXPECT_TRUE(da->named_parameters().find("self_attention.wq.weight") == nullptr);
  auto x = torch::randn({1, 5, 16}), s = torch::randn({1, 5, 16});
  auto [out, sa_scores, ra_scores] = da->forward(x, s, {}, false, {}, {}, true);
  EXPECT_FALSE(sa_scores.defined());
  EXPECT_TRUE(
      torch::allclose(out, std::get<0>(da->relational_attention->forward(x, s)), kRtol, kAtol));
}

// ---- keywords: Options::from_kwargs ------------------------------------------------------------

TEST(Kwargs, RequiredKeywordsAreTheConstructorArgumentsInOrder) {
  EXPECT_EQ(required_keywords<AttentionOptions>(),
            std::vector<std::string>({"d_model", "n_heads", "dropout"}));
  EXPECT_EQ(required_keywords<RelationalAttentionOptions>(),
            std::vector<std::string>({"d_model", "n_heads"}));
  EXPECT_EQ(
      required_keywords<TransformerLMOptions>(),
      std::vector<std::string>({"vocab_size", "d_model", "n_layers", "n_heads", "dff",
                                "dropout_rate", "activation", "norm_first", "max_block_size"}));
}

TEST(Kwargs, FromKwargsIsTheConstructorFollowedByTheKeywords) {
  auto o = RelationalAttentionOptions::from_kwargs(
      {{"d_model", 32}, {"n_heads", 4}, {"n_relations", 8}, {"symmetric_rels", true}});
  EXPECT_EQ(o.d_model(), 32);
  EXPECT_EQ(o.n_heads(), 4);
  EXPECT_EQ(o.n_relations(), 8);
  EXPECT_TRUE(o.symmetric_rels());
  EXPECT_EQ(o.rel_activation(), "identity");  // the default
  EXPECT_EQ(to_kwargs(AttentionOptions::from_kwargs(to_kwargs(AttentionOptions(8, 2, 0.1)))),
            to_kwargs(AttentionOptions(8, 2, 0.1)));
}

TEST(Kwargs, FromKwargsNamesAMissingUnknownOrMistypedKeyword) {
  expect_error(
      [] {
        AttentionOptions::from_kwargs({{"d_model", 8}, {"n_heads", 2}});
      },
      {"Attention: missing required argument 'dropout'"});
  expect_error(
      [] {
        AttentionOptions::from_kwargs({{"d_model", 8}, {"n_heads", 2}, {"dropout", 0.0}, {"x", 1}});
      },
      {"Attention: unexpected keyword argument 'x'", "valid keywords are: d_model, n_heads"});
  expect_error(
      [] {
        RelationalAttentionOptions::from_kwargs({{"d_model", 8}, {"n_heads", "2"}});
      },
      {"keyword argument 'n_heads' got \"2\" (str), expected an int"});
  EXPECT_EQ(RMSNormOptions::from_kwargs({{"dim", 8}}, "my_block.norm").dim(), 8);
  expect_error([] { RMSNormOptions::from_kwargs(Kwargs::object(), "my_block.norm"); },
               {"my_block.norm: missing required argument 'dim'"});
}

TEST(Kwargs, OptionStringsListEveryValidName) {
  expect_error([] { DualAttention(DualAttentionOptions(16, 2, 2, 0.0).ra_type("xyz")); },
               {"DualAttention: ra_type 'xyz' is not valid; expected one of "
                "'relational_attention', 'rca', 'disrca'"});
  expect_error(
      [] {
        TransformerLM(TransformerLMOptions(50, 16, 1, 2, std::nullopt, 0.0, "relu", true, 8)
                          .pos_enc_type("alibi"));
      },
      {"TransformerLM: pos_enc_type 'alibi' is not valid; expected one of 'pos_emb', 'RoPE'"});
}
