// Trains a language model (DualAttnTransformerLM or TransformerLM) on text files, nanoGPT style:
// tokenize (cached beside the text), random windows, AdamW with the reference's decay groups, a
// cosine learning rate with warmup, gradient accumulation and clipping, a held-out loss every
// --eval-every steps, a resumable checkpoint in OUT (loadable by from_pretrained here and in the
// reference), and a sample from the trained model. Also shipped as `dual-attention train`.
//
//   train_lm --config model.json --out OUT [options] FILE...
//   torchrun --nproc-per-node=2 --no-python -- train_lm ...   (data parallel, docs/distributed.md)
//
// FILE: text files (tokenized with --tokenizer, the token file cached as FILE.<encoding>.bin) or
// token files already (*.bin: uint16 ids, uint32 for vocabularies above 65536).
// model.json: the model's constructor keywords, as in Python: DualAttnTransformerLM(**config).
#include <dual_attention/distributed.h>
#include <dual_attention/language_models.h>
#include <dual_attention/pretrained.h>
#include <dual_attention/tokenizer.h>
#include <dual_attention/training.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace dual_attention;
using namespace dual_attention::training;
namespace dist = dual_attention::distributed;

namespace {

// A mistake on the command line: printed with the usage, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage = R"(usage: train_lm --config CONFIG.json --out OUT [options] FILE...

Trains a language model on FILE... (text, or token files *.bin) and saves it in OUT
(config.json + model.safetensors, loadable by from_pretrained, plus the training state).

  --config F         model constructor keywords (JSON); not needed to resume
  --model-class C    DualAttnTransformerLM (default) or TransformerLM
  --out D            checkpoint folder (written at each evaluation and at the end)
  --resume           continue from the checkpoint in OUT (exactly: model, AdamW, RNG, data)
  --tokenizer T      encoding of text files: gpt2 (default) or a .tiktoken file
  --block-size N     tokens per window (default: the config's max_block_size)
  --batch-size N     windows per micro-batch (default 8)
  --grad-accum N     micro-batches per optimizer step (default 1)
  --max-steps N      optimizer steps (default 1000); also where the cosine schedule ends
  --max-time S       stop after S seconds of training (default: no limit)
  --stop-at N        stop after step N as an interruption would (for resume tests)
  --lr X             peak learning rate (default 6e-4); --min-lr X (default lr / 10)
  --warmup N         warmup steps (default 100, at most max-steps)
  --optimizer O      adamw (default; the reference's decay groups) or sgd (the same groups,
                     weight decay as L2, --momentum X, default 0)
  --weight-decay X   (default 0.1); --beta1 X (0.9); --beta2 X (0.95)
  --grad-clip X      clip the gradient norm to X (default 1.0; 0 = off)
  --eval-every N     held-out loss every N steps (default 100); --eval-iters N batches (20)
  --val-fraction X   last fraction of each file held out (default 0.1)
  --seed N           initialisation, dropout and data order (default 1337)
  --threads N        CPU threads (default: torch's)
  --device D         cpu or cuda (default: cuda when present)
  --autocast A       bf16 or none (default: bf16 on cuda, none on cpu)
  --log F            append "step,loss,lr,val_loss" per step to F (CSV)
  --prompt TEXT      after training, continue TEXT and print it
  --max-new-tokens N (default 100); --temperature X (0.8); --top-k N (40)
  --dist-timeout S   data parallel: seconds a collective may wait for the other ranks (1800)

Data parallel: started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set),
each process trains on its own --batch-size windows of every global batch, gradients are
all-reduced by c10d (gloo on the CPU), and rank 0 alone prints, logs and writes OUT.
)";

// --name value pairs and positional FILEs.
struct Args {
  std::map<std::string, std::string> values;
  std::vector<std::string> files;
  bool has(const std::string& name) const { return values.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback) const {
    return has(name) ? values.at(name) : fallback;
  }
  double number(const std::string& name, double fallback) const {
    if (!has(name)) return fallback;
    try {
      size_t used = 0;
      double v = std::stod(values.at(name), &used);
      if (used == values.at(name).size()) return v;
    } catch (const std::exception&) {
    }
    throw UsageError(name + " expects a number, got '" + values.at(name) + "'");
  }
  int64_t integer(const std::string& name, int64_t fallback) const {
    const double v = number(name, static_cast<double>(fallback));
    if (v != static_cast<double>(static_cast<int64_t>(v)))
      throw UsageError(name + " expects an integer, got '" + values.at(name) + "'");
    return static_cast<int64_t>(v);
  }
};

Args parse_args(int argc, char** argv) {
  static const std::vector<std::string> flags = {"--resume"};
  static const std::vector<std::string> options = {
      "--config",     "--model-class",    "--out",         "--tokenizer",    "--block-size",
      "--batch-size", "--grad-accum",     "--max-steps",   "--max-time",     "--stop-at",
      "--lr",         "--min-lr",         "--warmup",      "--weight-decay", "--beta1",
      "--beta2",      "--grad-clip",      "--eval-every",  "--eval-iters",   "--val-fraction",
      "--seed",       "--threads",        "--device",      "--autocast",     "--log",
      "--prompt",     "--max-new-tokens", "--temperature", "--top-k",        "--optimizer",
      "--momentum",   "--dist-timeout"};
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (std::find(flags.begin(), flags.end(), a) != flags.end()) {
      args.values[a] = "1";
    } else if (std::find(options.begin(), options.end(), a) != options.end()) {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      args.values[a] = argv[++i];
    } else if (a.rfind("--", 0) == 0) {
      throw UsageError("unknown option '" + a + "'");
    } else {
      args.files.push_back(a);
    }
  }
  return args;
}

