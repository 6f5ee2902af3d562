// The language models against checkpoints written by the reference (tests/fixtures/lm/, made by
// tests/fixtures/make_lm_fixtures.py with dual-attention 0.0.7's save_pretrained), our own
// save_pretrained, and the errors of bad inputs and bad configs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/io/state_dict.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/symbol_retrieval.h"
#include "test_paths.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace dual_attention;

using namespace test_support;

namespace {

const fs::path kFixtures = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "lm";

// A fresh temporary folder, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "lm_test_XXXXXX").string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path = pattern;
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
};

// Copies a fixture checkpoint (config.json + model.safetensors) into `to`.
void copy_checkpoint(const std::string& name, const fs::path& to) {
  fs::create_directories(to);
  for (const char* file : {"config.json", "model.safetensors"}) {
    fs::copy_file(kFixtures / name / file, to / file, fs::copy_options::overwrite_existing);
  }
}

std::vector<std::string> fixture_cases() {
  std::vector<std::string> names;
  const Kwargs manifest = read_json(kFixtures / "MANIFEST.json");
  for (const auto& item : manifest.items()) {
    names.push_back(item.key());
  }
  return names;
}

struct Expected {
  std::map<std::string, torch::Tensor> tensors;
  io::Metadata metadata;
  const torch::Tensor& operator[](const std::string& name) const { return tensors.at(name); }
  std::string meta(const std::string& key) const { return metadata.at(key); }
};

Expected load_expected(const std::string& name) {
  auto loaded = io::load_safetensors((kFixtures / name / "expected.safetensors").string());
  return {std::move(loaded.tensors), std::move(loaded.metadata)};
}

// max |a - b| / max |b|.
double relative_max_error(const torch::Tensor& a, const torch::Tensor& b) {
  auto diff = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
  return diff / b.to(torch::kFloat64).abs().max().item<double>();
}

// The state_dict names of a language model: its RoPE tables left out, as the checkpoint code does.
template <class Model>
std::vector<std::string> state_names(const Model& model) {
  std::vector<std::string> names;
  for (const auto& entry : io::named_state(model, model.non_persistent_buffers()))
    names.push_back(entry.first);
  return names;
}

// Every tensor of the two models' states equal in name, dtype and bits.
template <class Model>
void expect_same_state(const Model& a, const Model& b) {
  const auto sa = io::named_state(a, a.non_persistent_buffers());
  const auto sb = io::named_state(b, b.non_persistent_buffers());
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_EQ(sa[i].second.scalar_type(), sb[i].second.scalar_type()) << sa[i].first;
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
  }
}

// What a test needs from either model class.
template <class Holder>
struct ParityRun {
  static void check(const std::string& name, const Expected& exp) {
    const std::string dtype = exp.meta("dtype");
    PretrainedOptions options;
    // The reference's from_pretrained loads a bf16 file into float32 parameters.
    if (dtype == "bfloat16") options.dtype(torch::kFloat32);
    auto model = Holder::from_pretrained((kFixtures / name).string(), options);
    EXPECT_FALSE(model->is_training());

    const bool f64 = dtype == "float64";
    const double tolerance = f64 ? 1e-10 : 1e-4;  // of the largest |logit|
    torch::Tensor logits, loss;
    std::tie(logits, loss) = model->forward(exp["idx"], exp["targets"]);
    ASSERT_EQ(logits.sizes(), exp["logits"].sizes());
    EXPECT_EQ(logits.scalar_type(), exp["logits"].scalar_type());
    const double logit_error = relative_max_error(logits, exp["logits"]);
    EXPECT_LE(logit_error, tolerance);
    const double loss_error = std::abs(loss.item<double>() - exp["loss"].item<double>()) /
                              exp["logits"].abs().max().item<double>();
    EXPECT_LE(loss_error, tolerance);
    std::cout << "[ parity   ] " << name << ": max|logit - ref| / max|ref| = " << logit_error
              << ", |loss - ref| / max|ref logit| = " << loss_error << "\n";

    torch::Tensor logits_only, no_loss;
    std::tie(logits_only, no_loss) = model->forward(exp["idx"]);
    EXPECT_FALSE(no_loss.defined());
    EXPECT_TRUE(torch::equal(logits_only, logits));

    const int64_t max_new_tokens = std::stoll(exp.meta("max_new_tokens"));
    auto generated = model->generate(exp["prompt"], max_new_tokens, 1.0, /*top_k=*/1);
    EXPECT_TRUE(torch::equal(generated, exp["generated"])) << "ours:\n"
                                                           << generated << "\nreference:\n"
                                                           << exp["generated"];

    EXPECT_EQ(model->get_num_params(), std::stoll(exp.meta("num_params")));
    EXPECT_EQ(model->get_num_params(false), std::stoll(exp.meta("num_params_with_embedding")));
    std::vector<std::string> keys;
    for (const auto& k : Kwargs::parse(exp.meta("state_dict_keys"))) keys.push_back(k);
    EXPECT_EQ(state_names(*model), keys);
  }

