// Seq2seq and vision models against checkpoints and outputs of the reference (dual-attention
// 0.0.7), from tests/fixtures/models/ (written by tests/fixtures/make_model_fixtures.py), plus the
// reference's quirks we keep and the errors for bad input.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/io/state_dict.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"
#include "model_fixtures.h"
#include "test_paths.h"
#include "test_support.h"

using namespace dual_attention;
using namespace model_fixtures;

using test_support::expect_error;
using test_support::names_of;

namespace {

const fs::path kModels = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "models";

std::vector<std::string> fixture_cases() {
  std::vector<std::string> names;
  if (fs::is_directory(kModels)) {
    for (const auto& entry : fs::directory_iterator(kModels)) {
      if (entry.is_directory()) names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "s2s_vision_test_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
};

// ---- small models for the behaviour tests ----------------------------------------------------

Kwargs token_spec(int64_t vocab) { return {{"type", "token"}, {"vocab_size", vocab}}; }

Seq2SeqTransformerOptions small_transformer() {
  const Kwargs enc = {{"n_heads", 2},
                      {"dff", 32},
                      {"dropout_rate", 0.0},
                      {"activation", "relu"},
                      {"norm_first", true}};
  Kwargs dec = enc;
  dec["n_heads_cross"] = 2;
  dec["causal"] = true;
  return Seq2SeqTransformerOptions(token_spec(11), token_spec(13), /*d_model=*/16, /*out_dim=*/13,
                                   /*n_layers_enc=*/2, /*n_layers_dec=*/1, enc, dec,
                                   /*in_block_size=*/8, /*out_block_size=*/7);
}

Seq2SeqDualAttnTransformerOptions small_dat() {
  const Kwargs enc = {{"n_heads_sa", 1},      {"n_heads_ra", 1},     {"dff", 32},
                      {"activation", "relu"}, {"dropout_rate", 0.0}, {"norm_first", true}};
  Kwargs dec = enc;
  dec["n_heads_cross"] = 2;
  return Seq2SeqDualAttnTransformerOptions(token_spec(11), token_spec(13), "symbolic_attention",
                                           {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 5}}, 16,
                                           13, 2, 1, enc, dec, 8, 7);
}

VisionTransformerOptions small_vit() {
  return VisionTransformerOptions({3, 8, 12}, {4, 2}, 5, 16, 1, 2, 32, 0.0, "relu", true);
}

}  // namespace

// ---- reference fixtures ----------------------------------------------------------------------

TEST(ModelFixtures, CoverBothSeq2SeqAndBothVisionClasses) {
  std::set<std::string> classes;
  int f64 = 0;
  const auto cases = fixture_cases();
  for (const auto& name : cases) {
    const auto meta = read_json(kModels / name / "meta.json");
    classes.insert(meta.at("model").get<std::string>());
    f64 += meta.at("dtype") == "float64";
  }
  EXPECT_GE(cases.size(), 12u);
  EXPECT_GE(f64, 2);
  EXPECT_EQ(classes, std::set<std::string>({"Seq2SeqTransformer", "Seq2SeqDualAttnTransformer",
                                            "VisionTransformer", "VisionDualAttnTransformer"}));
}

class ModelFixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kModels / GetParam(); }
  Kwargs meta() const { return read_json(dir() / "meta.json"); }
  std::map<std::string, torch::Tensor> reference() const {
    return io::load_safetensors((dir() / "reference.safetensors").string()).tensors;
  }
};

// Logits (and loss) within 1e-4 (float32) or 1e-10 (float64) of the largest |reference logit|.
TEST_P(ModelFixture, ReproducesTheReferenceOutputs) {
  AnyModel model = from_pretrained(dir());  // keeps the checkpoint's dtype, eval mode
  EXPECT_FALSE(module_of(model).is_training());
  const auto ref = reference();
  const double rel_tol = dtype_of(meta()) == torch::kFloat64 ? 1e-10 : 1e-4;
  torch::NoGradGuard no_grad;

  auto compare = [&](const torch::Tensor& got, const torch::Tensor& want, const char* what) {
    ASSERT_TRUE(got.defined()) << what;
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
    const double tol = rel_tol * std::max(max_abs(want), 1e-30);
    const double err = max_abs(got - want);
    EXPECT_LE(err, tol) << what;
    std::printf("[ parity   ] %-40s %-12s max err %.3g (tolerance %.3g, max |ref| %.3g)\n",
                GetParam().c_str(), what, err, tol, max_abs(want));
  };

  const auto [logits, loss] = run_forward(model, ref, /*with_targets=*/true);
  compare(logits, ref.at("logits"), "logits");
  if (is_seq2seq(model)) {
    compare(loss, ref.at("loss"), "loss");
    const auto [last, no_loss] = run_forward(model, ref, /*with_targets=*/false);
    EXPECT_FALSE(no_loss.defined());
    compare(last, ref.at("logits_last"), "logits_last");
  }
  if (ref.count("x_small")) {
    compare(std::get<0>(run_forward(model, ref, false, "x_small")), ref.at("logits_small"),
            "logits_small");
  }
}

