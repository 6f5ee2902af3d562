// Loads a Dual Attention Transformer language model from a checkpoint folder (config.json +
// model.safetensors, as save_pretrained writes it here or in the Python package), prints the shape
// of its logits for a few token ids and continues them greedily.
//
//   lm_from_pretrained CHECKPOINT_DIR [TOKEN_ID ...]
#include <dual_attention/language_models.h>
#include <torch/torch.h>

#include <iostream>
#include <vector>

using namespace dual_attention;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " CHECKPOINT_DIR [TOKEN_ID ...]\n";
    return 2;
  }
  try {
    auto model = DualAttnTransformerLM::from_pretrained(argv[1]);  // in eval mode
    model->pretty_print(std::cout);
    std::cout << ": " << model->get_num_params() << " parameters\n";

    std::vector<int64_t> ids;
    for (int i = 2; i < argc; ++i) ids.push_back(std::stoll(argv[i]));
    if (ids.empty()) ids = {1, 2, 3, 4, 5};
    auto idx = torch::tensor(ids).unsqueeze(0);  // [1, t]

    auto [logits, loss] = model->forward(idx);
    std::cout << "  logits " << logits.sizes() << "\n";

    auto tokens = model->generate(idx, /*max_new_tokens=*/10, /*temperature=*/1.0, /*top_k=*/1);
    std::cout << "  greedy continuation:";
    for (int64_t i = 0; i < tokens.size(1); ++i) {
      std::cout << (i == idx.size(1) ? " |" : "") << " " << tokens[0][i].item<int64_t>();
    }
    std::cout << "\n";
  } catch (const c10::Error& e) {
    std::cerr << e.what_without_backtrace() << "\n";
    return 1;
  }
  return 0;
}