  // Loads the reference's checkpoint with its own dtype, saves it, loads the copy.
  static void round_trip(const std::string& name) {
    TempDir tmp;
    auto model = Holder::from_pretrained((kFixtures / name).string());
    model->save_pretrained(tmp.path.string());
    auto again = Holder::from_pretrained(tmp.path.string());
    expect_same_state(*model, *again);
    EXPECT_EQ(to_kwargs(again->options), to_kwargs(model->options));
    // Both files as the reference's save_pretrained wrote them (its metadata keys sorted).
    EXPECT_EQ(read_bytes(tmp.path / "config.json"), read_bytes(kFixtures / name / "config.json"));
    EXPECT_EQ(read_bytes(tmp.path / "model.safetensors"),
              read_bytes(kFixtures / name / "model.safetensors"));
  }
};

class ReferenceCheckpoint : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceCheckpoint, ReproducesLogitsLossGreedyTokensAndParameterCounts) {
  const auto exp = load_expected(GetParam());
  if (exp.meta("class") == "DualAttnTransformerLM") {
    ParityRun<DualAttnTransformerLM>::check(GetParam(), exp);
  } else {
    ASSERT_EQ(exp.meta("class"), "TransformerLM");
    ParityRun<TransformerLM>::check(GetParam(), exp);
  }
}

TEST_P(ReferenceCheckpoint, SavePretrainedRewritesTheReferenceFilesAndReloadsBitExact) {
  const auto exp = load_expected(GetParam());
  if (exp.meta("class") == "DualAttnTransformerLM") {
    ParityRun<DualAttnTransformerLM>::round_trip(GetParam());
  } else {
    ParityRun<TransformerLM>::round_trip(GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(LanguageModels, ReferenceCheckpoint, ::testing::ValuesIn(fixture_cases()),
                         [](const auto& info) { return info.param; });

TEST(LanguageModelFixtures, CoverEveryCaseFolder) {
  std::set<std::string> folders, listed;
  for (const auto& entry : fs::directory_iterator(kFixtures)) {
    if (entry.is_directory()) folders.insert(entry.path().filename().string());
  }
  for (const auto& name : fixture_cases()) listed.insert(name);
  EXPECT_EQ(folders, listed);
  EXPECT_GE(listed.size(), 12u);
}

// ---- dtype -----------------------------------------------------------------------------------

TEST(DualAttnTransformerLMPretrained, Bf16CheckpointKeepsItsDtypeUnlessAskedForFloat32) {
  const auto dir = (kFixtures / "dat_bf16").string();
  const auto file = io::load_safetensors(dir + "/model.safetensors");
  auto bf16 = DualAttnTransformerLM::from_pretrained(dir);
  auto f32 =
      DualAttnTransformerLM::from_pretrained(dir, PretrainedOptions().dtype(torch::kFloat32));
  for (const auto& [name, t] : io::named_state(*bf16, bf16->non_persistent_buffers())) {
    EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << name;
  }
  for (const auto& [name, t] : io::named_state(*f32, f32->non_persistent_buffers())) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
    const auto stored =
        file.tensors.count(name) ? file.tensors.at(name) : file.tensors.at(file.metadata.at(name));
    EXPECT_TRUE(torch::equal(t, stored.to(torch::kFloat32))) << name;
  }
  EXPECT_EQ(bf16->freqs_cos.scalar_type(), torch::kBFloat16);
  // The bf16 model runs: forward and a generation step.
  const auto exp = load_expected("dat_bf16");
  auto [logits, loss] = bf16->forward(exp["idx"], exp["targets"]);
  EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
  EXPECT_LE(relative_max_error(logits, exp["logits"]), 0.1);  // bf16 arithmetic throughout
  EXPECT_EQ(bf16->generate(exp["prompt"], 2, 1.0, 1).size(1), exp["prompt"].size(1) + 2);
}

TEST(DualAttnTransformerLMPretrained, Float64CheckpointLoadsAsFloat32OnRequest) {
  const auto dir = (kFixtures / "dat_posemb_symattn_f64").string();
  auto model =
      DualAttnTransformerLM::from_pretrained(dir, PretrainedOptions().dtype(torch::kFloat32));
  const auto exp = load_expected("dat_posemb_symattn_f64");
  auto [logits, loss] = model->forward(exp["idx"], exp["targets"]);
  EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
  EXPECT_LE(relative_max_error(logits, exp["logits"]), 1e-4);
  expect_error(
      [&] { DualAttnTransformerLM::from_pretrained(dir, PretrainedOptions().dtype(torch::kLong)); },
      {"dtype must be a floating-point type", "Long"});
}

// ---- bad configs and files ---------------------------------------------------------------------

class BadCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    copy_checkpoint("dat_posemb_symattn", tmp.path);
    config = read_json(tmp.path / "config.json");
  }
  void write_config(const Kwargs& c) { write_bytes(tmp.path / "config.json", c.dump(2)); }
  void expect_load_error(const std::vector<std::string>& parts) {
    expect_error([&] { DualAttnTransformerLM::from_pretrained(tmp.path.string()); }, parts);
  }
  TempDir tmp;
  Kwargs config;
};