TEST_P(ModelFixture, StateDictKeysParametersAndCountMatchTheReference) {
  const auto m = meta();
  AnyModel model = build_model(m.at("model"), read_json(dir() / "config.json"));
  auto& module = module_of(model);
  // The state_dict, shared tensors under each of their names, in PyTorch's order.
  EXPECT_EQ(Kwargs(names_of(io::named_state(module))), m.at("state_dict_keys"));
  // named_parameters(): each shared tensor once, under its first name, with its shape.
  Kwargs params = Kwargs::object();
  std::set<const void*> seen;
  for (const auto& [name, p] : io::named_state(module)) {
    if (!p.requires_grad() || !seen.insert(p.unsafeGetTensorImpl()).second) continue;
    params[name] = p.sizes().vec();
  }
  EXPECT_EQ(params, m.at("param_shapes"));
  EXPECT_EQ(num_params(model), m.at("num_parameters").get<int64_t>());
}

// What save_pretrained writes for a loaded reference checkpoint is the reference's save_model file,
// byte for byte (same names, same aliases for the shared tensors, same layout), and a config.json
// that builds the same options (defaults left out).
TEST_P(ModelFixture, SavePretrainedWritesTheReferencesCheckpointBytes) {
  AnyModel model = from_pretrained(dir());
  TempDir tmp;
  save_pretrained(model, tmp.path);
  auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_TRUE(read(tmp.path / "model.safetensors") == read(dir() / "model.safetensors"));

  const std::string cls = meta().at("model");
  const Kwargs saved = read_json(tmp.path / "config.json");
  const Kwargs given = read_json(dir() / "config.json");
  EXPECT_EQ(options_as_kwargs(model), options_as_kwargs(build_model(cls, saved)));
  for (const auto& [key, value] : saved.items()) EXPECT_EQ(given.at(key), value) << key;
}

// C++ -> save_pretrained -> from_pretrained: every tensor bit-exact, outputs identical.
TEST_P(ModelFixture, SaveThenLoadIsBitExact) {
  AnyModel original = from_pretrained(dir());
  TempDir tmp;
  save_pretrained(original, tmp.path);
  std::ofstream(tmp.path / "meta.json") << meta().dump();
  torch::manual_seed(1234);  // a different initialisation, overwritten by the load
  AnyModel copy = from_pretrained(tmp.path);

  const auto a = io::named_state(module_of(original));
  const auto b = io::named_state(module_of(copy));
  ASSERT_EQ(names_of(a), names_of(b));
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << a[i].first;
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
  torch::NoGradGuard no_grad;
  const auto ref = reference();
  const auto [la, lossa] = run_forward(original, ref, true);
  const auto [lb, lossb] = run_forward(copy, ref, true);
  EXPECT_TRUE(torch::equal(la, lb));
  if (lossa.defined()) {
    EXPECT_TRUE(torch::equal(lossa, lossb));
  }
}

TEST_P(ModelFixture, OptionsRoundTripThroughKwargs) {
  const auto m = meta();
  const Kwargs config = read_json(dir() / "config.json");
  AnyModel model = build_model(m.at("model"), config);
  const Kwargs all = options_as_kwargs(model);
  // Every keyword the reference was given comes back with the same value ...
  for (const auto& [key, value] : config.items()) EXPECT_EQ(all.at(key), value) << key;
  // ... and the full keyword set builds the same architecture.
  AnyModel again = build_model(m.at("model"), all);
  EXPECT_EQ(names_of(io::named_state(module_of(again))),
            names_of(io::named_state(module_of(model))));
}

INSTANTIATE_TEST_SUITE_P(Reference, ModelFixture, ::testing::ValuesIn(fixture_cases()),
                         [](const auto& info) { return info.param; });

