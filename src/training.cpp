#include "dual_attention/training.h"

#include <ATen/autocast_mode.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "clock_text.h"

namespace dual_attention::training {
namespace fs = std::filesystem;
namespace {

void check_vocab_size(int64_t vocab_size, const char* owner) {
  TORCH_CHECK(vocab_size > 0 && vocab_size <= (int64_t(1) << 32), owner,
              ": vocab_size must be in [1, 2^32], got ", vocab_size);
}

// splitmix64: a fixed, platform-independent mix of (seed, position, index) into 64 random bits.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, n) from 64 random bits (Lemire's multiply-shift; the bias is below 2^-40 for the
// n of a dataset).
int64_t uniform_below(uint64_t bits, int64_t n) {
  return static_cast<int64_t>((static_cast<unsigned __int128>(bits) * static_cast<uint64_t>(n)) >>
                              64);
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

// ---- Token files ---------------------------------------------------------------------------

int64_t token_width(int64_t vocab_size) {
  check_vocab_size(vocab_size, "token_width");
  return vocab_size <= 65536 ? 2 : 4;
}

void write_token_file(const std::string& path, const std::vector<int64_t>& tokens,
                      int64_t vocab_size) {
  const int64_t width = token_width(vocab_size);
  std::vector<unsigned char> bytes(tokens.size() * width);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t id = tokens[i];
    TORCH_CHECK(id >= 0 && id < vocab_size, "write_token_file: token ", i, " of ", path, " is ", id,
                ", expected an id in [0, ", vocab_size, ")");
    for (int64_t b = 0; b < width; ++b) bytes[i * width + b] = (id >> (8 * b)) & 0xFF;  // LE
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(out, "write_token_file: cannot write ", tmp, ": ", errno_text());
    out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    out.close();
    TORCH_CHECK(out, "write_token_file: writing ", tmp, " failed: ", errno_text());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  TORCH_CHECK(!ec, "write_token_file: cannot rename ", tmp, " to ", path, ": ", ec.message());
}

std::vector<int64_t> read_token_file(const std::string& path, int64_t vocab_size) {
  TokenFile file(path, vocab_size);
  std::vector<int64_t> tokens(file.size());
  file.read(0, file.size(), tokens.data());
  return tokens;
}

TokenFile::TokenFile(const std::string& path, int64_t vocab_size)
    : path_(path), vocab_size_(vocab_size), width_(token_width(vocab_size)) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  TORCH_CHECK(fd >= 0, "TokenFile: cannot open token file ", path, ": ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    TORCH_CHECK(false, "TokenFile: ", path, " is not a regular file");
  }
  const auto bytes = static_cast<int64_t>(st.st_size);
  if (bytes % width_ != 0) {
    ::close(fd);
    TORCH_CHECK(false, "TokenFile: ", path, " has ", bytes, " bytes, expected a multiple of ",
                width_, " (uint", 8 * width_, " token ids for vocab_size ", vocab_size, ")");
  }
  n_tokens_ = bytes / width_;
  if (bytes > 0) {
    void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      TORCH_CHECK(false, "TokenFile: cannot map ", path, ": ", errno_text());
    }
    data_ = static_cast<const unsigned char*>(p);
    mapped_bytes_ = bytes;
  }
  ::close(fd);  // the mapping stays valid
}

TokenFile::~TokenFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), mapped_bytes_);
}

void TokenFile::read(int64_t begin, int64_t end, int64_t* out) const {
  TORCH_CHECK(0 <= begin && begin <= end && end <= n_tokens_, "TokenFile::read: range [", begin,
              ", ", end, ") is outside ", path_, " (", n_tokens_, " tokens)");
  for (int64_t i = begin; i < end; ++i) {
    const unsigned char* p = data_ + i * width_;
    int64_t id = 0;
    for (int64_t b = 0; b < width_; ++b) id |= static_cast<int64_t>(p[b]) << (8 * b);
    TORCH_CHECK(id < vocab_size_, "TokenFile: token ", i, " of ", path_, " is ", id,
                ", expected an id below vocab_size ", vocab_size_);
    out[i - begin] = id;
  }
}