TEST_F(BadCheckpoint, MissingRequiredKeyIsNamed) {
  config.erase("d_model");
  write_config(config);
  expect_load_error({"config.json", "missing required argument 'd_model'"});
}

TEST_F(BadCheckpoint, MistypedValueIsNamedWithWhatWasExpected) {
  config["d_model"] = "16";
  write_config(config);
  expect_load_error({"config.json", "'d_model'", "\"16\"", "expected an int"});
  config["d_model"] = 16;
  config["norm_first"] = 2;  // 0 and 1 are bools, as in Python; 2 is not
  write_config(config);
  expect_load_error({"'norm_first'", "expected a bool"});
}

TEST_F(BadCheckpoint, UnknownKeyIsNamed) {
  config["n_heads"] = 4;
  write_config(config);
  expect_load_error({"config.json", "unexpected keyword argument 'n_heads'", "valid keywords"});
}

TEST_F(BadCheckpoint, UnknownNestedKeysAreNamed) {
  config["sa_kwargs"] = {{"n_kv_head", 1}};
  write_config(config);
  expect_load_error({"config.json", "'n_kv_head'"});
  config.erase("sa_kwargs");
  config["symbol_retriever_config"] = {{"shared", false}};
  write_config(config);
  expect_load_error({"config.json", "'shared'", "symbol_retriever_config"});
}

TEST_F(BadCheckpoint, InvalidJsonIsAnError) {
  write_bytes(tmp.path / "config.json", "{\"vocab_size\": 48,");
  expect_load_error({"config.json", "invalid JSON"});
  write_bytes(tmp.path / "config.json", "[1, 2]");
  expect_load_error({"config.json", "expected a JSON object"});
}

TEST_F(BadCheckpoint, MissingFilesAreNamed) {
  fs::remove(tmp.path / "model.safetensors");
  expect_load_error({"no model.safetensors or pytorch_model.bin"});
  fs::remove(tmp.path / "config.json");
  expect_load_error({"config.json", "cannot open"});
  expect_error([&] { DualAttnTransformerLM::from_pretrained((tmp.path / "nowhere").string()); },
               {"not a local folder", "Hugging Face Hub"});
  write_bytes(tmp.path / "file", "x");
  expect_error([&] { DualAttnTransformerLM::from_pretrained((tmp.path / "file").string()); },
               {"is a file"});
}

TEST_F(BadCheckpoint, WeightsThatDoNotFitTheConfigNameTheTensors) {
  config["dff"] = 24;  // every linear1/linear2 has the wrong shape
  write_config(config);
  expect_load_error(
      {"size mismatch for layers.blocks.0.ff_block.linear1.weight", "[32, 16]", "[24, 16]"});
  config["dff"] = 32;
  config["n_layers"] = 3;  // layers.blocks.2.* are missing from the file
  write_config(config);
  expect_load_error({"Missing key(s)", "layers.blocks.2.dual_attn.self_attention.wq.weight"});
  config["n_layers"] = 1;  // layers.blocks.1.* are unexpected
  write_config(config);
  expect_load_error({"Unexpected key(s)", "layers.blocks.1.norm1.weight"});
}

