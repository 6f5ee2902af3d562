// "Which pair matches": a relational task in the spirit of the paper's relational games
// (Altabaa & Lafferty, arXiv:2405.16727, section 4.1, after Shanahan et al. 2020). An image shows
// four objects in a row; exactly two of them are the same object, and the label says which pair
// (6 classes, chance 1/6). The answer depends only on a relation between objects (sameness), not
// on what any object looks like.
//
// Trains a VisionDualAttnTransformer and a VisionTransformer with the same parameter count (the
// Transformer's feed-forward is widened to match) on training sets of several sizes, for several
// seeds, and writes learning curves (held-out accuracy every --eval-every steps) as CSV:
//
//   pair_match [--out curves.csv] [--sizes 250,500,1000,2000] [--seeds 3] [--steps 600]
//
// Objects are 4x4 RGB patterns with random pixels from an 8-colour palette. 40 objects are
// drawn; 30 make the training images and the "test" images (new combinations), the other 10 the
// "ood" images (objects never seen in training).
#include <dual_attention/training.h>
#include <dual_attention/vision_models.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using namespace dual_attention;
using namespace dual_attention::training;

namespace {

constexpr int64_t kObjects = 4, kSide = 4, kPairs = 6;
const int64_t kPairIndex[kPairs][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};

// `count` objects, each [3, 4, 4], pixels from an 8-colour palette (the corners of the RGB cube).
torch::Tensor make_objects(int64_t count, torch::Generator& gen) {
  auto colour = torch::randint(0, 8, {count, kSide, kSide}, gen);
  auto bits = torch::stack({colour % 2, (colour / 2) % 2, colour / 4}, 1);  // [count, 3, 4, 4]
  return bits.to(torch::kFloat);
}

// `n` images [n, 3, 4, 16] from objects[first, first + pool), and their labels [n].
std::pair<torch::Tensor, torch::Tensor> make_images(const torch::Tensor& objects, int64_t first,
                                                    int64_t pool, int64_t n,
                                                    torch::Generator& gen) {
  auto labels = torch::randint(0, kPairs, {n}, gen);
  auto images = torch::empty({n, 3, kSide, kSide * kObjects});
  auto labels_a = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    // Three distinct objects: the pair's, and two others.
    auto ids = torch::randperm(pool, gen).slice(0, 0, 3) + first;
    const int64_t a = kPairIndex[labels_a[i]][0], b = kPairIndex[labels_a[i]][1];
    int64_t other = 1;
    for (int64_t slot = 0; slot < kObjects; ++slot) {
      const int64_t id =
          (slot == a || slot == b) ? ids[0].item<int64_t>() : ids[other++].item<int64_t>();
      images[i].slice(2, slot * kSide, (slot + 1) * kSide).copy_(objects[id]);
    }
  }
  return {images, labels};
}