std::string tokenize_file(const std::string& text_path, const std::string& encoding_name,
                          int64_t vocab_size, const Encoder& encode) {
  std::error_code ec;
  TORCH_CHECK(fs::is_regular_file(text_path, ec), "tokenize_file: text file ", text_path,
              " does not exist or is not a file");
  const std::string cache = text_path + "." + encoding_name + ".bin";
  if (fs::exists(cache, ec) &&
      fs::last_write_time(cache, ec) >= fs::last_write_time(text_path, ec) && !ec) {
    return cache;
  }
  std::ifstream in(text_path, std::ios::binary);
  TORCH_CHECK(in, "tokenize_file: cannot read ", text_path, ": ", errno_text());
  std::ostringstream text;
  text << in.rdbuf();
  write_token_file(cache, encode(text.str()), vocab_size);
  return cache;
}

// ---- TokenDataset, RandomBatches -----------------------------------------------------------

TokenDataset::TokenDataset(const std::vector<std::string>& paths, int64_t vocab_size,
                           int64_t block_size, std::pair<double, double> split)
    : block_size_(block_size) {
  TORCH_CHECK(!paths.empty(), "TokenDataset: no token files given");
  TORCH_CHECK(block_size > 0, "TokenDataset: block_size must be positive, got ", block_size);
  const auto [lo, hi] = split;
  TORCH_CHECK(0.0 <= lo && lo < hi && hi <= 1.0,
              "TokenDataset: split must be [begin, end) with 0 "
              "<= begin < end <= 1, got [",
              lo, ", ", hi, ")");
  int64_t total_tokens = 0;
  for (const auto& path : paths) {
    auto file = std::make_shared<TokenFile>(path, vocab_size);
    const auto n = static_cast<double>(file->size());
    const auto begin = static_cast<int64_t>(std::llround(lo * n));
    const auto end = static_cast<int64_t>(std::llround(hi * n));
    total_tokens += end - begin;
    const int64_t windows = end - begin - block_size;  // starts s with s + block_size < end
    if (windows <= 0) continue;  // a file too short for one window adds nothing
    parts_.push_back({file, begin, end, num_windows_});
    num_windows_ += windows;
  }
  TORCH_CHECK(
      num_windows_ > 0, "TokenDataset: the corpus is smaller than one block: ", total_tokens,
      " tokens in the split [", lo, ", ", hi, ") of ", paths.size(), " file(s) (", paths.front(),
      (paths.size() > 1 ? ", ..." : ""), "), but a window needs block_size + 1 = ", block_size + 1,
      " consecutive tokens of one file");
}

int64_t TokenDataset::num_tokens() const {
  int64_t n = 0;
  for (const auto& part : parts_) n += part.end - part.begin;
  return n;
}

int64_t TokenDataset::num_windows() const { return num_windows_; }

torch::Tensor TokenDataset::window(int64_t index) const {
  TORCH_CHECK(0 <= index && index < num_windows_, "TokenDataset::window: index ", index,
              " out of range [0, ", num_windows_, ")");
  // The part holding window `index`: the last whose first_window <= index.
  auto it = std::upper_bound(parts_.begin(), parts_.end(), index,
                             [](int64_t i, const Part& p) { return i < p.first_window; });
  const Part& part = *(it - 1);
  const int64_t start = part.begin + (index - part.first_window);
  auto out = torch::empty({block_size_ + 1}, torch::kLong);
  part.file->read(start, start + block_size_ + 1, out.data_ptr<int64_t>());
  return out;
}

