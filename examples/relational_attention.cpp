// Relational attention and dual attention on random data: shapes of outputs, scores and relations.
#include <dual_attention/dual_attention.h>
#include <dual_attention/relational_attention.h>
#include <torch/torch.h>

#include <iostream>

using namespace dual_attention;

int main() {
  torch::manual_seed(0);
  const int64_t batch = 2, len = 10, d_model = 64;
  auto x = torch::randn({batch, len, d_model});
  auto symbols = torch::randn({batch, len, d_model});

  // 4 relational heads, 8 relations, symmetric relations, 2 key/value heads.
  RelationalAttention ra(RelationalAttentionOptions(d_model, 4)
                             .n_relations(8)
                             .n_kv_heads(2)
                             .symmetric_rels(true)
                             .rel_activation("tanh"));
  auto [out, attn_scores, relations] = ra->forward(x, symbols, {}, {}, {}, /*is_causal=*/true);
  std::cout << ra << "\n  out " << out.sizes() << ", attention scores " << attn_scores.sizes()
            << ", relations " << relations.sizes() << "\n";

  // Dual attention: 2 self-attention heads + 2 relational heads, keyword dicts as in Python.
  DualAttention da(DualAttentionOptions(d_model, 2, 2, /*dropout=*/0.0)
                       .ra_kwargs({{"n_relations", 4}, {"rel_activation", "identity"}})
                       .sa_kwargs({{"n_kv_heads", 1}}));
  auto [y, sa_scores, ra_scores] = da->forward(x, symbols, {}, /*is_causal=*/true, {}, {},
                                               /*need_weights=*/true);
  std::cout << da << "\n  out " << y.sizes() << ", self-attention scores " << sa_scores.sizes()
            << ", relational outputs " << ra_scores.size() << "\n";

  int64_t n_params = 0;
  for (const auto& p : da->parameters()) n_params += p.numel();
  std::cout << "  parameters: " << n_params << "\n";
  return 0;
}
