// Training language models from C++: the pieces examples/train_lm.cpp (`dual-attention train`)
// is made of, for a user's own loop.
//
//   token files     nanoGPT's train.bin layout: raw little-endian token ids, uint16 when the
//                   vocabulary has at most 65536 ids, uint32 otherwise; tokenize_file caches one
//                   beside each text file.
//   TokenDataset    memory-mapped token files, read as windows of block_size + 1 tokens.
//   RandomBatches   batches of random windows in an order fixed by (seed, position): resuming at a
//                   position gives the batches an uninterrupted run would have drawn.
//   cosine_learning_rate, set_learning_rate, clip_grad_norm, estimate_loss, AutocastGuard
//   save_checkpoint / load_checkpoint
//                   a resumable training state: the model through save_pretrained (so the
//                   reference's from_pretrained loads the folder), plus the AdamW state, the step,
//                   the RNG states and the data position; written to a temporary folder, then
//                   renamed.
//   ProgressBar     one line on stderr: step, loss, learning rate, tokens/s, ETA.
//
// Errors are c10::Error naming the file or argument, the value and what was expected.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dual_attention/detail/model_common.h"
#include "dual_attention/kwargs.h"

namespace dual_attention::training {

// ---- Token files ---------------------------------------------------------------------------

// Bytes per token id in a token file for this vocabulary: 2 (uint16) when vocab_size <= 65536,
// else 4 (uint32), as nanoGPT's prepare.py chooses.
int64_t token_width(int64_t vocab_size);

// Writes `tokens` (each in [0, vocab_size)) as a token file: to `path`.tmp, then renamed.
void write_token_file(const std::string& path, const std::vector<int64_t>& tokens,
                      int64_t vocab_size);
// Every id of a token file (checked to be < vocab_size), for small files and tests.
std::vector<int64_t> read_token_file(const std::string& path, int64_t vocab_size);

// Text -> token ids (a tokenizer's encode_ordinary).
using Encoder = std::function<std::vector<int64_t>(std::string_view)>;

// The token file of a text file, cached beside it as `<text_path>.<encoding_name>.bin`: written
// once with `encode`, reused while it is newer than the text. Returns its path.
std::string tokenize_file(const std::string& text_path, const std::string& encoding_name,
                          int64_t vocab_size, const Encoder& encode);

// A read-only memory map of one token file.
class TokenFile {
 public:
  TokenFile(const std::string& path, int64_t vocab_size);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return n_tokens_; }  // number of token ids
  // Ids [begin, end) as int64 into `out`; an id >= vocab_size is an error naming the file.
  void read(int64_t begin, int64_t end, int64_t* out) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int64_t vocab_size_, width_, n_tokens_ = 0;
  const unsigned char* data_ = nullptr;
  size_t mapped_bytes_ = 0;
};

// Token files read as windows of block_size + 1 consecutive ids (inputs and their next-token
// targets), never crossing from one file into the next. `split` keeps the part [begin, end) of
// each file, as fractions of its length (e.g. {0.0, 0.9} to train and {0.9, 1.0} to evaluate), so
// every file contributes to both splits.
class TokenDataset {
 public:
  TokenDataset(const std::vector<std::string>& paths, int64_t vocab_size, int64_t block_size,
               std::pair<double, double> split = {0.0, 1.0});

  int64_t block_size() const { return block_size_; }
  int64_t num_tokens() const;   // tokens in the split, over all files
  int64_t num_windows() const;  // distinct window starts
  // Window `index` in [0, num_windows()): [block_size + 1] int64.
  torch::Tensor window(int64_t index) const;

 private:
  struct Part {
    std::shared_ptr<TokenFile> file;
    int64_t begin, end;  // token range of the split in the file
    int64_t first_window;
  };
  std::vector<Part> parts_;
  int64_t block_size_, num_windows_ = 0;
};

// Batches of windows drawn uniformly at random (with replacement, as nanoGPT's get_batch). Batch
// number p depends only on (seed, p): the order is reproducible and resumes at any position.
//
// Data parallel: with world_size processes, batch p is a global batch of world_size * batch_size
// windows, and the process of rank r reads rows [r * batch_size, (r + 1) * batch_size) of it, only
// those windows. Together the ranks read exactly the batch that one process with batch_size *
// world_size (rank 0 of 1) draws.
class RandomBatches {
 public:
  RandomBatches(std::shared_ptr<const TokenDataset> dataset, int64_t batch_size, uint64_t seed,
                int64_t rank = 0, int64_t world_size = 1);

  // (x, y): [batch_size, block_size] int64 each, y the next tokens of x.
  std::pair<torch::Tensor, torch::Tensor> next();
  int64_t position() const { return position_; }  // batches drawn so far
  void set_position(int64_t position);
  int64_t batch_size() const { return batch_size_; }
  const TokenDataset& dataset() const { return *dataset_; }

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t batch_size_;
  uint64_t seed_;
  int64_t rank_, world_size_;
  int64_t position_ = 0;
};

// ---- Optimisation --------------------------------------------------------------------------

