// Trains a VisionDualAttnTransformer on synthetic images (made on the fly): two 4x4 squares of
// random colours on a black 8x8 image, side by side; the label says whether they have the same
// colour. Prints the loss falling and the accuracy on fresh images, then saves the model.
//
//   train_vision [OUT_DIR] [STEPS]
#include <dual_attention/training.h>
#include <dual_attention/vision_models.h>
#include <torch/torch.h>

#include <iostream>
#include <string>

using namespace dual_attention;
using namespace dual_attention::training;

// Images [batch, 3, 4, 8] (channels, height, width as the patches are cut: two 4x4 patches) and
// labels [batch]: 1 when both squares have the same colour (half of the batch).
std::pair<torch::Tensor, torch::Tensor> same_colour_batch(int64_t batch) {
  const int64_t n_colours = 6;
  auto palette = torch::rand({n_colours, 3});
  auto left = torch::randint(0, n_colours, {batch});
  auto labels = torch::randint(0, 2, {batch});
  // Different: another colour, never the left one.
  auto right = torch::where(labels.to(torch::kBool), left,
                            (left + torch::randint(1, n_colours, {batch})) % n_colours);
  auto colours = torch::stack({palette.index({left}), palette.index({right})}, 1);  // [b, 2, 3]
  // Each square fills one 4x4 patch.
  auto images = colours.permute({0, 2, 1}).unsqueeze(2).unsqueeze(-1).expand({batch, 3, 4, 2, 4});
  return {images.reshape({batch, 3, 4, 8}) + 0.05 * torch::randn({batch, 3, 4, 8}), labels};
}

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "build/demo/vision-same-colour";
  const int64_t steps = argc > 2 ? std::stoll(argv[2]) : 200;
  torch::manual_seed(0);
  torch::set_num_threads(2);
  VisionDualAttnTransformer model(VisionDualAttnTransformerOptions(
      /*image_shape=*/{3, 4, 8}, /*patch_size=*/{4, 4}, /*num_classes=*/2, /*d_model=*/32,
      /*n_layers=*/2, /*n_heads_sa=*/2, /*n_heads_ra=*/2, /*dff=*/64, /*dropout_rate=*/0.0, "gelu",
      /*norm_first=*/true, "positional_symbols", {{"symbol_dim", 32}, {"max_length", 3}}));
  std::cout << "VisionDualAttnTransformer, " << model->get_num_params() << " parameters\n";

  torch::optim::AdamW optimizer(distinct_parameters(*model), torch::optim::AdamWOptions(3e-3));
  const auto schedule = CosineScheduleOptions(3e-3, 10, steps).min_lr(3e-4);
  model->train();
  for (int64_t step = 0; step < steps; ++step) {
    set_learning_rate(optimizer, cosine_learning_rate(step, schedule));
    auto [images, labels] = same_colour_batch(64);
    auto loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    optimizer.zero_grad();
    loss.backward();
    clip_grad_norm(distinct_parameters(*model), 1.0);
    optimizer.step();
    if (step % 50 == 0 || step == steps - 1)
      std::cout << "  step " << step << ": loss " << loss.item<double>() << "\n";
  }

  model->eval();
  torch::NoGradGuard no_grad;
  auto [images, labels] = same_colour_batch(1000);
  const double accuracy =
      (model->forward(images).argmax(-1) == labels).to(torch::kDouble).mean().item<double>();
  std::cout << "  accuracy on 1000 new images: " << 100 * accuracy << "%\n";
  model->save_pretrained(out);
  std::cout << "  saved to " << out << "\n";
  return 0;
}