double accuracy(torch::nn::Module& model, const std::function<torch::Tensor(torch::Tensor)>& f,
                const std::pair<torch::Tensor, torch::Tensor>& data) {
  torch::NoGradGuard no_grad;
  model.eval();
  const double acc =
      (f(data.first).argmax(-1) == data.second).to(torch::kDouble).mean().item<double>();
  model.train();
  return acc;
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out = "pair_match.csv";
  std::vector<int64_t> sizes = {250, 500, 1000, 2000};
  int64_t seeds = 3, steps = 600, eval_every = 50, batch_size = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i], value = argv[i + 1];
    if (name == "--out")
      out = value;
    else if (name == "--sizes")
      sizes = parse_list(value);
    else if (name == "--seeds")
      seeds = std::stoll(value);
    else if (name == "--steps")
      steps = std::stoll(value);
    else if (name == "--eval-every")
      eval_every = std::stoll(value);
    else {
      std::cerr << "unknown option " << name << "\n";
      return 2;
    }
  }
  torch::set_num_threads(1);  // tiny models: one thread is as fast, and the machine is shared

  const int64_t d_model = 64;
  auto dat_options =
      VisionDualAttnTransformerOptions(
          {3, kSide, kSide * kObjects}, {kSide, kSide}, kPairs, d_model,
          /*n_layers=*/2, /*n_heads_sa=*/2, /*n_heads_ra=*/2, /*dff=*/128, 0.0, "gelu", true,
          "positional_symbols", {{"symbol_dim", d_model}, {"max_length", kObjects + 1}})
          .ra_kwargs({{"symmetric_rels", true}});
  // The Transformer: 4 heads, and the feed-forward width that matches DAT's parameter count.
  const int64_t dat_params = VisionDualAttnTransformer(dat_options)->get_num_params();
  auto vit_options = [&](int64_t dff) {
    return VisionTransformerOptions({3, kSide, kSide * kObjects}, {kSide, kSide}, kPairs, d_model,
                                    2, 4, dff, 0.0, "gelu", true);
  };
  int64_t dff = 128;
  while (VisionTransformer(vit_options(dff + 1))->get_num_params() <= dat_params) ++dff;
  const int64_t vit_params = VisionTransformer(vit_options(dff))->get_num_params();
  std::printf("DAT: %lld parameters; Transformer (dff %lld): %lld parameters\n",
              static_cast<long long>(dat_params), static_cast<long long>(dff),
              static_cast<long long>(vit_params));

  std::ofstream csv(out + ".tmp");
  csv << "model,params,seed,train_size,step,train_loss,test_acc,ood_acc\n";
  for (int64_t seed = 0; seed < seeds; ++seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + seed);
    auto objects = make_objects(40, gen);
    auto test = make_images(objects, 0, 30, 1000, gen);
    auto ood = make_images(objects, 30, 10, 1000, gen);
    auto all_train = make_images(objects, 0, 30, sizes.back(), gen);
    for (int64_t size : sizes) {
      auto train_x = all_train.first.slice(0, 0, size),
           train_y = all_train.second.slice(0, 0, size);
      for (const std::string name : {"DAT", "Transformer"}) {
        torch::manual_seed(seed);
        torch::nn::AnyModule model;
        std::shared_ptr<torch::nn::Module> module;
        if (name == "DAT") {
          VisionDualAttnTransformer m(dat_options);
          model = torch::nn::AnyModule(m);
          module = m.ptr();
        } else {
          VisionTransformer m(vit_options(dff));
          model = torch::nn::AnyModule(m);
          module = m.ptr();
        }
        auto forward = [&](const torch::Tensor& x) { return model.forward(x); };
        auto params = distinct_parameters(*module);
        torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
        const auto schedule = CosineScheduleOptions(1e-3, 50, steps).min_lr(1e-4);
        auto batch_gen = at::make_generator<at::CPUGeneratorImpl>(seed);
        double loss_value = 0.0;
        module->train();
        for (int64_t step = 1; step <= steps; ++step) {
          set_learning_rate(optimizer, cosine_learning_rate(step - 1, schedule));
          auto idx = torch::randint(0, size, {batch_size}, batch_gen);
          auto loss = torch::nn::functional::cross_entropy(forward(train_x.index({idx})),
                                                           train_y.index({idx}));
          optimizer.zero_grad();
          loss.backward();
          clip_grad_norm(params, 1.0);
          optimizer.step();
          loss_value = loss.item<double>();
          if (step % eval_every == 0) {
            const double test_acc = accuracy(*module, forward, test);
            const double ood_acc = accuracy(*module, forward, ood);
            csv << name << "," << (name == "DAT" ? dat_params : vit_params) << "," << seed << ","
                << size << "," << step << "," << loss_value << "," << test_acc << "," << ood_acc
                << "\n";
            if (step == steps)
              std::printf("seed %lld, %5lld training images, %-11s: test %.3f, ood %.3f\n",
                          static_cast<long long>(seed), static_cast<long long>(size), name.c_str(),
                          test_acc, ood_acc);
          }
        }
        std::fflush(stdout);
      }
    }
  }
  csv.close();
  std::rename((out + ".tmp").c_str(), out.c_str());
  std::cout << "wrote " << out << "\n";
  return 0;
}