// ---- the reference's quirks ------------------------------------------------------------------

TEST(Seq2SeqDualAttnTransformer, BuildsNLayersEncDecoderBlocksLikeTheReference) {
  Seq2SeqDualAttnTransformer model(small_dat().n_layers_enc(3).n_layers_dec(1));
  EXPECT_EQ(model->encoder_blocks.size(), 3u);
  EXPECT_EQ(model->decoder_blocks.size(), 3u);
  Seq2SeqTransformer plain(small_transformer().n_layers_enc(3).n_layers_dec(1));
  EXPECT_EQ(plain->decoder_blocks.size(), 1u);
}

TEST(Seq2SeqTransformer, TieWeightsRegistersFinalOutUnderTargetEmbedderWithoutTying) {
  Seq2SeqTransformer model(small_transformer());
  auto state = io::named_state(*model);
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  ASSERT_TRUE(by_name.count("layers.target_embedder.weights.weight"));
  EXPECT_TRUE(by_name["layers.target_embedder.weights.weight"].is_same(model->final_out->weight));
  EXPECT_TRUE(by_name["layers.target_embedder.weights.bias"].is_same(model->final_out->bias));
  EXPECT_FALSE(by_name["layers.target_embedder.weight"].is_same(model->final_out->weight));

  Seq2SeqTransformer untied(small_transformer().tie_weights(false));
  for (const auto& name : names_of(io::named_state(*untied))) {
    EXPECT_EQ(name.find(".weights."), std::string::npos) << name;
  }
  // final_out counted once.
  EXPECT_EQ(model->get_num_params(), untied->get_num_params());
}

TEST(Seq2SeqDualAttnTransformer, CloneKeepsTheSecondRegistrationOfFinalOut) {
  Seq2SeqDualAttnTransformer model(small_dat());
  model->eval();
  auto copy = std::dynamic_pointer_cast<Seq2SeqDualAttnTransformerImpl>(model->clone());
  ASSERT_TRUE(copy);
  EXPECT_FALSE(copy->is_training());
  const auto a = io::named_state(*model);
  const auto b = io::named_state(*copy);
  ASSERT_EQ(names_of(a), names_of(b));
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
    EXPECT_FALSE(a[i].second.is_same(b[i].second)) << a[i].first;  // a deep copy
  }
  auto weights = copy->target_embedder.ptr()->named_parameters()["weights.weight"];
  EXPECT_TRUE(weights.is_same(copy->final_out->weight));
  const auto x = torch::randint(0, 11, {2, 5});
  const auto y = torch::randint(0, 13, {2, 4});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(std::get<0>(model->forward(x, y)), std::get<0>(copy->forward(x, y))));
  auto on_cpu = std::dynamic_pointer_cast<Seq2SeqTransformerImpl>(
      Seq2SeqTransformer(small_transformer())->clone(torch::Device(torch::kCPU)));
  EXPECT_TRUE(on_cpu->target_embedder.ptr()->named_parameters()["weights.bias"].is_same(
      on_cpu->final_out->bias));
}

TEST(Seq2SeqTransformer, SavedCheckpointAliasesTheSecondNameOfFinalOut) {
  Seq2SeqDualAttnTransformer model(small_dat());
  TempDir tmp;
  io::save_module(*model, (tmp.path / "m.safetensors").string());
  const auto file = io::SafetensorsFile::open((tmp.path / "m.safetensors").string());
  EXPECT_TRUE(file.contains("layers.final_out.weight"));
  EXPECT_FALSE(file.contains("layers.target_embedder.weights.weight"));
  EXPECT_EQ(file.aliases().at("layers.target_embedder.weights.weight"), "layers.final_out.weight");
  EXPECT_EQ(file.aliases().at("layers.target_embedder.weights.bias"), "layers.final_out.bias");
}

TEST(Seq2SeqTransformer, WithoutTargetsReturnsTheLastPositionOnlyAndNoLoss) {
  torch::manual_seed(0);
  Seq2SeqTransformer model(small_transformer());
  model->eval();
  const auto x = torch::randint(0, 11, {2, 6});
  const auto y = torch::randint(0, 13, {2, 5});
  const auto targets = torch::randint(0, 13, {2, 5});
  const auto [full, loss] = model->forward(x, y, targets);
  const auto [last, none] = model->forward(x, y);
  EXPECT_EQ(full.sizes(), (std::vector<int64_t>{2, 5, 13}));
  EXPECT_EQ(last.sizes(), (std::vector<int64_t>{2, 1, 13}));
  EXPECT_TRUE(loss.defined());
  EXPECT_FALSE(none.defined());
  EXPECT_TRUE(torch::allclose(last, full.slice(1, 4), 1e-6, 1e-6));
}