RandomBatches::RandomBatches(std::shared_ptr<const TokenDataset> dataset, int64_t batch_size,
                             uint64_t seed, int64_t rank, int64_t world_size)
    : dataset_(std::move(dataset)),
      batch_size_(batch_size),
      seed_(seed),
      rank_(rank),
      world_size_(world_size) {
  TORCH_CHECK(dataset_, "RandomBatches: dataset is null");
  TORCH_CHECK(batch_size > 0, "RandomBatches: batch_size must be positive, got ", batch_size);
  TORCH_CHECK(world_size > 0, "RandomBatches: world_size must be positive, got ", world_size);
  TORCH_CHECK(rank >= 0 && rank < world_size,
              "RandomBatches: rank must be in [0, world_size = ", world_size, "), got ", rank);
}

std::pair<torch::Tensor, torch::Tensor> RandomBatches::next() {
  std::vector<torch::Tensor> windows;
  windows.reserve(batch_size_);
  const uint64_t batch_key = mix64(seed_ ^ mix64(static_cast<uint64_t>(position_)));
  for (int64_t i = rank_ * batch_size_; i < (rank_ + 1) * batch_size_; ++i) {
    const uint64_t bits = mix64(batch_key + static_cast<uint64_t>(i));  // row i of the global batch
    windows.push_back(dataset_->window(uniform_below(bits, dataset_->num_windows())));
  }
  ++position_;
  auto batch = torch::stack(windows);  // [batch, block_size + 1]
  const int64_t t = dataset_->block_size();
  return {batch.slice(1, 0, t), batch.slice(1, 1, t + 1)};
}

void RandomBatches::set_position(int64_t position) {
  TORCH_CHECK(position >= 0, "RandomBatches: position must be >= 0, got ", position);
  position_ = position;
}

// ---- Optimisation --------------------------------------------------------------------------

double cosine_learning_rate(int64_t step, const CosineScheduleOptions& o) {
  TORCH_CHECK(o.learning_rate() > 0.0, "cosine_learning_rate: learning_rate must be positive, got ",
              o.learning_rate());
  TORCH_CHECK(0.0 <= o.min_lr() && o.min_lr() <= o.learning_rate(),
              "cosine_learning_rate: min_lr must be in [0, learning_rate = ", o.learning_rate(),
              "], got ", o.min_lr());
  TORCH_CHECK(0 <= o.warmup_steps() && o.warmup_steps() <= o.decay_steps(),
              "cosine_learning_rate: need 0 <= warmup_steps <= decay_steps, got warmup_steps ",
              o.warmup_steps(), " and decay_steps ", o.decay_steps());
  TORCH_CHECK(step >= 0, "cosine_learning_rate: step must be >= 0, got ", step);
  if (step < o.warmup_steps()) {
    return o.learning_rate() * static_cast<double>(step + 1) /
           static_cast<double>(o.warmup_steps() + 1);
  }
  if (step >= o.decay_steps()) return o.min_lr();
  const double ratio = static_cast<double>(step - o.warmup_steps()) /
                       static_cast<double>(o.decay_steps() - o.warmup_steps());
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));  // 1 -> 0
  return o.min_lr() + coeff * (o.learning_rate() - o.min_lr());
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate) {
  TORCH_CHECK(learning_rate >= 0.0 && std::isfinite(learning_rate),
              "set_learning_rate: learning_rate must be finite and >= 0, got ", learning_rate);
  for (auto& group : optimizer.param_groups()) group.options().set_lr(learning_rate);
}

double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  TORCH_CHECK(std::isfinite(max_norm), "clip_grad_norm: max_norm must be finite, got ", max_norm);
  std::vector<torch::Tensor> norms;
  for (const auto& p : parameters) {
    if (p.grad().defined()) norms.push_back(p.grad().detach().to(torch::kFloat).norm(2));
  }
  if (norms.empty()) return 0.0;
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0.0) {
    const double scale = max_norm / (total + 1e-6);
    if (scale < 1.0) {
      torch::NoGradGuard no_grad;
      for (const auto& p : parameters) {
        if (p.grad().defined()) p.grad().mul_(scale);
      }
    }
  }
  return total;
}