TEST_F(BadCheckpoint, TransformerLMConfigIsNotADualAttentionConfig) {
  copy_checkpoint("t_posemb_gelu_postnorm", tmp.path);
  expect_load_error({"config.json", "missing required argument 'n_heads_sa'"});
}

// ---- bad inputs --------------------------------------------------------------------------------

class LanguageModelInputs : public ::testing::Test {
 protected:
  DualAttnTransformerLM dat =
      DualAttnTransformerLM::from_pretrained((kFixtures / "dat_posemb_symattn").string());
  TransformerLM t = TransformerLM::from_pretrained((kFixtures / "t_posemb_gelu_postnorm").string());
};

TEST_F(LanguageModelInputs, SequenceLongerThanTheBlockNamesBothLengths) {
  auto idx = torch::zeros({1, 17}, torch::kLong);
  expect_error([&] { dat->forward(idx); }, {"sequence length 17", "max_block_size 16"});
  expect_error([&] { t->forward(idx); }, {"sequence length 17", "max_block_size 16"});
}

TEST_F(LanguageModelInputs, TokenIdsOutOfRangeAreNamed) {
  auto idx = torch::full({2, 4}, 3, torch::kLong);
  idx[1][2] = 48;
  expect_error([&] { dat->forward(idx); }, {"[0, 48)", "from 3 to 48"});
  idx[1][2] = -1;
  expect_error([&] { t->forward(idx); }, {"[0, 48)", "from -1 to 3"});
  expect_error([&] { dat->generate(idx, 3); }, {"[0, 48)", "-1"});
}

TEST_F(LanguageModelInputs, IdsMustBeAnIntegerMatrix) {
  expect_error([&] { dat->forward(torch::zeros({2, 4})); }, {"integer token ids", "Float"});
  expect_error([&] { dat->forward(torch::zeros({2, 4}, torch::kBool)); }, {"integer", "Bool"});
  expect_error([&] { t->forward(torch::zeros({8}, torch::kLong)); }, {"[batch, seq_len]", "[8]"});
  expect_error([&] { t->forward(torch::zeros({1, 2, 3}, torch::kLong)); }, {"[1, 2, 3]"});
  expect_error([&] { t->forward(torch::zeros({2, 0}, torch::kLong)); }, {"must not be empty"});
  expect_error([&] { t->forward(torch::Tensor()); }, {"undefined"});
}

TEST_F(LanguageModelInputs, Int32IdsGiveTheSameLogits) {
  auto idx = torch::randint(0, 48, {2, 7});
  EXPECT_TRUE(
      torch::equal(std::get<0>(dat->forward(idx)), std::get<0>(dat->forward(idx.to(torch::kInt)))));
  EXPECT_EQ(dat->generate(idx.to(torch::kInt), 2, 1.0, 1).scalar_type(), torch::kInt);
}

TEST_F(LanguageModelInputs, BadTargetsAreNamed) {
  auto idx = torch::zeros({2, 4}, torch::kLong);
  expect_error(
      [&] {
        dat->forward(idx, torch::zeros({2, 5}, torch::kLong));
      },
      {"targets", "[2, 4]", "[2, 5]"});
  expect_error([&] { dat->forward(idx, torch::zeros({2, 4})); }, {"targets", "Float"});
  expect_error(
      [&] {
        t->forward(idx, torch::full({2, 4}, -2, torch::kLong));
      },
      {"targets", "-1 (ignored)", "-2"});
}

TEST_F(LanguageModelInputs, BadGenerationArgumentsAreNamed) {
  auto idx = torch::zeros({1, 3}, torch::kLong);
  expect_error([&] { dat->generate(idx, 2, 0.0); }, {"temperature", "0"});
  expect_error([&] { dat->generate(idx, 2, 1.0, 0); }, {"top_k", "0"});
  expect_error([&] { t->generate(idx, -1); }, {"max_new_tokens", "-1"});
}

// ---- generation ------------------------------------------------------------------------------

TEST_F(LanguageModelInputs, GenerateCropsTheContextToTheBlock) {
  // A prompt longer than the block: the first step sees only its last 16 tokens.
  auto prompt = torch::randint(0, 48, {2, 20});
  auto out = dat->generate(prompt, 1, 1.0, 1);
  auto last = std::get<0>(dat->forward(prompt.slice(1, 4))).select(1, -1).argmax(-1);
  EXPECT_TRUE(torch::equal(out.slice(1, 0, 20), prompt));
  EXPECT_TRUE(torch::equal(out.select(1, 20), last));
}