TEST(Seq2SeqTransformer, LossIgnoresTheIgnoreIndex) {
  torch::manual_seed(0);
  Seq2SeqTransformer model(small_transformer().loss_ignore_idx(-1));
  model->eval();
  const auto x = torch::randint(0, 11, {1, 4});
  const auto y = torch::randint(0, 13, {1, 3});
  auto targets = torch::tensor({{3, -1, 5}});
  const auto [logits, loss] = model->forward(x, y, targets);
  const auto kept_logits = torch::stack({logits[0][0], logits[0][2]});
  const auto expected = torch::nn::functional::cross_entropy(kept_logits, torch::tensor({3, 5}));
  EXPECT_TRUE(torch::allclose(loss, expected, 1e-6, 1e-6));
}

// ---- from_pretrained ---------------------------------------------------------------------------

TEST(Seq2SeqDualAttnTransformer, FromPretrainedConvertsToARequestedDtype) {
  const auto dir = kModels / "s2s_dat_symattn_prenorm";
  auto model = Seq2SeqDualAttnTransformer::from_pretrained(
      dir.string(), PretrainedOptions().dtype(torch::kFloat64));
  EXPECT_EQ(model->final_out->weight.scalar_type(), torch::kFloat64);
  const auto ref = io::load_safetensors((dir / "reference.safetensors").string()).tensors;
  torch::NoGradGuard no_grad;
  const auto [logits, loss] = model->forward(ref.at("x"), ref.at("y"), ref.at("targets"));
  EXPECT_LE(max_abs(logits.to(torch::kFloat32) - ref.at("logits")),
            1e-4 * max_abs(ref.at("logits")));
}

TEST(VisionModels, FromPretrainedErrorsNameTheFileAndTheProblem) {
  TempDir tmp;
  const auto source = kModels / "vit_cls_square";
  fs::copy(source / "model.safetensors", tmp.path / "model.safetensors");
  Kwargs config = read_json(source / "config.json");

  config["pool"] = "max";
  std::ofstream(tmp.path / "config.json") << config.dump();
  expect_error([&] { VisionTransformer::from_pretrained(tmp.path.string()); },
               {"config.json", "pool 'max' is not valid"});

  config = read_json(source / "config.json");
  config["patch_sizes"] = {4, 4};
  std::ofstream(tmp.path / "config.json") << config.dump();
  expect_error([&] { VisionTransformer::from_pretrained(tmp.path.string()); },
               {"config.json", "unexpected keyword argument 'patch_sizes'"});

  // A config that does not match the weights: pos_embedding has 5 rows in the file, 3 here.
  config = read_json(source / "config.json");
  config["image_shape"] = {3, 8, 4};
  std::ofstream(tmp.path / "config.json") << config.dump();
  expect_error([&] { VisionTransformer::from_pretrained(tmp.path.string()); }, {"pos_embedding"});

  fs::remove(tmp.path / "model.safetensors");
  std::ofstream(tmp.path / "config.json") << read_json(source / "config.json").dump();
  expect_error([&] { VisionTransformer::from_pretrained(tmp.path.string()); },
               {"model.safetensors"});
  expect_error([&] { VisionTransformer::from_pretrained((tmp.path / "missing").string()); },
               {"missing"});
}

TEST(Seq2SeqTransformer, FromPretrainedRejectsAReferenceCheckpointOfTheOtherClass) {
  // A Seq2SeqDualAttnTransformer config is not a Seq2SeqTransformer config.
  expect_error(
      [] { Seq2SeqTransformer::from_pretrained((kModels / "s2s_dat_symattn_prenorm").string()); },
      {"config.json", "unexpected keyword argument 'symbol_retrieval"});
}

// ---- configuration errors --------------------------------------------------------------------