double estimate_loss(
    torch::nn::Module& model,
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& loss,
    RandomBatches batches, int64_t iters) {
  TORCH_CHECK(iters > 0, "estimate_loss: iters must be positive, got ", iters);
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  batches.set_position(0);
  double sum = 0.0;
  for (int64_t i = 0; i < iters; ++i) {
    auto [x, y] = batches.next();
    sum += loss(x, y).item<double>();
  }
  model.train(was_training);
  return sum / static_cast<double>(iters);
}

AutocastGuard::AutocastGuard(c10::DeviceType device_type, bool enabled, at::ScalarType dtype)
    : device_type_(device_type), enabled_(enabled) {
  if (!enabled_) return;
  was_enabled_ = at::autocast::is_autocast_enabled(device_type_);
  was_dtype_ = at::autocast::get_autocast_dtype(device_type_);
  at::autocast::set_autocast_enabled(device_type_, true);
  at::autocast::set_autocast_dtype(device_type_, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  // The weights cast for this region are cached until the outermost region ends.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_type_, was_enabled_);
  at::autocast::set_autocast_dtype(device_type_, was_dtype_);
}

// ---- Checkpoints ---------------------------------------------------------------------------

void check_writable_folder(const std::string& folder) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  TORCH_CHECK(!ec, "output folder ", folder, " cannot be created: ", ec.message());
  TORCH_CHECK(fs::is_directory(folder, ec), "output folder ", folder, " is not a folder");
  const std::string probe = folder + "/.write-test";
  {
    std::ofstream out(probe);
    TORCH_CHECK(out && (out << "ok") && (out.close(), !out.fail()), "output folder ", folder,
                " cannot be written: ", errno_text());
  }
  fs::remove(probe, ec);
}

namespace detail {

std::string make_staging_folder(const std::string& folder) {
  const fs::path target = fs::absolute(fs::path(folder).lexically_normal());
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  TORCH_CHECK(!ec, "save_checkpoint: cannot create ", parent.string(), ": ", ec.message());
  std::string name = target.filename().string() + ".saving-XXXXXX";
  std::string templ = (parent / name).string();
  TORCH_CHECK(::mkdtemp(templ.data()) != nullptr, "save_checkpoint: cannot create a folder in ",
              parent.string(), " (", errno_text(), ")");
  return templ;
}

void commit_staging_folder(const std::string& staging, const std::string& folder) {
  std::error_code ec;
  const std::string old = folder + ".old";
  // When `folder` is missing, `old` may hold the last checkpoint (an earlier save was cut between
  // its renames): it stays until the new one is in place.
  if (fs::exists(folder, ec)) {
    fs::remove_all(old, ec);
    fs::rename(folder, old, ec);
    TORCH_CHECK(!ec, "save_checkpoint: cannot rename ", folder, " to ", old, ": ", ec.message());
  }
  fs::rename(staging, folder, ec);
  TORCH_CHECK(!ec, "save_checkpoint: cannot rename ", staging, " to ", folder, ": ", ec.message(),
              " (the previous checkpoint is in ", old, ")");
  fs::remove_all(old, ec);
}

void write_training_files(const std::string& folder, const torch::optim::Optimizer& optimizer,
                          const TrainingState& state) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  auto cpu_generator = at::detail::getDefaultCPUGenerator();
  archive.write("rng_cpu", cpu_generator.get_state());
  if (torch::cuda::is_available()) {
    for (int64_t d = 0; d < static_cast<int64_t>(torch::cuda::device_count()); ++d) {
      auto generator = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d));
      archive.write("rng_cuda_" + std::to_string(d), generator.get_state());
    }
  }
  archive.save_to(folder + "/optimizer.pt");

  Kwargs json = {
      {"step", state.step}, {"data_position", state.data_position}, {"extra", state.extra}};
  // JSON has no infinity: a checkpoint before the first evaluation stores null.
  if (std::isfinite(state.best_val_loss)) {
    json["best_val_loss"] = state.best_val_loss;
  } else {
    json["best_val_loss"] = nullptr;
  }
  std::ofstream out(folder + "/training_state.json");
  out << json.dump(2) << "\n";
  out.close();
  TORCH_CHECK(!out.fail(), "save_checkpoint: writing ", folder, "/training_state.json failed");
}

}  // namespace detail

