// Module state: names as PyTorch's state_dict gives them, loading into a module in place, and
// save_module / load_module against files written by safetensors.torch.save_model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dual_attention/io/state_dict.h"
#include "io_test_modules.h"
#include "test_paths.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace dual_attention::io;
using io_test::TiedModel;

using namespace test_support;

namespace {

const fs::path kFixtures = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "io";

std::map<std::string, torch::Tensor> cloned_state(const torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& [name, t] : named_state(module)) state[name] = t.detach().clone();
  return state;
}

// The three kinds of sharing that must survive a load.
void expect_tied(TiedModel& model) {
  EXPECT_TRUE(model->final_out->named_parameters()["weight"].is_same(
      model->token_embedder->named_parameters()["weight"]));
  EXPECT_EQ(model->retrievers[0].get(), model->retrievers[1].get());
}

class StateDict : public TempDirTest {};

struct WithRopeImpl : torch::nn::Module {
  WithRopeImpl() {
    proj = register_module("proj", torch::nn::Linear(2, 2));
    scale = register_buffer("scale", torch::ones({2}));
    freqs_cos = register_buffer("freqs_cos", torch::ones({4}));
  }
  torch::nn::Linear proj{nullptr};
  torch::Tensor scale, freqs_cos;
};
TORCH_MODULE(WithRope);

struct Outer : torch::nn::Module {
  Outer() { inner = register_module("inner", WithRope()); }
  WithRope inner{nullptr};
};

}  // namespace

TEST_F(StateDict, NamesAndOrderMatchPythonsStateDict) {
  const auto expected = read_json(kFixtures / "tied_model.json")["state_dict_keys"];
  TiedModel model;
  EXPECT_EQ(nlohmann::json(names_of(named_state(*model))), expected);
}

TEST_F(StateDict, BuffersInTheSkipListAreNotState) {
  WithRope module;
  const SkipList skip = {"freqs_cos", "no_such_buffer"};  // a name the module lacks is ignored
  EXPECT_EQ(names_of(named_state(*module, skip)),
            (std::vector<std::string>{"scale", "proj.weight", "proj.bias"}));
  EXPECT_EQ(names_of(named_state(*module)),
            (std::vector<std::string>{"scale", "freqs_cos", "proj.weight", "proj.bias"}));
  auto state = cloned_state(*module);
  state.erase("freqs_cos");
  state["scale"].fill_(3);
  EXPECT_TRUE(load_state_dict(*module, state, /*strict=*/true, skip).missing_keys.empty());
  EXPECT_TRUE(torch::equal(module->scale, torch::full({2}, 3.0f)));
  state["freqs_cos"] = torch::zeros({4});
  EXPECT_EQ(load_state_dict(*module, state, /*strict=*/false, skip).unexpected_keys,
            std::vector<std::string>{"freqs_cos"});
  EXPECT_TRUE(torch::equal(module->freqs_cos, torch::ones({4})));
}

TEST_F(StateDict, TheSkipListHoldsStateDictNamesAndReachesTheFile) {
  auto outer = std::make_shared<Outer>();
  // "freqs_cos" is the inner module's own name for its buffer, not a state_dict name of outer.
  EXPECT_EQ(names_of(named_state(*outer, {"freqs_cos"})).size(), 4u);
  const SkipList skip = {"inner.freqs_cos"};
  EXPECT_EQ(names_of(named_state(*outer, skip)),
            (std::vector<std::string>{"inner.scale", "inner.proj.weight", "inner.proj.bias"}));

  const auto path = (dir / "skipped.safetensors").string();
  save_module(*outer, path, /*metadata=*/{}, skip);
  EXPECT_FALSE(SafetensorsFile::open(path).contains("inner.freqs_cos"));
  EXPECT_TRUE(load_module(*outer, path, /*strict=*/true, skip).missing_keys.empty());
  EXPECT_TRUE(contains(error_of([&] { load_module(*outer, path); }), "inner.freqs_cos"));
}

