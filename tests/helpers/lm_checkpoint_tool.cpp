// The C++ side of tests/python/test_lm_checkpoints.py: builds a language model from a config with a
// fixed seed, saves it with save_pretrained, and records its logits for Python to compare.
//
//   lm_checkpoint_tool CLASS CONFIG_JSON SEED DTYPE CHECKPOINT_DIR OUTPUT_FILE
//
// CLASS is DualAttnTransformerLM or TransformerLM; CONFIG_JSON a file holding the constructor
// keywords; DTYPE float32 or float64. OUTPUT_FILE (safetensors) receives `idx` [2, t] (t =
// min(max_block_size, 11)), `targets` (idx shifted by one, last position -1), and the model's
// `logits` and `loss` for them, in DTYPE.
#include <torch/torch.h>

#include <iostream>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"

using namespace dual_attention;

namespace {

template <class Holder>
void run(const Kwargs& config, int64_t seed, torch::Dtype dtype, const std::string& checkpoint,
         const std::string& output) {
  using Options = std::decay_t<decltype(std::declval<typename Holder::Impl>().options)>;
  torch::manual_seed(seed);
  Holder model(Options::from_kwargs(config));
  model->to(dtype);
  model->eval();
  model->save_pretrained(checkpoint);

  const int64_t t = std::min<int64_t>(model->options.max_block_size(), 11);
  auto idx = torch::randint(0, model->options.vocab_size(), {2, t});
  auto targets = torch::roll(idx, -1, 1);
  targets.select(1, t - 1).fill_(-1);
  torch::NoGradGuard no_grad;
  auto [logits, loss] = model->forward(idx, targets);
  io::save_safetensors(output,
                       {{"idx", idx}, {"targets", targets}, {"logits", logits}, {"loss", loss}});
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() != 6) {
    std::cerr << "usage: lm_checkpoint_tool CLASS CONFIG_JSON SEED DTYPE CHECKPOINT_DIR "
                 "OUTPUT_FILE\n";
    return 2;
  }
  try {
    const Kwargs config = read_config_json(args[1]);
    const int64_t seed = std::stoll(args[2]);
    TORCH_CHECK(args[3] == "float32" || args[3] == "float64", "DTYPE must be float32 or float64");
    const torch::Dtype dtype = args[3] == "float64" ? torch::kFloat64 : torch::kFloat32;
    if (args[0] == "DualAttnTransformerLM") {
      run<DualAttnTransformerLM>(config, seed, dtype, args[4], args[5]);
    } else if (args[0] == "TransformerLM") {
      run<TransformerLM>(config, seed, dtype, args[4], args[5]);
    } else {
      std::cerr << "unknown CLASS " << args[0] << "\n";
      return 2;
    }
  } catch (const c10::Error& e) {
    std::cerr << e.what_without_backtrace() << "\n";
    return 1;
  }
  return 0;
}
