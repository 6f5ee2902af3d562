// The training pieces (include/dual_attention/training.h): token files, windows and batches, the
// learning-rate schedule and clipping against their formulas, checkpoints that survive an
// interrupted save, and a short training run whose loss falls below a bound. The whole program
// (examples/train_lm.cpp as `dual-attention train`: resume, reference loading, bad input) is
// tested from Python in tests/python/test_training.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "dual_attention/language_models.h"
#include "dual_attention/training.h"

namespace fs = std::filesystem;
using namespace dual_attention;
using namespace dual_attention::training;

namespace {

// A fresh folder under the system's temporary folder, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "da-training-XXXXXX").string();
    path_ = ::mkdtemp(templ.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<int64_t> ids_of(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// The message of the c10::Error `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

DualAttnTransformerLM tiny_dat(int64_t vocab_size, int64_t block_size) {
  return DualAttnTransformerLM(
      DualAttnTransformerLMOptions(vocab_size, 32, 2, 2, 2,
                                   {{"d_model", 32}, {"n_heads", 2}, {"n_symbols", 8}},
                                   std::nullopt, 0.0, "swiglu", true, block_size)
          .pos_enc_type("RoPE"));
}

// 1000 tokens counting 0, 1, ..., 996, 0, 1, 2 (so y is x + 1 mod 997), in blocks of 16.
std::shared_ptr<TokenDataset> counting_dataset(const TempDir& dir) {
  std::vector<int64_t> tokens(1000);
  for (int64_t i = 0; i < 1000; ++i) tokens[i] = i % 997;
  write_token_file(dir / "t.bin", tokens, 1000);
  return std::make_shared<TokenDataset>(std::vector<std::string>{dir / "t.bin"}, 1000, 16);
}

}  // namespace

// ---- token files ---------------------------------------------------------------------------

TEST(TokenFile, RoundTripsUint16LittleEndian) {
  TempDir dir;
  const std::vector<int64_t> tokens = {0, 1, 258, 50256, 65535};
  write_token_file(dir / "t.bin", tokens, 65536);
  // nanoGPT's layout: uint16 little-endian, nothing else in the file.
  EXPECT_EQ(file_bytes(dir / "t.bin"), std::string("\x00\x00\x01\x00\x02\x01\x50\xc4\xff\xff", 10));
  EXPECT_EQ(read_token_file(dir / "t.bin", 65536), tokens);
  EXPECT_FALSE(fs::exists(dir / "t.bin.tmp"));
}

TEST(TokenFile, LargeVocabulariesUseUint32) {
  TempDir dir;
  EXPECT_EQ(token_width(65536), 2);
  EXPECT_EQ(token_width(65537), 4);
  const std::vector<int64_t> tokens = {3, 65536, 100276};
  write_token_file(dir / "t.bin", tokens, 100277);
  EXPECT_EQ(file_bytes(dir / "t.bin"),
            std::string("\x03\x00\x00\x00\x00\x00\x01\x00\xb4\x87\x01\x00", 12));
  EXPECT_EQ(read_token_file(dir / "t.bin", 100277), tokens);
}

TEST(TokenFile, BadInputIsAnErrorNamingTheFile) {
  TempDir dir;
  EXPECT_NE(error_of([&] {
              write_token_file(dir / "a.bin", {1, 64}, 64);
            }).find("token 1 of " + (dir / "a.bin") + " is 64, expected an id in [0, 64)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              TokenFile(dir / "missing.bin", 64);
            }).find("cannot open token file " + (dir / "missing.bin")),
            std::string::npos);
  std::ofstream(dir / "odd.bin") << "abc";  // 3 bytes: not uint16 ids
  EXPECT_NE(error_of([&] {
              TokenFile(dir / "odd.bin", 64);
            }).find("has 3 bytes, expected a multiple of 2"),
            std::string::npos);
  write_token_file(dir / "big.bin", {1, 2, 300}, 1000);  // read with a smaller vocabulary
  EXPECT_NE(error_of([&] { read_token_file(dir / "big.bin", 256); })
                .find("token 2 of " + (dir / "big.bin") +
                      " is 300, expected an id below "
                      "vocab_size 256"),
            std::string::npos);
}

TEST(TokenFile, TokenizeFileCachesBesideTheText) {
  TempDir dir;
  std::ofstream(dir / "a.txt") << "abcab";
  int calls = 0;
  Encoder bytes = [&](std::string_view text) {
    ++calls;
    return std::vector<int64_t>(text.begin(), text.end());
  };
  const std::string cache = tokenize_file(dir / "a.txt", "bytes", 256, bytes);
  EXPECT_EQ(cache, dir / "a.txt.bytes.bin");
  EXPECT_EQ(read_token_file(cache, 256), (std::vector<int64_t>{97, 98, 99, 97, 98}));
  EXPECT_EQ(tokenize_file(dir / "a.txt", "bytes", 256, bytes), cache);
  EXPECT_EQ(calls, 1);  // the second call read the cache
  EXPECT_NE(error_of([&] {
              tokenize_file(dir / "none.txt", "bytes", 256, bytes);
            }).find("text file " + (dir / "none.txt") + " does not exist"),
            std::string::npos);
}

// ---- windows and batches -------------------------------------------------------------------

TEST(TokenDataset, WindowsAreConsecutiveTokensOfOneFileAndSplitsPartitionEachFile) {
  TempDir dir;
  std::vector<int64_t> a(100), b(50);
  for (int64_t i = 0; i < 100; ++i) a[i] = i;
  for (int64_t i = 0; i < 50; ++i) b[i] = 200 + i;
  write_token_file(dir / "a.bin", a, 256);
  write_token_file(dir / "b.bin", b, 256);
  TokenDataset train({dir / "a.bin", dir / "b.bin"}, 256, 8, {0.0, 0.9});
  // a: tokens [0, 90) -> 90 - 8 = 82 windows; b: [0, 45) -> 37 windows.
  EXPECT_EQ(train.num_tokens(), 135);
  EXPECT_EQ(train.num_windows(), 82 + 37);
  EXPECT_EQ(ids_of(train.window(0)), ids_of(torch::arange(0, 9)));
  EXPECT_EQ(ids_of(train.window(81)), ids_of(torch::arange(81, 90)));  // ends at token 89
  EXPECT_EQ(ids_of(train.window(82)), ids_of(torch::arange(200, 209)));
  EXPECT_EQ(ids_of(train.window(118)), ids_of(torch::arange(236, 245)));
  TokenDataset val({dir / "a.bin", dir / "b.bin"}, 256, 4, {0.9, 1.0});
  // a: [90, 100) -> 6 windows; b: [45, 50) -> 1.
  EXPECT_EQ(val.num_windows(), 7);
  EXPECT_EQ(ids_of(val.window(0)), ids_of(torch::arange(90, 95)));
  EXPECT_EQ(ids_of(val.window(6)), ids_of(torch::arange(245, 250)));
}

TEST(TokenDataset, CorpusSmallerThanOneBlockIsAnError) {
  TempDir dir;
  write_token_file(dir / "small.bin", {1, 2, 3, 4, 5, 6, 7, 8}, 64);
  const std::string message = error_of([&] { TokenDataset({dir / "small.bin"}, 64, 8); });
  EXPECT_NE(message.find("the corpus is smaller than one block: 8 tokens"), std::string::npos)
      << message;
  EXPECT_NE(message.find("block_size + 1 = 9"), std::string::npos) << message;
  EXPECT_NO_THROW(TokenDataset({dir / "small.bin"}, 64, 7));
}

TEST(RandomBatches, OrderDependsOnlyOnSeedAndPosition) {
  TempDir dir;
  auto data = counting_dataset(dir);
  RandomBatches a(data, 4, 7), b(data, 4, 7), other(data, 4, 8);
  std::vector<torch::Tensor> xs;
  for (int i = 0; i < 5; ++i) {
    auto [x, y] = a.next();
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{4, 16}));
    // y is x moved one token on: consecutive ids here.
    EXPECT_TRUE(torch::equal(y.slice(1, 0, 15), x.slice(1, 1, 16)));
    EXPECT_TRUE(torch::equal(y.select(1, 15), (x.select(1, 15) + 1) % 997));
    xs.push_back(x);
  }
  EXPECT_EQ(a.position(), 5);
  b.set_position(3);  // a resumed run draws what the uninterrupted one did
  EXPECT_TRUE(torch::equal(b.next().first, xs[3]));
  EXPECT_TRUE(torch::equal(b.next().first, xs[4]));
  EXPECT_FALSE(torch::equal(other.next().first, xs[0]));
  EXPECT_FALSE(torch::equal(xs[0], xs[1]));
}