TEST_F(LanguageModelInputs, SamplingFollowsTheGlobalGeneratorAndTopK) {
  auto prompt = torch::randint(0, 48, {1, 4});
  torch::manual_seed(7);
  auto a = dat->generate(prompt, 6, 0.8);
  torch::manual_seed(7);
  auto b = dat->generate(prompt, 6, 0.8);
  EXPECT_TRUE(torch::equal(a, b));
  // With top_k = 3 every sampled token is one of the 3 largest logits.
  auto top3 = std::get<1>(torch::topk(std::get<0>(dat->forward(prompt)).select(1, -1), 3));
  for (int i = 0; i < 20; ++i) {
    const auto token = dat->generate(prompt, 1, 5.0, 3)[0][4].item<int64_t>();
    EXPECT_TRUE((top3 == token).any().item<bool>()) << token;
  }
}

// ---- construction: ties, buffers, initialisation, optimiser ----------------------------------

DualAttnTransformerLMOptions small_dat() {
  return DualAttnTransformerLMOptions(40, 16, 3, 2, 2,
                                      {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 6}},
                                      std::nullopt, 0.0, "swiglu", true, 12)
      .pos_enc_type("RoPE");
}

TEST(DualAttnTransformerLM, TiesAreOneTensorUnderEveryName) {
  DualAttnTransformerLM model(small_dat());
  EXPECT_TRUE(model->token_embedder->weight.is_same(model->final_out->weight));
  EXPECT_EQ(model->symbol_retrievers[0].get(), model->symbol_retrievers[2].get());

  DualAttnTransformerLM tied(small_dat().symbol_retriever_config(
      {{"shared_symbol_retriever", false}, {"weight_tie_symbol_library", true}}));
  auto lib = [&](size_t i) {
    return tied->symbol_retrievers[i]
        ->as<SymbolicAttention>()
        ->named_parameters()["symbol_library"];
  };
  EXPECT_NE(tied->symbol_retrievers[0].get(), tied->symbol_retrievers[1].get());
  EXPECT_TRUE(lib(1).is_same(lib(0)));
  EXPECT_TRUE(lib(2).is_same(lib(0)));

  expect_error(
      [] {
        DualAttnTransformerLM(small_dat()
                                  .symbol_retrieval("position_relative")
                                  .symbol_retrieval_kwargs({{"symbol_dim", 16}, {"max_rel_pos", 3}})
                                  .symbol_retriever_config({{"shared_symbol_retriever", false},
                                                            {"weight_tie_symbol_library", true}}));
      },
      {"weight_tie_symbol_library", "position_relative"});
  expect_error([] { DualAttnTransformerLM(small_dat().symbol_retrieval("rel_sym_attn")); },
               {"'rel_sym_attn'", "'symbolic_attention'"});
  expect_error([] { DualAttnTransformerLM(small_dat().pos_enc_type("rope")); },
               {"pos_enc_type", "'rope'"});
}

TEST(DualAttnTransformerLM, RopeTablesAreBuffersButNotState) {
  DualAttnTransformerLM model(small_dat());
  auto names = state_names(*model);
  EXPECT_EQ(std::count(names.begin(), names.end(), "freqs_cos"), 0);
  EXPECT_TRUE(model->named_buffers().contains("freqs_cos"));
  EXPECT_EQ(model->freqs_cos.sizes(), (std::vector<int64_t>{12, 2}));  // head_dim 4
  EXPECT_EQ(names.front(), "layers.token_embedder.weight");
}

TEST(DualAttnTransformerLM, InitialisationScalesTheResidualOutputs) {
  torch::manual_seed(0);
  auto options = DualAttnTransformerLMOptions(64, 128, 8, 4, 4,
                                              {{"d_model", 128}, {"n_heads", 4}, {"n_symbols", 16}},
                                              512, 0.0, "gelu", true, 16);
  DualAttnTransformerLM model(options);
  const double scaled = 0.02 / std::sqrt(16.0);
  for (const auto& p : model->named_parameters()) {
    const auto& name = p.key();
    const double std = p.value().std().item<double>();
    if (name.size() >= 9 && (name.substr(name.size() - 9) == "wo.weight" ||
                             name.find("linear2.weight") != std::string::npos)) {
      EXPECT_NEAR(std, scaled, 0.15 * scaled) << name;
    } else if (name.find(".wr") != std::string::npos ||
               name.find("wq_attn.weight") != std::string::npos ||
               name.find("linear1.weight") != std::string::npos ||
               name == "layers.final_out.weight") {
      EXPECT_NEAR(std, 0.02, 0.003) << name;
    } else if (name.find("linear1.bias") != std::string::npos) {
      EXPECT_EQ(p.value().abs().max().item<double>(), 0.0) << name;
    } else if (name.find("symbol_library") != std::string::npos) {
      EXPECT_NEAR(std, 1.0, 0.1) << name;  // SymbolicAttention's own N(0, 1)
    }
  }
}

