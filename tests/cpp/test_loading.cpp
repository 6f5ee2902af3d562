// Loading checkpoints that real users have (issue 16): bool keywords given as 0/1, weights saved
// as pytorch_model.bin by torch.save, and hostile configs that must be refused before anything is
// allocated. Expected values come from the reference (lm/dat_rca/expected.safetensors) and from
// Python's torch.save (tests/fixtures/torch_save/make_fixtures.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "../../fuzz/fuzz_inputs.h"
#include "dual_attention/io/safetensors.h"
#include "dual_attention/io/torch_checkpoint.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"
#include "test_paths.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
namespace da = dual_attention;
using da::Kwargs;
using test_support::contains;
using test_support::error_of;

const fs::path kFixtures = fs::path(DUAL_ATTENTION_FIXTURE_DIR);
const fs::path kTorchSave = kFixtures / "torch_save";

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class Loading : public test_support::TempDirTest {
 protected:
  // A checkpoint folder holding `config` and, when given, a copy of a weights file.
  fs::path folder(const Kwargs& config, const fs::path& weights = {}) {
    const fs::path f = dir / ("ckpt" + std::to_string(count++));
    fs::create_directories(f);
    std::ofstream(f / "config.json") << config.dump(2);
    if (!weights.empty()) fs::copy_file(weights, f / weights.filename());
    return f;
  }

  // The reference's logits on the dat_rca checkpoint, within the tolerance of the LM parity tests.
  static void expect_reference_logits(da::DualAttnTransformerLM& model) {
    const auto expected =
        da::io::load_safetensors((kFixtures / "lm" / "dat_rca" / "expected.safetensors").string())
            .tensors;
    auto [logits, loss] = model->forward(expected.at("idx"), expected.at("targets"));
    const double scale = expected.at("logits").abs().max().item<double>();
    EXPECT_LE((logits - expected.at("logits")).abs().max().item<double>(), 1e-4 * scale);
    EXPECT_NEAR(loss.item<double>(), expected.at("loss").item<double>(), 1e-5);
  }

  static Kwargs dat_rca_config() {
    return Kwargs::parse(read_text(kFixtures / "lm" / "dat_rca" / "config.json"));
  }

  int count = 0;
};

// ---- bool keywords: true/false, and 0/1 as Python passes them ----------------------------------

TEST_F(Loading, ABoolKeywordTakesZeroAndOneAsTheReferenceDoes) {
  // The reference's mixin writes "norm_first": 1 when a user passed 1; the model is the same.
  Kwargs config = dat_rca_config();
  ASSERT_EQ(config["norm_first"], true);
  config["norm_first"] = 1;
  const fs::path f = folder(config, kFixtures / "lm" / "dat_rca" / "model.safetensors");
  auto model = da::DualAttnTransformerLM::from_pretrained(f.string());
  EXPECT_TRUE(model->options.norm_first());
  expect_reference_logits(model);

  config["norm_first"] = 0;
  EXPECT_FALSE(da::DualAttnTransformerLMOptions::from_kwargs(config).norm_first());
  // Nested bool keywords too: in the blocks' kwargs and in symbol_retriever_config.
  config["ra_kwargs"]["add_bias_out"] = 1;
  config["symbol_retriever_config"] = {{"shared_symbol_retriever", 0}};
  auto unshared = da::DualAttnTransformerLM(da::DualAttnTransformerLMOptions::from_kwargs(config));
  EXPECT_EQ(unshared->options.symbol_retriever_config(),
            (Kwargs{{"shared_symbol_retriever", false}, {"weight_tie_symbol_library", false}}));
  EXPECT_NE(unshared->symbol_retrievers[0].get(), unshared->symbol_retrievers[1].get());
}

TEST_F(Loading, ABoolKeywordRefusesEveryOtherValue) {
  for (const Kwargs& bad : {Kwargs(2), Kwargs(-1), Kwargs("yes"), Kwargs("1"), Kwargs(1.0),
                            Kwargs(nullptr), Kwargs::array({1})}) {
    Kwargs config = dat_rca_config();
    config["norm_first"] = bad;
    const std::string message =
        error_of([&] { da::DualAttnTransformerLMOptions::from_kwargs(config); });
    EXPECT_TRUE(contains(message, "keyword argument 'norm_first' got " + bad.dump()))
        << bad.dump() << ": " << message;
    EXPECT_TRUE(contains(message, "expected a bool (true, false, 0 or 1)")) << message;
  }
  Kwargs config = dat_rca_config();
  config["symbol_retriever_config"] = {{"weight_tie_symbol_library", 2}};
  const std::string message = error_of(
      [&] { da::DualAttnTransformerLM(da::DualAttnTransformerLMOptions::from_kwargs(config)); });
  EXPECT_TRUE(contains(message,
                       "symbol_retriever_config: keyword argument "
                       "'weight_tie_symbol_library' got 2"))
      << message;
}