TEST(RandomBatches, RanksTogetherReadTheSingleProcessBatch) {
  TempDir dir;
  auto data = counting_dataset(dir);
  RandomBatches whole(data, 6, 7);  // one process, the global batch
  RandomBatches rank0(data, 2, 7, 0, 3), rank1(data, 2, 7, 1, 3), rank2(data, 2, 7, 2, 3);
  rank1.set_position(1);
  whole.set_position(1);
  rank0.set_position(1);
  rank2.set_position(1);
  auto [x, y] = whole.next();
  auto [x0, y0] = rank0.next();
  auto [x1, y1] = rank1.next();
  auto [x2, y2] = rank2.next();
  EXPECT_TRUE(torch::equal(torch::cat({x0, x1, x2}), x));
  EXPECT_TRUE(torch::equal(torch::cat({y0, y1, y2}), y));
  EXPECT_FALSE(torch::equal(x0, x1));
  // Rank 0 of 1 is the plain constructor.
  RandomBatches plain(data, 6, 7), explicit_single(data, 6, 7, 0, 1);
  EXPECT_TRUE(torch::equal(plain.next().first, explicit_single.next().first));
}

TEST(RandomBatches, RankOutsideWorldIsAnError) {
  TempDir dir;
  write_token_file(dir / "t.bin", std::vector<int64_t>(100, 1), 8);
  auto data = std::make_shared<TokenDataset>(std::vector<std::string>{dir / "t.bin"}, 8, 4);
  std::string message = error_of([&] { RandomBatches(data, 2, 0, 2, 2); });
  EXPECT_NE(message.find("rank must be in [0, world_size = 2), got 2"), std::string::npos)
      << message;
  message = error_of([&] { RandomBatches(data, 2, 0, 0, 0); });
  EXPECT_NE(message.find("world_size must be positive, got 0"), std::string::npos) << message;
}