TEST(Seq2SeqModels, FromKwargsRejectsMissingUnknownAndMistypedKeywords) {
  Kwargs config = to_kwargs(small_transformer());
  config.erase("out_dim");
  expect_error([&] { Seq2SeqTransformerOptions::from_kwargs(config); },
               {"Seq2SeqTransformer", "missing required argument 'out_dim'"});
  config = to_kwargs(small_transformer());
  config["n_layers"] = 2;
  expect_error([&] { Seq2SeqTransformerOptions::from_kwargs(config); },
               {"unexpected keyword argument 'n_layers'", "n_layers_enc"});
  config = to_kwargs(small_dat());
  config["d_model"] = "16";
  expect_error([&] { Seq2SeqDualAttnTransformerOptions::from_kwargs(config); },
               {"Seq2SeqDualAttnTransformer", "'d_model'", "expected an int"});
}

TEST(Seq2SeqModels, BadSpecsAndBlockKeywordsAreErrors) {
  expect_error(
      [] {
        Seq2SeqTransformer(small_transformer().input_spec({{"type", "image"}}));
      },
      {"Seq2SeqTransformer", "input_spec['type'] must be 'token' or 'vector'", "image"});
  expect_error(
      [] {
        Seq2SeqTransformer(small_transformer().output_spec({{"type", "token"}}));
      },
      {"output_spec", "vocab_size"});
  expect_error(
      [] {
        Seq2SeqDualAttnTransformer(small_dat().input_spec({{"type", "vector"}, {"dim", -2}}));
      },
      {"input_spec", "positive int 'dim'"});
  auto enc = small_transformer().encoder_kwargs();
  enc["d_model"] = 16;
  expect_error([&] { Seq2SeqTransformer(small_transformer().encoder_kwargs(enc)); },
               {"encoder_kwargs must not contain 'd_model'"});
  enc = small_transformer().encoder_kwargs();
  enc.erase("n_heads");
  expect_error([&] { Seq2SeqTransformer(small_transformer().encoder_kwargs(enc)); },
               {"encoder_kwargs", "missing required argument 'n_heads'"});
  expect_error([] { Seq2SeqDualAttnTransformer(small_dat().symbol_retrieval("symbols")); },
               {"'symbols'", "'symbolic_attention'", "'rel_sym_attn'", "'positional_symbols'",
                "'position_relative'"});
}

// ---- forward errors --------------------------------------------------------------------------

TEST(Seq2SeqModels, BadInputsAreErrors) {
  Seq2SeqDualAttnTransformer model(small_dat());
  const auto x = torch::randint(0, 11, {2, 6});
  const auto y = torch::randint(0, 13, {2, 5});
  expect_error(
      [&] {
        model->forward(torch::full({2, 6}, 11), y);
      },
      {"x holds token ids in [11, 11]", "[0, 10]"});
  expect_error([&] { model->forward(x, torch::full({2, 5}, -1)); }, {"y holds token ids"});
  expect_error(
      [&] {
        model->forward(torch::randint(0, 11, {2, 9}), y);
      },
      {"x has length 9", "in_block_size (8)"});
  expect_error(
      [&] {
        model->forward(x, torch::randint(0, 13, {2, 8}));
      },
      {"y has length 8", "out_block_size (7)"});
  expect_error([&] { model->forward(torch::randint(0, 11, {6}), y); },
               {"x must be token ids [batch, len]", "[6]"});
  expect_error([&] { model->forward(torch::randn({2, 6}), y); }, {"integer token ids", "Float"});
  expect_error(
      [&] {
        model->forward(x, torch::randint(0, 13, {3, 5}));
      },
      {"same batch size", "2 and 3"});
  expect_error([&] { model->forward(x, torch::randint(0, 13, {2, 0})); }, {"y must not be empty"});
  expect_error(
      [&] {
        model->forward(x, y, torch::randint(0, 13, {2, 4}));
      },
      {"targets must hold one class id per target position", "[2, 4]"});
  expect_error(
      [&] {
        model->forward(x, y, torch::full({2, 5}, 13));
      },
      {"targets hold class ids in [13, 13]", "loss_ignore_idx (-1)"});

  Seq2SeqTransformer vec(small_transformer()
                             .input_spec({{"type", "vector"}, {"dim", 3}})
                             .output_spec({{"type", "vector"}, {"dim", 4}}));
  expect_error(
      [&] {
        vec->forward(torch::randn({2, 5, 4}), torch::randn({2, 3, 4}));
      },
      {"x must be vectors [batch, len, 3]", "[2, 5, 4]"});
  expect_error(
      [&] {
        vec->forward(torch::ones({2, 5, 3}, torch::kLong), torch::randn({2, 3, 4}));
      },
      {"x must be a floating-point tensor"});
}