// Text -> ids with the named encoding.
struct Encoding {
  std::string name;
  int64_t n_vocab = 0;
  Encoder encode;
  std::function<std::string(const std::vector<int64_t>&)> decode;
};

Encoding load_encoding(const std::string& spec) {
  const bool is_file = spec.find('/') != std::string::npos || spec.find('.') != std::string::npos;
  auto tok = std::make_shared<Tokenizer>(is_file ? Tokenizer::from_file(spec) : get_encoding(spec));
  return Encoding{is_file ? std::filesystem::path(spec).stem().string() : spec, tok->n_vocab(),
                  [tok](std::string_view text) { return tok->encode_ordinary(text); },
                  [tok](const std::vector<int64_t>& ids) { return tok->decode(ids); }};
}

// AdamW over the reference's decay groups (the model's configure_optimizers), or SGD over the
// same groups.
template <class Model>
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const Args& args, Model& model, double lr) {
  auto adamw =
      model->configure_optimizers(args.number("--weight-decay", 0.1), lr,
                                  {args.number("--beta1", 0.9), args.number("--beta2", 0.95)});
  const std::string name = args.get("--optimizer", "adamw");
  if (name == "adamw") return std::make_unique<torch::optim::AdamW>(std::move(adamw));
  if (name != "sgd") throw UsageError("--optimizer must be adamw or sgd, got '" + name + "'");
  const double momentum = args.number("--momentum", 0.0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto& group : adamw.param_groups()) {
    const double decay =
        static_cast<const torch::optim::AdamWOptions&>(group.options()).weight_decay();
    groups.emplace_back(group.params(),
                        std::make_unique<torch::optim::SGDOptions>(
                            torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(decay)));
  }
  return std::make_unique<torch::optim::SGD>(std::move(groups),
                                             torch::optim::SGDOptions(lr).momentum(momentum));
}