// ---- optimisation --------------------------------------------------------------------------

TEST(CosineSchedule, FollowsWarmupThenCosineFormula) {
  const auto o = CosineScheduleOptions(6e-4, 10, 110).min_lr(6e-5);
  EXPECT_DOUBLE_EQ(cosine_learning_rate(0, o), 6e-4 * 1 / 11);
  EXPECT_DOUBLE_EQ(cosine_learning_rate(9, o), 6e-4 * 10 / 11);
  EXPECT_DOUBLE_EQ(cosine_learning_rate(10, o), 6e-4);               // cos(0) = 1
  EXPECT_DOUBLE_EQ(cosine_learning_rate(60, o), (6e-4 + 6e-5) / 2);  // cos(pi / 2) = 0
  EXPECT_DOUBLE_EQ(cosine_learning_rate(35, o),                      // cos(pi / 4)
                   6e-5 + 0.5 * (1 + std::sqrt(0.5)) * (6e-4 - 6e-5));
  EXPECT_DOUBLE_EQ(cosine_learning_rate(110, o), 6e-5);
  EXPECT_DOUBLE_EQ(cosine_learning_rate(1000, o), 6e-5);
  // Monotone decay after warmup.
  for (int64_t s = 10; s < 110; ++s)
    EXPECT_GE(cosine_learning_rate(s, o), cosine_learning_rate(s + 1, o));
  EXPECT_NE(error_of([] { cosine_learning_rate(0, CosineScheduleOptions(1e-3, 20, 10)); })
                .find("need 0 <= warmup_steps <= decay_steps, got warmup_steps 20 and "
                      "decay_steps 10"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              cosine_learning_rate(0, CosineScheduleOptions(1e-3, 0, 10).min_lr(1));
            }).find("min_lr must be in [0, learning_rate = 0.001], got 1"),
            std::string::npos);
}