TEST_F(StateDict, LoadCopiesInPlaceKeepingDtypeDeviceAndSharing) {
  TiedModel source, target;
  target->to(torch::kFloat64);
  const auto* embedding = target->token_embedder->weight.unsafeGetTensorImpl();
  auto state = cloned_state(*source);
  state.erase("final_out.weight");  // still loaded, through the tie
  auto result = load_state_dict(*target, state, /*strict=*/false);
  EXPECT_EQ(result.missing_keys, std::vector<std::string>{"final_out.weight"});
  EXPECT_TRUE(result.unexpected_keys.empty());

  EXPECT_EQ(target->token_embedder->weight.unsafeGetTensorImpl(), embedding);
  EXPECT_EQ(target->token_embedder->weight.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(target->token_embedder->weight.requires_grad());
  expect_tied(target);
  const auto want = named_state(*source);
  for (const auto& [name, t] : named_state(*target)) {
    // (C++17 lambdas cannot capture a structured binding; clang refuses it.)
    const std::string& key = name;
    auto it = std::find_if(want.begin(), want.end(), [&](auto& e) { return e.first == key; });
    ASSERT_NE(it, want.end()) << name;
    EXPECT_TRUE(torch::equal(t, it->second.to(t.scalar_type()))) << name;
  }
}

TEST_F(StateDict, StrictErrorsNameEveryOffendingTensorAndChangeNothing) {
  TiedModel model;
  const auto before = cloned_state(*model);
  auto state = cloned_state(*model);
  for (auto& [name, t] : state) t.add_(1);
  state.erase("norm.bias");
  state.erase("norm.running_var");
  state["extra.weight"] = torch::zeros({1});
  state["norm.weight"] = torch::zeros({5});
  state["retrievers.0.proj.bias"] = torch::zeros({3});
  state["retrievers.1.proj.bias"] = torch::zeros({3});
  const auto message = error_of([&] { load_state_dict(*model, state); });
  EXPECT_TRUE(contains(message, "Error(s) in loading state_dict for io_test::TiedModelImpl"))
      << message;
  EXPECT_TRUE(
      contains(message, R"(Missing key(s) in state_dict: "norm.bias", "norm.running_var".)"))
      << message;
  EXPECT_TRUE(contains(message, R"(Unexpected key(s) in state_dict: "extra.weight".)")) << message;
  EXPECT_TRUE(contains(message,
                       "size mismatch for norm.weight: copying a param with shape [5] from "
                       "checkpoint, the shape in current model is [4]."))
      << message;
  EXPECT_TRUE(contains(message, "size mismatch for retrievers.0.proj.bias")) << message;
  EXPECT_TRUE(contains(message, "size mismatch for retrievers.1.proj.bias")) << message;
  for (const auto& [name, t] : named_state(*model))
    EXPECT_TRUE(torch::equal(t, before.at(name))) << name << " changed by a failed load";

  // Without strict, missing and unexpected keys are returned; a size mismatch is still an error.
  state.erase("norm.weight");
  state.erase("retrievers.0.proj.bias");
  state.erase("retrievers.1.proj.bias");
  const auto result = load_state_dict(*model, state, /*strict=*/false);
  EXPECT_EQ(result.missing_keys,
            (std::vector<std::string>{"retrievers.0.proj.bias", "retrievers.1.proj.bias",
                                      "norm.weight", "norm.bias", "norm.running_var"}));
  EXPECT_EQ(result.unexpected_keys, std::vector<std::string>{"extra.weight"});
  EXPECT_TRUE(torch::equal(model->norm->running_mean, before.at("norm.running_mean") + 1));
}

TEST_F(StateDict, DifferentValuesForOneSharedTensorAreAnError) {
  TiedModel model;
  auto state = cloned_state(*model);
  state["final_out.weight"] = state["final_out.weight"] + 1;
  const auto message = error_of([&] { load_state_dict(*model, state); });
  EXPECT_TRUE(contains(message, R"("final_out.weight" and "token_embedder.weight" are one shared)"))
      << message;
}

TEST_F(StateDict, LoadModuleReadsPythonsSaveModelFileAndKeepsSharing) {
  const auto expected = read_json(kFixtures / "tied_model.json");
  TiedModel model;
  const auto result = load_module(*model, (kFixtures / "tied_model.safetensors").string());
  EXPECT_TRUE(result.missing_keys.empty());
  EXPECT_TRUE(result.unexpected_keys.empty());
  expect_tied(model);
  const auto state = named_state(*model);
  ASSERT_EQ(state.size(), expected["tensors"].size());
  for (const auto& [name, t] : state) {
    const auto& want = expected["tensors"][name];
    EXPECT_EQ(safetensors_dtype(t.scalar_type()), want["dtype"]) << name;
    EXPECT_EQ(bytes_of(t), hex_to_bytes(want["hex"])) << name;
  }
}

TEST_F(StateDict, SaveModuleWritesWhatPythonsSaveModelWrites) {
  const auto python_file = (kFixtures / "tied_model.safetensors").string();
  TiedModel model;
  load_module(*model, python_file);
  const auto ours = (dir / "tied.safetensors").string();
  save_module(*model, ours, {{"format", "pt"}});
  const auto theirs = SafetensorsFile::open(python_file);
  const auto mine = SafetensorsFile::open(ours);
  EXPECT_EQ(mine.metadata(), theirs.metadata());
  EXPECT_EQ(mine.keys(), theirs.keys());
  for (const auto& name : theirs.keys()) {
    EXPECT_EQ(mine.info(name).data_begin, theirs.info(name).data_begin) << name;
    EXPECT_EQ(bytes_of(mine.get(name)), bytes_of(theirs.get(name))) << name;
  }
  TiedModel reloaded;
  load_module(*reloaded, ours);
  expect_tied(reloaded);
  for (const auto& [name, t] : named_state(*reloaded))
    EXPECT_TRUE(torch::equal(t, theirs.get(name))) << name;
}

TEST_F(StateDict, LoadModuleTakesATiedNameFromItsTwinWhenTheFileHasNoAlias) {
  TiedModel source;
  auto state = cloned_state(*source);
  state.erase("token_embedder.weight");
  state.erase("retrievers.1.proj.weight");
  state.erase("retrievers.1.proj.bias");
  const auto path = (dir / "no_alias.safetensors").string();
  save_safetensors(path, state);
  ASSERT_TRUE(SafetensorsFile::open(path).metadata().empty());
  TiedModel model;
  load_module(*model, path);
  expect_tied(model);
  EXPECT_TRUE(torch::equal(model->token_embedder->weight, source->token_embedder->weight));
}

TEST_F(StateDict, LoadModuleRejectsAnAliasToAMissingTensor) {
  TiedModel source;
  auto state = cloned_state(*source);
  state.erase("token_embedder.weight");
  const auto path = (dir / "dangling.safetensors").string();
  save_safetensors(path, state, {{"token_embedder.weight", "embedding.weight"}});
  TiedModel model;
  const auto message = error_of([&] { load_module(*model, path); });
  EXPECT_TRUE(contains(message, "'token_embedder.weight' is an alias")) << message;
  EXPECT_TRUE(contains(message, "'embedding.weight', which the file does not hold")) << message;
}

TEST_F(StateDict, LoadModuleErrorsNameTheFile) {
  const auto path = (dir / "partial.safetensors").string();
  save_safetensors(path, {{"norm.weight", torch::ones({4})}, {"stray", torch::ones({1})}});
  TiedModel model;
  const auto message = error_of([&] { load_module(*model, path); });
  EXPECT_TRUE(contains(message, "for io_test::TiedModelImpl from '" + path + "'")) << message;
  EXPECT_TRUE(contains(message, R"("norm.bias")")) << message;
  EXPECT_TRUE(contains(message, R"(Unexpected key(s) in state_dict: "stray".)")) << message;
  const auto result = load_module(*model, path, /*strict=*/false);
  EXPECT_EQ(result.unexpected_keys, std::vector<std::string>{"stray"});
  EXPECT_EQ(result.missing_keys.size(), 10u);
  EXPECT_TRUE(torch::equal(model->norm->weight, torch::ones({4})));
}