std::string resolve_checkpoint(const std::string& folder) {
  std::error_code ec;
  if (fs::exists(folder + "/training_state.json", ec)) return folder;
  if (fs::exists(folder + ".old/training_state.json", ec)) return folder + ".old";
  return "";
}

bool has_checkpoint(const std::string& folder) { return !resolve_checkpoint(folder).empty(); }

TrainingState load_checkpoint(const std::string& folder, torch::optim::Optimizer& optimizer) {
  const std::string dir = resolve_checkpoint(folder);
  TORCH_CHECK(!dir.empty(), "load_checkpoint: ", folder,
              " holds no training checkpoint (training_state.json is missing)");
  Kwargs json;
  try {
    std::ifstream in(dir + "/training_state.json");
    json = Kwargs::parse(in);
    TrainingState state;
    state.step = json.at("step").get<int64_t>();
    state.data_position = json.at("data_position").get<int64_t>();
    if (!json.at("best_val_loss").is_null()) {
      state.best_val_loss = json.at("best_val_loss").get<double>();
    }
    state.extra = json.value("extra", Kwargs::object());

    torch::serialize::InputArchive archive;
    archive.load_from(dir + "/optimizer.pt");
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    torch::Tensor rng;
    archive.read("rng_cpu", rng);
    auto cpu_generator = at::detail::getDefaultCPUGenerator();
    cpu_generator.set_state(rng);
    if (torch::cuda::is_available()) {
      for (int64_t d = 0; d < static_cast<int64_t>(torch::cuda::device_count()); ++d) {
        if (archive.try_read("rng_cuda_" + std::to_string(d), rng)) {
          auto generator = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d));
          generator.set_state(rng);
        }
      }
    }
    return state;
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "load_checkpoint: ", dir, ": ", e.what_without_backtrace());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "load_checkpoint: ", dir, "/training_state.json: ", e.what());
  }
}

// ---- Progress ------------------------------------------------------------------------------

ProgressBar::ProgressBar(int64_t total_steps, int64_t first_step)
    : total_(total_steps),
      first_(first_step),
      step_(first_step),
      shown_(isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (shown_ && drawn_) {
    draw();
    std::fputc('\n', stderr);
  }
}

void ProgressBar::update(int64_t step, double loss, double learning_rate, int64_t tokens) {
  step_ = step;
  loss_ = loss;
  lr_ = learning_rate;
  tokens_ += static_cast<double>(tokens);
  if (!shown_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!drawn_ || now - last_draw_ >= std::chrono::milliseconds(100) || step_ == total_) draw();
}

void ProgressBar::clear() {
  if (shown_ && drawn_) std::fputs("\r\033[K", stderr);
  drawn_ = false;
}

void ProgressBar::draw() {
  const auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  drawn_ = true;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double done = static_cast<double>(step_ - first_);
  const double rate = elapsed > 0 ? tokens_ / elapsed : 0.0;
  const double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step_) : -1.0;
  constexpr int kWidth = 24;
  const double fraction = total_ > 0 ? static_cast<double>(step_) / static_cast<double>(total_) : 1;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r\033[K%lld/%lld [%s] loss %.4f  lr %.2e  %.0f tok/s  ETA %s",
               static_cast<long long>(step_), static_cast<long long>(total_), bar.c_str(), loss_,
               lr_, rate, clock_text(eta).c_str());
  std::fflush(stderr);
}

}  // namespace dual_attention::training