TEST(ClipGradNorm, ScalesToMaxNormByTheTotalTwoNorm) {
  auto a = torch::zeros({2, 2}, torch::requires_grad());
  auto b = torch::zeros({3}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({{3.0f, 0.0f}, {0.0f, 4.0f}});  // |a| = 5
  b.mutable_grad() = torch::tensor({12.0f, 0.0f, 0.0f});           // |b| = 12 -> total 13
  const double total = clip_grad_norm({a, b}, 1.3);
  EXPECT_NEAR(total, 13.0, 1e-6);
  const double scale = 1.3 / (13.0 + 1e-6);  // torch.nn.utils.clip_grad_norm_'s factor
  EXPECT_NEAR(a.grad()[1][1].item<double>(), 4.0 * scale, 1e-6);
  EXPECT_NEAR(b.grad()[0].item<double>(), 12.0 * scale, 1e-6);
  // Below the bound, nothing changes; max_norm 0 only measures.
  EXPECT_NEAR(clip_grad_norm({a, b}, 100.0), 1.3, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<double>(), 12.0 * scale, 1e-6);
  EXPECT_NEAR(clip_grad_norm({a, b}, 0.0), 1.3, 1e-5);
}

TEST(ClipGradNorm, CountsATiedWeightOnce) {
  torch::manual_seed(0);
  auto model = tiny_dat(64, 16);
  auto x = torch::randint(0, 64, {2, 16});
  auto loss = std::get<1>(model->forward(x, x));
  loss.backward();
  // named_parameters lists the tied token embedding / output weight and the shared symbol
  // retriever's 4 tensors twice (54 names); the optimizer and the clip see each once. 49 is the
  // reference's len(list(model.parameters())) for this config (torch dedupes the same way).
  const auto params = distinct_parameters(*model);
  EXPECT_EQ(model->parameters().size(), 54u);
  EXPECT_EQ(params.size(), 49u);
  double sum_sq = 0.0;
  for (const auto& p : params) sum_sq += p.grad().pow(2).sum().item<double>();
  std::vector<torch::Tensor> copies;
  for (const auto& p : params) copies.push_back(p.grad().clone());
  const double torch_norm = torch::nn::utils::clip_grad_norm_(params, 1e9);  // measures only
  EXPECT_NEAR(clip_grad_norm(params, 0.0), std::sqrt(sum_sq), 1e-5 * std::sqrt(sum_sq));
  EXPECT_NEAR(clip_grad_norm(params, 0.0), torch_norm, 1e-5 * torch_norm);
}

// ---- checkpoints ---------------------------------------------------------------------------

TEST(Checkpoint, RestoresOptimizerStepRngAndPosition) {
  TempDir dir;
  torch::manual_seed(3);
  auto model = tiny_dat(64, 16);
  auto optimizer = model->configure_optimizers(0.1, 1e-3, {0.9, 0.95});
  auto x = torch::randint(0, 64, {2, 16});
  std::get<1>(model->forward(x, x)).backward();
  optimizer.step();
  TrainingState state;
  state.step = 1;
  state.data_position = 5;
  state.extra = {{"model_class", "DualAttnTransformerLM"}};
  save_checkpoint(dir / "ckpt", model, optimizer, state);
  const auto after_save = torch::rand({4});  // what the RNG gives right after the save

  for (const char* f : {"config.json", "model.safetensors", "training_state.json", "optimizer.pt"})
    EXPECT_TRUE(fs::exists(dir / (std::string("ckpt/") + f))) << f;
  auto loaded = DualAttnTransformerLM::from_pretrained(dir / "ckpt");
  auto loaded_optimizer = loaded->configure_optimizers(0.1, 1e-3, {0.9, 0.95});
  torch::manual_seed(99);
  const TrainingState back = load_checkpoint(dir / "ckpt", loaded_optimizer);
  EXPECT_EQ(back.step, 1);
  EXPECT_EQ(back.data_position, 5);
  EXPECT_EQ(back.extra, state.extra);
  EXPECT_TRUE(std::isinf(back.best_val_loss));
  EXPECT_TRUE(torch::equal(torch::rand({4}), after_save));  // the RNG continues where it was
  // The AdamW moments came back: the next step moves both models the same way (from fresh
  // gradients: the first step's are still on `model`).
  optimizer.zero_grad();
  for (auto* m : {&model, &loaded}) {
    (*m)->train();
    std::get<1>((*m)->forward(x, x)).backward();
  }
  optimizer.step();
  loaded_optimizer.step();
  const auto p = model->named_parameters(), q = loaded->named_parameters();
  for (const auto& item : p) EXPECT_TRUE(torch::equal(item.value(), q[item.key()])) << item.key();
}

TEST(Checkpoint, AnInterruptedSaveLeavesThePreviousCheckpointWhole) {
  TempDir dir;
  auto model = tiny_dat(64, 16);
  auto optimizer = model->configure_optimizers(0.1, 1e-3, {0.9, 0.95});
  TrainingState state;
  state.step = 7;
  save_checkpoint(dir / "ckpt", model, optimizer, state);
  const std::string before = file_bytes(dir / "ckpt/model.safetensors");

  // Killed while writing: the staging folder is half full, the checkpoint untouched.
  const std::string staging = training::detail::make_staging_folder(dir / "ckpt");
  std::ofstream(staging + "/model.safetensors") << "trunc";
  EXPECT_EQ(resolve_checkpoint(dir / "ckpt"), dir / "ckpt");
  EXPECT_EQ(file_bytes(dir / "ckpt/model.safetensors"), before);
  auto other = model->configure_optimizers(0.1, 1e-3, {0.9, 0.95});
  EXPECT_EQ(load_checkpoint(dir / "ckpt", other).step, 7);

  // Killed between the two renames: the previous checkpoint is found in ckpt.old.
  fs::rename(dir / "ckpt", dir / "ckpt.old");
  EXPECT_EQ(resolve_checkpoint(dir / "ckpt"), dir / "ckpt.old");
  EXPECT_EQ(load_checkpoint(dir / "ckpt", other).step, 7);

  // The next save completes and cleans up the .old folder.
  state.step = 8;
  save_checkpoint(dir / "ckpt", model, optimizer, state);
  EXPECT_EQ(load_checkpoint(dir / "ckpt", other).step, 8);
  EXPECT_FALSE(fs::exists(dir / "ckpt.old"));
}

TEST(Checkpoint, UnwritableOrMissingFoldersAreErrorsNamingThem) {
  TempDir dir;
  std::ofstream(dir / "file") << "x";  // a folder cannot be made below a file, even by root
  const std::string message = error_of([&] { check_writable_folder(dir / "file/out"); });
  EXPECT_NE(message.find("output folder " + (dir / "file/out") + " cannot be created"),
            std::string::npos)
      << message;
  auto model = tiny_dat(64, 16);
  auto optimizer = model->configure_optimizers(0.1, 1e-3, {0.9, 0.95});
  EXPECT_NE(error_of([&] {
              save_checkpoint(dir / "file/out", model, optimizer, {});
            }).find("cannot create"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir / "none", optimizer);
            }).find(dir / "none" + " holds no training checkpoint"),
            std::string::npos);
}