// ---- pytorch_model.bin -------------------------------------------------------------------------

TEST_F(Loading, PytorchModelBinLoadsAndReproducesTheReference) {
  // No model.safetensors in the folder: the weights are torch.save(model.state_dict()).
  const fs::path f = kTorchSave / "dat_rca";
  ASSERT_FALSE(fs::exists(f / "model.safetensors"));
  auto model = da::DualAttnTransformerLM::from_pretrained(f.string());
  expect_reference_logits(model);
  EXPECT_FALSE(model->is_training());
  // The tie between the token embedding and the output layer survives.
  const auto params = model->named_parameters();
  EXPECT_TRUE(params["layers.token_embedder.weight"].is_same(params["layers.final_out.weight"]));
}

TEST_F(Loading, TorchSaveArchivesKeepDtypesValuesAndSharedStorage) {
  const auto state = da::io::load_torch_state_dict((kTorchSave / "bf16_state_dict.bin").string());
  ASSERT_EQ(state.size(), 4u);
  const auto& w = state.at("w");
  EXPECT_EQ(w.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(w.sizes(), torch::IntArrayRef({4, 6}));
  const auto expected = nlohmann::json::parse(read_text(kTorchSave / "bf16_state_dict.json"));
  std::ostringstream hex;
  const auto bytes = w.contiguous();
  for (int64_t i = 0; i < bytes.numel() * 2; ++i)
    hex << std::hex << std::setw(2) << std::setfill('0')
        << int(static_cast<const uint8_t*>(bytes.data_ptr())[i]);
  EXPECT_EQ(hex.str(), expected["w_hex"].get<std::string>());
  // w_t is w.t() and row is w[1], views of w's storage as torch.save kept them.
  EXPECT_TRUE(torch::equal(state.at("w_t"), w.t()));
  EXPECT_EQ(state.at("w_t").strides(), torch::IntArrayRef({1, 6}));
  EXPECT_EQ(state.at("w_t").storage().data(), w.storage().data());
  EXPECT_TRUE(torch::equal(state.at("row"), w[1]));
  EXPECT_EQ(state.at("row").storage().data(), w.storage().data());
  EXPECT_TRUE(torch::equal(state.at("i"), torch::arange(5)));
}

TEST_F(Loading, TorchSaveArchivesHoldingAnythingButTensorsAreRefused) {
  auto refused = [](const std::string& file) {
    const std::string path = (kTorchSave / file).string();
    const std::string message = error_of([&] { da::io::load_torch_state_dict(path); });
    EXPECT_TRUE(contains(message, "torch checkpoint '" + path + "': ")) << message;
    return message;
  };
  EXPECT_TRUE(contains(refused("legacy_format.bin"), "legacy (pre-1.6) torch.save format"));
  EXPECT_TRUE(contains(refused("nested_dict.bin"),
                       "entry 'a' is a GenericDict; a state dict "
                       "holds tensors only"));
  EXPECT_TRUE(contains(refused("not_a_dict.bin"),
                       "expected a state dict (a dict of str -> "
                       "tensor), got GenericList"));
  EXPECT_TRUE(contains(refused("string_value.bin"), "entry 'note' is a String"));
  // A pickled call of os.system: refused, and nothing ran (the unpickler cannot run Python).
  const std::string custom = refused("custom_class.bin");
  EXPECT_TRUE(contains(custom, "cannot read it as a torch.save archive of tensors")) << custom;
  EXPECT_FALSE(fs::exists("/tmp/dual_attention_pwned"));
  EXPECT_TRUE(contains(refused("short_storage.bin"),
                       "entry 'w' claims a storage of 16 bytes but its record holds 4"));
  EXPECT_TRUE(contains(refused("compressed_record.bin"), "its records claim more bytes than"));
  // Not an archive at all, and not a file.
  EXPECT_TRUE(contains(refused("make_fixtures.py"), "not a torch.save zip archive"));
  EXPECT_TRUE(contains(refused("no_such_file.bin"), "cannot open the file"));
}

TEST_F(Loading, AFolderWithoutWeightsNamesBothFileNames) {
  const fs::path f = folder(dat_rca_config());
  const std::string message =
      error_of([&] { da::DualAttnTransformerLM::from_pretrained(f.string()); });
  EXPECT_TRUE(contains(message, "no model.safetensors or pytorch_model.bin")) << message;
}

// ---- hostile configs ---------------------------------------------------------------------------

// Each is refused with an error naming config.json and the problem; the absurd sizes by the
// parameter estimate, before the constructor runs (so before anything is allocated).
TEST_F(Loading, AbsurdSizesAreRefusedBeforeAnythingIsAllocated) {
  struct Case {
    const char* what;
    std::function<void(Kwargs&)> edit;
  };
  const std::vector<Case> cases = {
      {"d_model 1e9", [](Kwargs& c) { c["d_model"] = 1'000'000'000; }},
      {"n_layers 1e6", [](Kwargs& c) { c["n_layers"] = 1'000'000; }},
      {"vocab_size 1e12", [](Kwargs& c) { c["vocab_size"] = 1'000'000'000'000; }},
      {"dff 1e10", [](Kwargs& c) { c["dff"] = 10'000'000'000; }},
      {"max_block_size 1e12", [](Kwargs& c) { c["max_block_size"] = 1'000'000'000'000; }},
      {"n_symbols 1e12",
       [](Kwargs& c) { c["symbol_retrieval_kwargs"]["n_symbols"] = 1'000'000'000'000; }},
      {"n_relations 1e9",
       [](Kwargs& c) {
         c["ra_type"] = "relational_attention";
         c["ra_kwargs"]["n_relations"] = 1'000'000'000;
       }},
      {"key_dim 1e10",
       [](Kwargs& c) {
         c["sa_kwargs"] = {{"key_dim", 10'000'000'000}};
       }},
      {"d_model 2^63 - 1", [](Kwargs& c) { c["d_model"] = INT64_MAX; }},
  };
  for (const auto& [what, edit] : cases) {
    Kwargs config = dat_rca_config();
    edit(config);
    const fs::path f = folder(config, kFixtures / "lm" / "dat_rca" / "model.safetensors");
    const std::string message =
        error_of([&] { da::DualAttnTransformerLM::from_pretrained(f.string()); });
    EXPECT_TRUE(contains(message, (f / "config.json").string() + ": ")) << what << ": " << message;
    EXPECT_TRUE(contains(message,
                         "above max_parameter_bytes 17179869184 (16 GiB); nothing was "
                         "allocated"))
        << what << ": " << message;
  }
}

TEST_F(Loading, TheParameterLimitIsTheCallersToRaiseOrLower) {
  const fs::path f = kFixtures / "lm" / "dat_rca";
  const std::string message = error_of([&] {
    da::DualAttnTransformerLM::from_pretrained(f.string(),
                                               da::PretrainedOptions().max_parameter_bytes(1000));
  });
  EXPECT_TRUE(contains(message, "above max_parameter_bytes 1000")) << message;
  EXPECT_TRUE(contains(message, "raise max_parameter_bytes")) << message;
  // float64 counts 8 bytes a parameter; each of the 2 blocks adds kBytesPerBlock.
  const auto model = da::DualAttnTransformerLM::from_pretrained(f.string());
  const int64_t blocks = 2 * static_cast<int64_t>(da::kBytesPerBlock);
  const int64_t bytes32 = model->get_num_params(/*non_embedding=*/false) * 4;
  EXPECT_NO_THROW(da::DualAttnTransformerLM::from_pretrained(
      f.string(), da::PretrainedOptions().max_parameter_bytes(2 * bytes32 + blocks)));
  EXPECT_THROW(
      da::DualAttnTransformerLM::from_pretrained(
          f.string(),
          da::PretrainedOptions().max_parameter_bytes(bytes32 + blocks).dtype(torch::kFloat64)),
      c10::Error);
  EXPECT_TRUE(contains(error_of([&] {
                         da::DualAttnTransformerLM::from_pretrained(
                             f.string(), da::PretrainedOptions().max_parameter_bytes(0));
                       }),
                       "max_parameter_bytes must be positive, got 0"));
}

TEST_F(Loading, InvalidOptionsAreRefusedWithTheirName) {
  struct Case {
    std::function<void(Kwargs&)> edit;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {[](Kwargs& c) { c["max_block_size"] = -5; }, "max_block_size must be positive, got -5"},
      {[](Kwargs& c) { c["dropout_rate"] = -0.5; }, "dropout_rate must be in [0, 1], got -0.5"},
      {[](Kwargs& c) { c["dropout_rate"] = std::nan(""); }, "dropout_rate must be in [0, 1]"},
      {[](Kwargs& c) { c["d_model"] = 0; }, "d_model must be positive, got 0"},
      {[](Kwargs& c) { c["vocab_size"] = -1; }, "vocab_size must be positive, got -1"},
      {[](Kwargs& c) {
         c["ra_type"] = "relational_attention";
         c["ra_kwargs"] = {{"rel_proj_dim", 5}};
       },
       "rel_proj_dim (5)"},
      {[](Kwargs& c) { c["ra_kwargs"] = 5; },
       "keyword argument 'ra_kwargs' got 5 (int), expected "
       "a dict or None"},
      {[](Kwargs& c) {
         c["ra_type"] = "relational_attention";
         c["ra_kwargs"] = {{"n_relations", "8"}};
       },
       "keyword argument 'n_relations' got \"8\" (str), expected an int"},
      {[](Kwargs& c) {
         c["sa_kwargs"] = {{"bogus", 1}};
       },
       "unexpected keyword argument 'bogus'"},
      {[](Kwargs& c) { c["symbol_retrieval_kwargs"] = "x"; }, "symbol_retrieval_kwargs"},
      {[](Kwargs& c) { c["d_model"] = uint64_t(UINT64_MAX); },
       "keyword argument 'd_model' got 18446744073709551615 (int), expected an int (64-bit)"},
      {[](Kwargs& c) { c.erase("vocab_size"); }, "missing required argument 'vocab_size'"},
  };
  for (const auto& [edit, expected] : cases) {
    Kwargs config = dat_rca_config();
    edit(config);
    const std::string message = error_of(
        [&] { da::model_from_config<da::DualAttnTransformerLM>(config, {}, "config.json"); });
    EXPECT_TRUE(contains(message, "config.json: ")) << config.dump() << ": " << message;
    EXPECT_TRUE(contains(message, expected)) << config.dump() << ": " << message;
  }
  // Zero heads: both halves empty.
  Kwargs config = dat_rca_config();
  config["n_heads_sa"] = 0;
  config["n_heads_ra"] = 0;
  EXPECT_TRUE(contains(error_of([&] {
                         da::model_from_config<da::DualAttnTransformerLM>(config, {},
                                                                          "config.json");
                       }),
                       "config.json: "));
}

TEST_F(Loading, ConfigJsonThatIsNotAnObjectOrTooDeepIsRefused) {
  EXPECT_TRUE(contains(error_of([] { da::parse_config_json("[1]", "c.json"); }),
                       "c.json: expected a JSON object of constructor keywords, got list"));
  EXPECT_TRUE(contains(error_of([] { da::parse_config_json("{\"a\":", "c.json"); }),
                       "c.json: invalid JSON"));
  // Found by fuzz_config: a number beyond double's range escaped as nlohmann's out_of_range
  // (tests/fixtures/fuzz/fuzz_config/number-overflow-11e308.json).
  EXPECT_TRUE(contains(error_of([] { da::parse_config_json("{\"d_model\": 11e308}", "c.json"); }),
                       "c.json: invalid JSON: [json.exception.out_of_range.406] number overflow"));
  const std::string deep = "{\"ra_kwargs\":" + std::string(150, '[') + std::string(150, ']') + "}";
  EXPECT_TRUE(contains(error_of([&] { da::parse_config_json(deep, "c.json"); }),
                       "c.json: JSON values nest more than 100 deep"));
}

// The estimate behind the limit: close to the real size of every fixture model (parameters,
// each shared tensor once, plus buffers such as positional tables).
TEST_F(Loading, ParameterEstimateIsCloseToTheBuiltModelForEveryFixture) {
  auto actual = [](const torch::nn::Module& m) {
    double n = 0;
    std::set<const void*> seen;
    for (const auto& p : m.named_parameters())
      if (seen.insert(p.value().unsafeGetTensorImpl()).second) n += p.value().numel();
    for (const auto& b : m.named_buffers())
      if (seen.insert(b.value().unsafeGetTensorImpl()).second) n += b.value().numel();
    return n;
  };
  auto check = [&](double estimate, const torch::nn::Module& m, const std::string& name) {
    const double real = actual(m);
    EXPECT_GE(estimate, 0.8 * real) << name << ": estimate " << estimate << ", built " << real;
    EXPECT_LE(estimate, 1.25 * real) << name << ": estimate " << estimate << ", built " << real;
  };
  const auto manifest = nlohmann::json::parse(read_text(kFixtures / "lm" / "MANIFEST.json"));
  for (const auto& [name, info] : manifest.items()) {
    const auto config = da::read_config_json((kFixtures / "lm" / name / "config.json").string());
    if (info["class"] == "DualAttnTransformerLM") {
      const auto o = da::DualAttnTransformerLMOptions::from_kwargs(config);
      check(da::estimate_parameter_count(o), *da::DualAttnTransformerLM(o), name);
    } else {
      const auto o = da::TransformerLMOptions::from_kwargs(config);
      check(da::estimate_parameter_count(o), *da::TransformerLM(o), name);
    }
  }
  for (const auto& entry : fs::directory_iterator(kFixtures / "models")) {
    if (!fs::is_directory(entry)) continue;
    const std::string name = entry.path().filename();
    const auto config = da::read_config_json((entry.path() / "config.json").string());
    const auto meta = nlohmann::json::parse(read_text(entry.path() / "meta.json"));
    const std::string model = meta["model"];
    if (model == "Seq2SeqTransformer") {
      const auto o = da::Seq2SeqTransformerOptions::from_kwargs(config);
      check(da::estimate_parameter_count(o), *da::Seq2SeqTransformer(o), name);
    } else if (model == "Seq2SeqDualAttnTransformer") {
      const auto o = da::Seq2SeqDualAttnTransformerOptions::from_kwargs(config);
      check(da::estimate_parameter_count(o), *da::Seq2SeqDualAttnTransformer(o), name);
    } else if (model == "VisionTransformer") {
      const auto o = da::VisionTransformerOptions::from_kwargs(config);
      check(da::estimate_parameter_count(o), *da::VisionTransformer(o), name);
    } else {
      ASSERT_EQ(model, "VisionDualAttnTransformer") << name;
      const auto o = da::VisionDualAttnTransformerOptions::from_kwargs(config);
      check(da::estimate_parameter_count(o), *da::VisionDualAttnTransformer(o), name);
    }
  }
}

TEST_F(Loading, AbsurdSeq2SeqAndVisionConfigsAreRefusedToo) {
  const fs::path s2s = kFixtures / "models" / "s2s_transformer_token";
  Kwargs config = da::read_config_json((s2s / "config.json").string());
  config["input_spec"]["vocab_size"] = 1'000'000'000'000;
  std::string message =
      error_of([&] { da::model_from_config<da::Seq2SeqTransformer>(config, {}, "config.json"); });
  EXPECT_TRUE(contains(message, "nothing was allocated")) << message;

  const fs::path vit = kFixtures / "models" / "vit_cls_square";
  config = da::read_config_json((vit / "config.json").string());
  config["image_shape"] = {3, 1'000'000, 1'000'000};
  config["patch_size"] = {1, 1};
  message =
      error_of([&] { da::model_from_config<da::VisionTransformer>(config, {}, "config.json"); });
  EXPECT_TRUE(contains(message, "nothing was allocated")) << message;
}

// Every input the fuzzers found a problem with (minimised, tests/fixtures/fuzz/<target>/), and
// every seed, goes through the fuzz target's code again: it must load or raise c10::Error (the
// tokenizer and request targets catch their own errors and abort on a broken invariant).
TEST_F(Loading, FuzzFindingsAndSeedsLoadOrRaiseCleanly) {
  struct Target {
    const char* name;
    void (*run)(const uint8_t*, size_t);
    const char* seed_suffix;  // seeds among the fixtures, or nullptr: findings only
  };
  const Target targets[] = {
      {"fuzz_safetensors", da::fuzz::load_safetensors_input, ".safetensors"},
      {"fuzz_config", da::fuzz::load_config_input, "config.json"},
      {"fuzz_tokenizer", da::fuzz::load_tokenizer_input, nullptr},
      {"fuzz_completion_request", da::fuzz::parse_request_input, nullptr},
  };
  auto ends_with = [](const std::string& s, const char* suffix) {
    return suffix != nullptr && s.size() >= strlen(suffix) &&
           s.compare(s.size() - strlen(suffix), std::string::npos, suffix) == 0;
  };
  for (const auto& target : targets) {
    int inputs = 0;
    for (const auto& entry : fs::recursive_directory_iterator(kFixtures)) {
      if (!entry.is_regular_file()) continue;
      const std::string path = entry.path().string();
      const bool finding = contains(path, "/fuzz/" + std::string(target.name) + "/");
      const bool seed = entry.file_size() < (32 << 10) && ends_with(path, target.seed_suffix);
      if (!finding && !seed) continue;
      const std::string bytes = read_text(entry.path());
      SCOPED_TRACE(path);
      try {
        target.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      } catch (const c10::Error&) {
      }
      ++inputs;
    }
    EXPECT_GT(inputs, 0) << target.name << ": no findings or seeds under " << kFixtures;
  }
}

}  // namespace