TEST(VisionModels, BadOptionsAreErrors) {
  expect_error(
      [] {
        VisionTransformer(small_vit().image_shape({3, 10, 12}));
      },
      {"image_shape (3, 10, 12)", "not divisible by patch_size (4, 2)"});
  expect_error(
      [] {
        VisionTransformer(small_vit().image_shape({8, 12}));
      },
      {"image_shape must be three positive ints", "(8, 12)"});
  expect_error(
      [] {
        VisionTransformer(small_vit().patch_size({4, 0}));
      },
      {"patch_size must be two positive ints"});
  expect_error([] { VisionTransformer(small_vit().pool("max")); },
               {"pool 'max' is not valid", "'cls', 'mean'"});
  Kwargs config = to_kwargs(small_vit());
  config["image_shape"] = "3x8x12";
  expect_error([&] { VisionTransformerOptions::from_kwargs(config); },
               {"'image_shape'", "expected a list of ints"});
  config = to_kwargs(small_vit());
  config.erase("n_heads");
  expect_error([&] { VisionTransformerOptions::from_kwargs(config); },
               {"VisionTransformer", "missing required argument 'n_heads'"});
  const auto dat = VisionDualAttnTransformerOptions(
      {1, 4, 4}, {2, 2}, 2, 16, 1, 1, 1, 32, 0.0, "relu", true, "symbolic_attention",
      {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 4}});
  expect_error([&] { VisionDualAttnTransformer(VisionDualAttnTransformerOptions(dat).pool("")); },
               {"VisionDualAttnTransformer", "pool '' is not valid"});
  expect_error(
      [&] {
        VisionDualAttnTransformer(VisionDualAttnTransformerOptions(dat).symbol_retrieval("x"));
      },
      {"'x'", "expected one of"});
}

TEST(VisionModels, BadImagesAreErrors) {
  VisionTransformer model(small_vit());  // 3 channels, width 8, height 12, patches 4 wide, 2 high
  EXPECT_EQ(model->num_patches, 12);
  EXPECT_EQ(model->patch_dim, 24);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(model->forward(torch::randn({2, 3, 12, 8})).sizes(), (std::vector<int64_t>{2, 5}));
  expect_error(
      [&] {
        model->forward(torch::randn({3, 12, 8}));
      },
      {"x must be images [batch, channels, height, width]", "[3, 12, 8]"});
  expect_error(
      [&] {
        model->forward(torch::randn({2, 1, 12, 8}));
      },
      {"x has 1 channels", "expected 3"});
  expect_error(
      [&] {
        model->forward(torch::randn({2, 3, 12, 6}));
      },
      {"does not split into patches", "patch_height (2)", "patch_width (4)"});
  expect_error(
      [&] {
        model->forward(torch::randn({2, 3, 12, 12}));
      },
      {"has 18 patches, more than the model's 12"});
  expect_error(
      [&] {
        model->forward(torch::ones({2, 3, 12, 8}, torch::kLong));
      },
      {"floating-point"});
  // Fewer patches than the model was built for is accepted, as in the reference.
  EXPECT_EQ(model->forward(torch::randn({1, 3, 6, 8})).sizes(), (std::vector<int64_t>{1, 5}));
}

TEST(VisionModels, PatchesAreRowsOfPixelsWithChannelsInnermost) {
  VisionTransformer model(small_vit());
  // Pixel value encodes (channel, row, column).
  const auto c = torch::arange(3).view({1, 3, 1, 1});
  const auto r = torch::arange(12).view({1, 1, 12, 1});
  const auto w = torch::arange(8).view({1, 1, 1, 8});
  const auto image = (c * 10000 + r * 100 + w).to(torch::kFloat);
  const auto patches = model->to_patch_embedding[0]->as<torch::nn::Functional>()->forward(image);
  ASSERT_EQ(patches.sizes(), (std::vector<int64_t>{1, 12, 24}));
  // Patch (h=1, w=1) is index 1 * 2 + 1; inside it, (p1=1, p2=2, c=2) is (1 * 4 + 2) * 3 + 2.
  EXPECT_EQ(patches[0][3][(1 * 4 + 2) * 3 + 2].item<float>(), 2 * 10000 + 3 * 100 + 6);
}