// ---- a short run ---------------------------------------------------------------------------

// 60 steps of the pieces as examples/train_lm.cpp uses them, on a corpus of counting sequences
// with random restarts: the loss starts near ln(64) = 4.16 and must end below 1.0 (the next token
// is determined except at a restart, 1 in 20 tokens).
TEST(TrainingRun, LossFallsBelowBoundInSixtySteps) {
  TempDir dir;
  torch::manual_seed(0);
  std::vector<int64_t> tokens;
  int64_t t = 0;
  for (int i = 0; i < 4000; ++i) {
    t = (i % 20 == 0) ? torch::randint(0, 64, {1}).item<int64_t>() : (t + 1) % 64;
    tokens.push_back(t);
  }
  write_token_file(dir / "count.bin", tokens, 64);
  auto data = std::make_shared<TokenDataset>(std::vector<std::string>{dir / "count.bin"}, 64, 32,
                                             std::make_pair(0.0, 0.9));
  auto val = std::make_shared<TokenDataset>(std::vector<std::string>{dir / "count.bin"}, 64, 32,
                                            std::make_pair(0.9, 1.0));
  auto model = tiny_dat(64, 32);
  auto optimizer = model->configure_optimizers(0.1, 1e-2, {0.9, 0.95});
  const auto schedule = CosineScheduleOptions(1e-2, 5, 60).min_lr(1e-3);
  RandomBatches batches(data, 16, 1);
  auto loss_of = [&](const torch::Tensor& x, const torch::Tensor& y) {
    return std::get<1>(model->forward(x, y));
  };
  const double initial = estimate_loss(*model, loss_of, RandomBatches(val, 16, 2), 4);
  model->train();
  for (int64_t step = 0; step < 60; ++step) {
    set_learning_rate(optimizer, cosine_learning_rate(step, schedule));
    optimizer.zero_grad();
    for (int micro = 0; micro < 2; ++micro) {  // gradient accumulation
      auto [x, y] = batches.next();
      (loss_of(x, y) / 2.0).backward();
    }
    clip_grad_norm(distinct_parameters(*model), 1.0);
    optimizer.step();
  }
  const double final_loss = estimate_loss(*model, loss_of, RandomBatches(val, 16, 2), 4);
  EXPECT_GT(initial, 3.9);
  EXPECT_LT(final_loss, 1.0) << "initial held-out loss " << initial;
  EXPECT_TRUE(model->is_training());  // estimate_loss restored the mode
}
