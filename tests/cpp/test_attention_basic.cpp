#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dual_attention/attention.h"
#include "dual_attention/attention_utils.h"

using namespace dual_attention;

TEST(Attention, FusedAndManualPathsAgree) {
  torch::manual_seed(0);
  Attention attn(AttentionOptions(16, 4, 0.0).n_kv_heads(2));
  auto x = torch::randn({2, 5, 16});
  auto [fused, none] =
      attn->forward(x, x, x, {}, {}, {}, /*is_causal=*/true, /*need_weights=*/false);
  auto [manual, scores] = attn->forward(x, x, x, {}, {}, {}, true, true);
  EXPECT_FALSE(none.defined());
  ASSERT_TRUE(scores.defined());
  EXPECT_TRUE(torch::allclose(fused, manual, 1e-5, 1e-6));
}
