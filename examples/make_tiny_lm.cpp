// Builds a tiny Dual Attention Transformer language model, teaches it to count (each token is the
// previous one plus one, modulo the vocabulary) and saves it with save_pretrained, in the layout of
// the published checkpoints (config.json + model.safetensors).
//
//   make_tiny_lm OUT_DIR
#include <dual_attention/language_models.h>
#include <torch/torch.h>

#include <iostream>

using namespace dual_attention;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR\n";
    return 2;
  }
  torch::manual_seed(0);
  const int64_t vocab_size = 64, block_size = 32;
  // 2 layers of 2 self-attention + 2 relational heads, 16 symbols shared by the layers, RoPE,
  // swiglu: the shape of the published DAT models, scaled down.
  DualAttnTransformerLM model(
      DualAttnTransformerLMOptions(vocab_size, /*d_model=*/32, /*n_layers=*/2, /*n_heads_sa=*/2,
                                   /*n_heads_ra=*/2,
                                   {{"d_model", 32}, {"n_heads", 2}, {"n_symbols", 16}},
                                   /*dff=*/std::nullopt, /*dropout_rate=*/0.0, "swiglu",
                                   /*norm_first=*/true, block_size)
          .pos_enc_type("RoPE")
          .ra_kwargs({{"n_kv_heads", 1}, {"symmetric_rels", true}}));
  model->pretty_print(std::cout);
  std::cout << ": " << model->get_num_params() << " parameters\n";

  // Counting sequences from random starts: the target of each position is the next token.
  auto optimizer = model->configure_optimizers(/*weight_decay=*/0.1, /*learning_rate=*/1e-2,
                                               /*betas=*/{0.9, 0.95});
  model->train();
  for (int step = 0; step <= 60; ++step) {
    auto start = torch::randint(0, vocab_size, {16, 1});
    auto tokens = (start + torch::arange(block_size + 1)) % vocab_size;  // [16, block_size + 1]
    auto [logits, loss] = model->forward(tokens.slice(1, 0, block_size), tokens.slice(1, 1));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (step % 20 == 0) std::cout << "  step " << step << ": loss " << loss.item<double>() << "\n";
  }
  model->eval();
  model->save_pretrained(argv[1]);
  std::cout << "  saved to " << argv[1] << "\n";
  return 0;
}