TEST(DualAttnTransformerLM, CloneKeepsTheTiesAndTheOutputs) {
  DualAttnTransformerLM model(small_dat().symbol_retriever_config(
      {{"shared_symbol_retriever", false}, {"weight_tie_symbol_library", true}}));
  model->eval();
  auto copy = std::dynamic_pointer_cast<DualAttnTransformerLMImpl>(model->clone());
  ASSERT_TRUE(copy);
  EXPECT_FALSE(copy->is_training());
  EXPECT_TRUE(copy->token_embedder->weight.is_same(copy->final_out->weight));
  EXPECT_FALSE(copy->final_out->weight.is_same(model->final_out->weight));
  auto idx = torch::randint(0, 40, {2, 9});
  EXPECT_TRUE(torch::equal(std::get<0>(copy->forward(idx)), std::get<0>(model->forward(idx))));
}

TEST(DualAttnTransformerLM, ConfigureOptimizersDecaysMatricesOnly) {
  DualAttnTransformerLM model(small_dat());
  auto optimizer = model->configure_optimizers(0.1, 3e-4, {0.9, 0.95});
  ASSERT_EQ(optimizer.param_groups().size(), 2u);
  int64_t total = 0;
  for (size_t g = 0; g < 2; ++g) {
    const auto& group = optimizer.param_groups()[g];
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    EXPECT_EQ(o.weight_decay(), g == 0 ? 0.1 : 0.0);
    EXPECT_EQ(o.lr(), 3e-4);
    EXPECT_EQ(o.betas(), std::make_tuple(0.9, 0.95));
    for (const auto& p : group.params()) {
      EXPECT_EQ(p.dim() >= 2, g == 0);
      total += p.numel();
    }
  }
  EXPECT_EQ(total, model->get_num_params(false));  // each shared tensor once
  // One step of training changes the tied embedding through both of its uses.
  auto idx = torch::randint(0, 40, {2, 8});
  auto before = model->final_out->weight.clone();
  optimizer.zero_grad();
  std::get<1>(model->forward(idx, idx)).backward();
  optimizer.step();
  EXPECT_FALSE(torch::equal(before, model->final_out->weight));
  EXPECT_TRUE(model->token_embedder->weight.is_same(model->final_out->weight));
}

TEST(TransformerLM, BlockKwargsMayNotRepeatTheModelsKeywords) {
  auto options = TransformerLMOptions(40, 16, 2, 4, 32, 0.0, "relu", true, 8);
  expect_error(
      [&] {
        TransformerLM(options.block_kwargs({{"causal", false}}));
      },
      {"block_kwargs", "'causal'"});
  expect_error(
      [&] {
        TransformerLM(options.block_kwargs({{"attn_kwarg", {}}}));
      },
      {"'attn_kwarg'"});
  TransformerLM gqa(options.block_kwargs({{"attn_kwargs", {{"n_kv_heads", 2}}}}));
  EXPECT_EQ(gqa->named_parameters()["layers.blocks.0.self_attn.wk.weight"].size(0), 8);
}

TEST(TransformerLM, SavedConfigHoldsTheRequiredAndTheNonDefaultKeywords) {
  TempDir tmp;
  TransformerLM model(TransformerLMOptions(40, 16, 2, 4, std::nullopt, 0.0, "relu", true, 8)
                          .pos_enc_type("RoPE")
                          .use_flash_attention(true));  // the default: not written
  model->save_pretrained(tmp.path.string());
  EXPECT_EQ(read_bytes(tmp.path / "config.json"),
            "{\n  \"activation\": \"relu\",\n  \"d_model\": 16,\n  \"dff\": null,\n"
            "  \"dropout_rate\": 0.0,\n  \"max_block_size\": 8,\n  \"n_heads\": 4,\n"
            "  \"n_layers\": 2,\n  \"norm_first\": true,\n  \"pos_enc_type\": \"RoPE\",\n"
            "  \"vocab_size\": 40\n}");
  auto again = TransformerLM::from_pretrained(tmp.path.string());
  expect_same_state(*model, *again);
}

}  // namespace