// nanoGPT's get_lr: linear warmup, then a cosine from learning_rate to min_lr.
//   step < warmup_steps:       learning_rate * (step + 1) / (warmup_steps + 1)
//   step > decay_steps:        min_lr
//   otherwise, r = (step - warmup_steps) / (decay_steps - warmup_steps):
//                              min_lr + 0.5 (1 + cos(pi r)) (learning_rate - min_lr)
struct CosineScheduleOptions {
  CosineScheduleOptions(double learning_rate, int64_t warmup_steps, int64_t decay_steps)
      : learning_rate_(learning_rate), warmup_steps_(warmup_steps), decay_steps_(decay_steps) {}
  TORCH_ARG(double, learning_rate);
  TORCH_ARG(int64_t, warmup_steps);
  TORCH_ARG(int64_t, decay_steps);  // the step at which min_lr is reached
  TORCH_ARG(double, min_lr) = 0.0;
};
// The learning rate of optimizer step `step` (0-based). Options are checked: learning_rate > 0,
// 0 <= min_lr <= learning_rate, 0 <= warmup_steps <= decay_steps.
double cosine_learning_rate(int64_t step, const CosineScheduleOptions& options);

// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate);

// Each tensor once (a weight tied to another counts once), as the optimizer sees them.
inline std::vector<torch::Tensor> distinct_parameters(const torch::nn::Module& model) {
  return dual_attention::detail::unique_parameters(model);
}

// Scales the gradients of `parameters` by min(1, max_norm / (total_norm + 1e-6)), total_norm being
// the 2-norm of all gradients together (torch.nn.utils.clip_grad_norm_); max_norm <= 0 measures
// without clipping. Returns total_norm before clipping. Pass distinct_parameters(model): a tied
// weight listed twice would count twice.
double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm);

// Mean of `loss(x, y)` over `iters` batches of `batches` from position 0 (the same batches at each
// call), without grad and in eval mode; restores the module's training mode.
double estimate_loss(
    torch::nn::Module& model,
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& loss,
    RandomBatches batches, int64_t iters);

// Mixed precision while alive: autocast to `dtype` (bf16) on `device_type` (CPU or CUDA), as
// torch.autocast; disabled when `enabled` is false.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, bool enabled, at::ScalarType dtype = at::kBFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_type_;
  bool enabled_, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

// ---- Checkpoints ---------------------------------------------------------------------------

// What besides the model and the optimizer a resumed run needs.
struct TrainingState {
  int64_t step = 0;           // optimizer steps done
  int64_t data_position = 0;  // RandomBatches::position() of the training batches
  double best_val_loss = std::numeric_limits<double>::infinity();
  Kwargs extra = Kwargs::object();  // the program's own (its arguments, the model class, ...)
};

namespace detail {
// The training files of a checkpoint folder besides the model's: training_state.json (the
// TrainingState) and optimizer.pt (the optimizer state and the CPU/CUDA RNG states).
void write_training_files(const std::string& folder, const torch::optim::Optimizer& optimizer,
                          const TrainingState& state);
// A new empty folder beside `folder` to write into.
std::string make_staging_folder(const std::string& folder);
// Replaces `folder` by `staging`: folder -> folder.old, staging -> folder, then deletes
// folder.old. A crash between the renames leaves folder.old, which resolve_checkpoint finds.
void commit_staging_folder(const std::string& staging, const std::string& folder);
}  // namespace detail

// Writes a resumable checkpoint into `folder`: config.json and model.safetensors (the model's
// save_pretrained), training_state.json and optimizer.pt. Everything is written into a fresh
// folder beside it first, then swapped in by renames, so an interrupted save leaves the previous
// checkpoint whole. `Model` is a holder with save_pretrained (DualAttnTransformerLM, ...).
template <class Model>
void save_checkpoint(const std::string& folder, const Model& model,
                     const torch::optim::Optimizer& optimizer, const TrainingState& state) {
  const std::string staging = detail::make_staging_folder(folder);
  model->save_pretrained(staging);
  detail::write_training_files(staging, optimizer, state);
  detail::commit_staging_folder(staging, folder);
}

// The folder holding the last complete checkpoint: `folder`, or `folder`.old when a save was
// interrupted between its renames. Empty when there is none.
std::string resolve_checkpoint(const std::string& folder);
// True when `folder` (or its .old) holds a training checkpoint (training_state.json).
bool has_checkpoint(const std::string& folder);

// Reads training_state.json and optimizer.pt of a checkpoint: loads the optimizer state (into an
// optimizer built over the same parameters in the same order) and restores the RNG states. The
// model is read by the caller with from_pretrained(resolve_checkpoint(folder)).
TrainingState load_checkpoint(const std::string& folder, torch::optim::Optimizer& optimizer);

// Fails early, naming the folder, when `folder` cannot be created or written.
void check_writable_folder(const std::string& folder);

// ---- Progress ------------------------------------------------------------------------------

// `step/total [bar] loss 4.123 lr 6.0e-04 1234 tok/s ETA 01:23` on stderr, redrawn in place on a
// terminal (at most 10 times a second); elsewhere (a log file, a pipe) nothing: print log lines.
class ProgressBar {
 public:
  ProgressBar(int64_t total_steps, int64_t first_step);
  ~ProgressBar();
  // After step `step` (1-based count of steps done): the loss and learning rate of that step and
  // the tokens it processed.
  void update(int64_t step, double loss, double learning_rate, int64_t tokens);
  // Ends the bar's line so that another line can be printed, redrawn on the next update.
  void clear();
  bool shown() const { return shown_; }

 private:
  void draw();
  int64_t total_, first_, step_;
  double loss_ = 0.0, lr_ = 0.0, tokens_ = 0.0;
  bool shown_, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace dual_attention::training