// The training loop for one model class.
template <class Model>
int train(const Args& args) {
  using Options = std::decay_t<decltype(std::declval<typename Model::Impl>().options)>;
  const std::string out = args.get("--out", "");
  if (out.empty()) throw UsageError("--out is required");
  const bool resume = args.has("--resume") && has_checkpoint(out);
  const uint64_t seed = args.integer("--seed", 1337);
  torch::manual_seed(seed);
  if (args.has("--threads")) torch::set_num_threads(args.integer("--threads", 1));

  // Data parallel when torchrun started us: rank 0 alone prints, logs and writes.
  const auto launch = dist::LaunchEnvironment::from_env();
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  if (launch.is_distributed()) {
    const double timeout = args.number("--dist-timeout", 1800.0);
    if (!(timeout > 0)) throw UsageError("--dist-timeout must be positive seconds");
    group = dist::init_process_group(
        launch, std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000.0)));
  }
  const bool main_process = launch.rank == 0;
  torch::Device device(args.get("--device", torch::cuda::is_available() ? "cuda" : "cpu"));
  if (device.is_cuda() && launch.is_distributed()) device.set_index(launch.local_rank);
  const bool bf16 = args.get("--autocast", device.is_cuda() ? "bf16" : "none") == "bf16";

  // The model: built from the config, or read back from the checkpoint to resume.
  Model model{nullptr};
  if (resume) {
    model = Model::from_pretrained(resolve_checkpoint(out));
  } else {
    if (!args.has("--config")) throw UsageError("--config is required");
    const std::string config_path = args.get("--config", "");
    try {
      model = Model(Options::from_kwargs(read_config_json(config_path)));
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, config_path, ": ", e.what_without_backtrace());
    }
    if (main_process) check_writable_folder(out);  // fail now, not after the first evaluation
  }
  model->to(device);
  model->train();
  const auto& options = model->options;
  const int64_t block_size = args.integer("--block-size", options.max_block_size());
  TORCH_CHECK(block_size > 0 && block_size <= options.max_block_size(),
              "--block-size must be in "
              "[1, max_block_size = ",
              options.max_block_size(), "], got ", block_size);

  // The data: every file as a token file, the last --val-fraction of each held out.
  const std::string tokenizer = args.get("--tokenizer", "gpt2");
  std::optional<Encoding> encoding;
  std::vector<std::string> token_files;
  TORCH_CHECK(!args.files.empty(), "no input FILE given (text or token files)");
  // Rank 0 tokenizes (and caches) first; the others then find the token files.
  if (group && !main_process) dist::barrier(group);
  for (const auto& file : args.files) {
    if (file.size() > 4 && file.substr(file.size() - 4) == ".bin") {
      token_files.push_back(file);
      continue;
    }
    if (!encoding) encoding = load_encoding(tokenizer);
    TORCH_CHECK(encoding->n_vocab <= options.vocab_size(), "the model's vocab_size (",
                options.vocab_size(), ") is smaller than the tokenizer's (", encoding->n_vocab,
                " ids of ", tokenizer, ")");
    token_files.push_back(
        tokenize_file(file, encoding->name, options.vocab_size(), encoding->encode));
  }
  if (group && main_process) dist::barrier(group);
  const double val_fraction = args.number("--val-fraction", 0.1);
  TORCH_CHECK(val_fraction > 0.0 && val_fraction < 1.0, "--val-fraction must be in (0, 1), got ",
              val_fraction);
  auto train_data = std::make_shared<TokenDataset>(token_files, options.vocab_size(), block_size,
                                                   std::make_pair(0.0, 1.0 - val_fraction));
  auto val_data = std::make_shared<TokenDataset>(token_files, options.vocab_size(), block_size,
                                                 std::make_pair(1.0 - val_fraction, 1.0));
  const int64_t batch_size = args.integer("--batch-size", 8);
  const int64_t grad_accum = args.integer("--grad-accum", 1);
  TORCH_CHECK(grad_accum >= 1, "--grad-accum must be >= 1, got ", grad_accum);
  RandomBatches train_batches(train_data, batch_size, seed, launch.rank, launch.world_size);
  RandomBatches val_batches(val_data, batch_size, seed + 1, launch.rank, launch.world_size);
  const int64_t tokens_per_step = batch_size * grad_accum * block_size * launch.world_size;

  // AdamW over the reference's two groups, the cosine schedule, and the state to resume.
  const double lr = args.number("--lr", 6e-4);
  const int64_t max_steps = args.integer("--max-steps", 1000);
  TORCH_CHECK(max_steps >= 0, "--max-steps must be >= 0, got ", max_steps);
  const auto optimizer = make_optimizer(args, model, lr);
  const auto schedule =
      CosineScheduleOptions(lr, std::min(args.integer("--warmup", 100), max_steps), max_steps)
          .min_lr(args.number("--min-lr", lr / 10));
  TrainingState state;
  const std::string optimizer_name = args.get("--optimizer", "adamw");
  if (resume) {
    state = load_checkpoint(out, *optimizer);
    const std::string saved = state.extra.value("optimizer", std::string("adamw"));
    if (saved != optimizer_name) {
      throw UsageError("the checkpoint in " + out + " was trained with --optimizer " + saved +
                       ", not " + optimizer_name);
    }
    train_batches.set_position(state.data_position);
    if (main_process) std::cout << "resumed from " << out << " at step " << state.step << "\n";
  }
  state.extra = {{"model_class", args.get("--model-class", "DualAttnTransformerLM")},
                 {"optimizer", optimizer_name}};
  // Every rank starts from rank 0's weights; then each draws its own dropout masks (rank 0 keeps
  // the stream of a single process; the checkpoint holds rank 0's RNG state, so on resuming the
  // other ranks reseed from (seed, rank, step)).
  const auto params = distinct_parameters(*model);
  std::unique_ptr<dist::DistributedDataParallel> ddp;
  if (group) {
    ddp = std::make_unique<dist::DistributedDataParallel>(params, group);
    if (!main_process) {
      torch::manual_seed(seed + 1000003ULL * static_cast<uint64_t>(launch.rank) +
                         static_cast<uint64_t>(state.step));
    }
  }
  if (main_process) {
    std::cout << "model: " << model->get_num_params()
              << " parameters; data: " << train_data->num_tokens() << " training tokens, "
              << val_data->num_tokens() << " held out, in " << token_files.size() << " file(s)";
    if (group) {
      std::cout << "; " << launch.world_size << " processes, " << batch_size
                << " windows each per micro-batch";
    }
    std::cout << "\n";
  }

  auto loss_of = [&](const torch::Tensor& x, const torch::Tensor& y) {
    AutocastGuard autocast(device.type(), bf16);
    return std::get<1>(model->forward(x.to(device), y.to(device)));
  };
  const int64_t eval_every = args.integer("--eval-every", 100);
  const int64_t eval_iters = args.integer("--eval-iters", 20);
  const int64_t stop_at = args.integer("--stop-at", max_steps);
  const double max_time = args.number("--max-time", 0.0);
  const double grad_clip = args.number("--grad-clip", 1.0);
  std::ofstream log;
  if (args.has("--log") && main_process) log.open(args.get("--log", ""), std::ios::app);
  const auto start = std::chrono::steady_clock::now();
  auto warm = start;  // the end of the first step (allocations, caches): tok/s counts from here
  std::chrono::duration<double> eval_time{0.0};  // evaluations and saves, not counted in tok/s
  const int64_t first_step = state.step;
  ProgressBar progress(max_steps, state.step);

  while (state.step < std::min(max_steps, stop_at)) {
    const double step_lr = cosine_learning_rate(state.step, schedule);
    set_learning_rate(*optimizer, step_lr);
    optimizer->zero_grad();
    double loss_sum = 0.0;
    for (int64_t micro = 0; micro < grad_accum; ++micro) {
      auto [x, y] = train_batches.next();
      torch::Tensor loss =
          loss_of(x, y) / static_cast<double>(grad_accum);  // the mean over micro-batches
      // Data parallel: the last micro-batch's backward all-reduces the accumulated gradients.
      if (ddp && micro == grad_accum - 1) ddp->prepare_for_backward(loss);
      loss.backward();
      loss_sum += loss.item<double>();
    }
    if (group) loss_sum = dist::all_reduce_mean(group, loss_sum);
    clip_grad_norm(params, grad_clip);
    optimizer->step();
    ++state.step;
    state.data_position = train_batches.position();
    if (state.step == first_step + 1) warm = std::chrono::steady_clock::now();
    if (main_process) progress.update(state.step, loss_sum, step_lr, tokens_per_step);

    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bool out_of_time = max_time > 0 && elapsed >= max_time;
    // Every rank stops at the same step, or the others would wait for it forever.
    if (group && max_time > 0) out_of_time = dist::all_reduce_mean(group, out_of_time) > 0;
    const bool last = state.step == max_steps || state.step == stop_at || out_of_time;
    double val_loss = std::nan("");
    if (state.step % eval_every == 0 || last) {
      const auto eval_start = std::chrono::steady_clock::now();
      val_loss = estimate_loss(*model, loss_of, val_batches, eval_iters);
      if (group) val_loss = dist::all_reduce_mean(group, val_loss);
      state.best_val_loss = std::min(state.best_val_loss, val_loss);
      if (main_process) {
        progress.clear();
        std::printf("step %lld: train loss %.4f, val loss %.4f, lr %.2e, %.0f s\n",
                    static_cast<long long>(state.step), loss_sum, val_loss, step_lr, elapsed);
        std::fflush(stdout);
        save_checkpoint(out, model, *optimizer, state);
      }
      eval_time += std::chrono::steady_clock::now() - eval_start;
    }
    if (log.is_open()) {
      char line[128];
      std::snprintf(line, sizeof(line), "%lld,%.9g,%.9g,%.9g\n", static_cast<long long>(state.step),
                    loss_sum, step_lr, val_loss);
      log << line << std::flush;
    }
    if (out_of_time) {
      if (main_process) std::cout << "stopping: --max-time " << max_time << " s reached\n";
      break;
    }
  }
  if (!main_process) return 0;
  const int64_t timed_steps = state.step - first_step - 1;
  if (timed_steps > 0) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - warm - eval_time).count();
    std::printf(
        "trained %lld steps in %.1f s: %.0f tok/s (after the first step, without evaluations)\n",
        static_cast<long long>(timed_steps), seconds,
        static_cast<double>(timed_steps * tokens_per_step) / seconds);
  }
  std::cout << "model saved in " << out << " (step " << state.step << ")\n";

  if (args.has("--prompt")) {
    if (!encoding) encoding = load_encoding(tokenizer);
    model->eval();
    auto ids = encoding->encode(args.get("--prompt", ""));
    TORCH_CHECK(!ids.empty(), "--prompt is empty");
    auto idx = torch::tensor(ids).unsqueeze(0).to(device);  // [1, t]
    torch::Tensor tokens =
        model->generate(idx, args.integer("--max-new-tokens", 100),
                        args.number("--temperature", 0.8), args.integer("--top-k", 40));
    torch::Tensor all = tokens[0].cpu();
    std::cout << "---- sample ----\n"
              << encoding->decode(std::vector<int64_t>(all.data_ptr<int64_t>(),
                                                       all.data_ptr<int64_t>() + all.numel()))
              << "\n----------------\n";
  }
  return 0;
}

