// Drives the C++ side of tests/python/test_model_checkpoints.py:
//   model_roundtrip FIXTURE_DIR OUT_DIR SEED
// builds the model of a tests/fixtures/models/ case from its config.json with a C++
// initialisation (torch::manual_seed(SEED), then every parameter perturbed by 0.2 N(0, 1) so that
// no norm weight is trivially one), converts it to the case's dtype and writes to OUT_DIR:
//   config.json, model.safetensors   save_pretrained (the required keywords and the non-defaults;
//                                    the weights as safetensors.torch.save_model writes them)
//   outputs.safetensors    its outputs for the case's reference inputs: logits, loss and
//                          logits_last (seq2seq) or logits and logits_small (vision)
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <set>

#include "dual_attention/io/safetensors.h"
#include "model_fixtures.h"

using namespace model_fixtures;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: model_roundtrip FIXTURE_DIR OUT_DIR SEED\n";
    return 2;
  }
  try {
    const fs::path fixture = argv[1], out = argv[2];
    const Kwargs meta = read_json(fixture / "meta.json");
    torch::manual_seed(std::stoll(argv[3]));
    AnyModel model = build_model(meta.at("model"), read_json(fixture / "config.json"));
    auto& module = module_of(model);
    {
      torch::NoGradGuard no_grad;
      std::set<const void*> seen;
      for (auto& p : module.parameters()) {
        if (seen.insert(p.unsafeGetTensorImpl()).second) p.add_(0.2 * torch::randn_like(p));
      }
    }
    module.to(dtype_of(meta));
    module.eval();

    save_pretrained(model, out);

    torch::NoGradGuard no_grad;
    const auto inputs =
        dual_attention::io::load_safetensors((fixture / "reference.safetensors").string()).tensors;
    std::map<std::string, torch::Tensor> outputs;
    const auto [logits, loss] = run_forward(model, inputs, /*with_targets=*/true);
    outputs["logits"] = logits;
    if (is_seq2seq(model)) {
      outputs["loss"] = loss;
      outputs["logits_last"] = std::get<0>(run_forward(model, inputs, false));
    }
    if (inputs.count("x_small")) {
      outputs["logits_small"] = std::get<0>(run_forward(model, inputs, false, "x_small"));
    }
    dual_attention::io::save_safetensors((out / "outputs.safetensors").string(), outputs);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
