// Trains a Seq2SeqDualAttnTransformer to reverse sequences of tokens (synthetic data made on the
// fly), with the pieces of dual_attention/training.h: AdamW, the cosine schedule, clipping. Prints
// the loss falling and the exact-match accuracy on fresh sequences, then saves the model.
//
//   train_seq2seq [OUT_DIR] [STEPS]
#include <dual_attention/seq2seq_models.h>
#include <dual_attention/training.h>
#include <torch/torch.h>

#include <iostream>
#include <string>

using namespace dual_attention;
using namespace dual_attention::training;

constexpr int64_t kVocab = 12, kLength = 8, kStart = kVocab;  // ids 0..11; 12 starts the target

// A batch of (source, decoder input, target): target = source reversed; the decoder reads the
// start token followed by the target shifted right (teacher forcing).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> reversal_batch(int64_t batch) {
  auto source = torch::randint(0, kVocab, {batch, kLength});
  auto target = source.flip(1);
  auto start = torch::full({batch, 1}, kStart, torch::kLong);
  auto decoder_input = torch::cat({start, target.slice(1, 0, kLength - 1)}, 1);
  return {source, decoder_input, target};
}

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "build/demo/seq2seq-reverse";
  const int64_t steps = argc > 2 ? std::stoll(argv[2]) : 300;
  torch::manual_seed(0);
  torch::set_num_threads(2);
  const Kwargs block = {{"n_heads_sa", 2},      {"n_heads_ra", 2},     {"dff", 128},
                        {"activation", "gelu"}, {"dropout_rate", 0.0}, {"norm_first", true}};
  Kwargs decoder = block;
  decoder["n_heads_cross"] = 4;
  decoder["causal"] = true;
  Seq2SeqDualAttnTransformer model(Seq2SeqDualAttnTransformerOptions(
      {{"type", "token"}, {"vocab_size", kVocab}}, {{"type", "token"}, {"vocab_size", kVocab + 1}},
      "positional_symbols", {{"symbol_dim", 64}, {"max_length", kLength}}, /*d_model=*/64,
      /*out_dim=*/kVocab,
      /*n_layers_enc=*/2, /*n_layers_dec=*/2, block, decoder, kLength, kLength));
  std::cout << "Seq2SeqDualAttnTransformer, " << model->get_num_params() << " parameters\n";

  torch::optim::AdamW optimizer(distinct_parameters(*model), torch::optim::AdamWOptions(3e-3));
  const auto schedule = CosineScheduleOptions(3e-3, 20, steps).min_lr(3e-4);
  model->train();
  for (int64_t step = 0; step < steps; ++step) {
    set_learning_rate(optimizer, cosine_learning_rate(step, schedule));
    auto [source, decoder_input, target] = reversal_batch(64);
    auto [logits, loss] = model->forward(source, decoder_input, target);
    optimizer.zero_grad();
    loss.backward();
    clip_grad_norm(distinct_parameters(*model), 1.0);
    optimizer.step();
    if (step % 50 == 0 || step == steps - 1)
      std::cout << "  step " << step << ": loss " << loss.item<double>() << "\n";
  }

  // Exact match with teacher forcing on fresh sequences (each position's argmax is its token).
  model->eval();
  torch::NoGradGuard no_grad;
  auto [source, decoder_input, target] = reversal_batch(512);
  auto logits = std::get<0>(model->forward(source, decoder_input, target));
  const double exact =
      (logits.argmax(-1) == target).all(1).to(torch::kDouble).mean().item<double>();
  std::cout << "  reversed exactly: " << 100 * exact << "% of 512 new sequences\n";
  model->save_pretrained(out);
  std::cout << "  saved to " << out << "\n";
  return 0;
}