// "rank R of W: " under a distributed launch, so that each process's error says which it is.
std::string rank_prefix(const std::string& message) {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (rank == nullptr || world == nullptr || std::string(world) == "1") return "";
  if (message.rfind("rank ", 0) == 0) return "";  // distributed.h's errors name it already
  return std::string("rank ") + rank + " of " + world + ": ";
}

}  // namespace

// The program; `dual-attention train` calls it too (tools/cli/train.cpp).
int train_lm_main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << kUsage;
      return 0;
    }
  }
  if (argc == 1) {
    std::cerr << kUsage;
    return 2;
  }
  try {
    const Args args = parse_args(argc, argv);
    const std::string model_class = args.get("--model-class", "DualAttnTransformerLM");
    if (model_class == "DualAttnTransformerLM") return train<DualAttnTransformerLM>(args);
    if (model_class == "TransformerLM") return train<TransformerLM>(args);
    throw UsageError("--model-class must be DualAttnTransformerLM or TransformerLM, got '" +
                     model_class + "'");
  } catch (const UsageError& e) {
    std::cerr << "train_lm: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    std::cerr << "train_lm: error: " << rank_prefix(message) << message << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "train_lm: error: " << rank_prefix(e.what()) << e.what() << "\n";
    return 1;
  }
}

#ifndef TRAIN_LM_NO_MAIN
int main(int argc, char** argv) { return train_lm_main(argc, argv); }
#endif
