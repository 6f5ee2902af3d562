// Parity with the reference package: every fixture in tests/fixtures/parity was produced by
// tests/fixtures/make_fixtures.py running dual-attention 0.0.7. For each one we build the C++
// module from the same keywords, check its parameter names, shapes and count, load the reference's
// state, run the forward on the same inputs and compare every output; where the fixture has
// gradients, backpropagate the same cotangent and compare the input and parameter gradients.
//
// Tolerance: |ours - reference| <= tol * max(1, max |reference|) elementwise, tol = 1e-5 in float32
// and 1e-10 in float64.
//
// ParityFastPath repeats the check for every fixture whose module contains a RelationalAttention,
// with each of them forced onto the blockwise path (need_weights=false, so only the main output and
// the gradients are compared): the memory-linear path against the reference directly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dual_attention/attention.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/io/safetensors.h"
#include "dual_attention/io/state_dict.h"
#include "dual_attention/positional_encoding.h"
#include "dual_attention/relational_attention.h"
#include "dual_attention/symbol_retrieval.h"
#include "dual_attention/transformer_blocks.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace dual_attention;
using torch::Tensor;

namespace {

const fs::path kParityDir = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "parity";

struct Fixture {
  std::string name;
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
  Kwargs kwargs, forward;

  Kwargs meta_json(const std::string& key) const { return Kwargs::parse(metadata.at(key)); }
  // Tensor input by forward-parameter name, or undefined when the reference passed None.
  Tensor input(const std::string& name) const {
    auto it = tensors.find("input." + name);
    return it == tensors.end() ? Tensor() : it->second;
  }
  template <class T>
  T arg(const std::string& name, T fallback) const {
    const auto& args = forward.at("args");
    return args.contains(name) ? args.at(name).get<T>() : fallback;
  }
};

Fixture load_fixture(const fs::path& path) {
  auto file = io::load_safetensors(path.string());
  Fixture f;
  f.name = path.stem().string();
  f.tensors = std::move(file.tensors);
  f.metadata = std::move(file.metadata);
  f.kwargs = f.meta_json("kwargs");
  f.forward = f.meta_json("forward");
  return f;
}

// The tensors a forward receives, by the reference's parameter names.
struct Inputs {
  std::map<std::string, Tensor> tensors;
};

// A module under test: the holder (for state and train/eval) and a call that runs its forward on
// the fixture's inputs, returning outputs flattened as the fixture names them ("0", "1", "2.0").
struct Subject {
  std::shared_ptr<torch::nn::Module> module;
  std::function<std::map<std::string, Tensor>(const Fixture&, Inputs&)> run;
};

using Builder = std::function<Subject(const Kwargs&)>;

// Set by ParityFastPath: the RelationalAttention and DualAttention builders then call forward with
// need_weights=false and return only the main output.
bool g_without_weights = false;

template <class Holder>
Subject make_subject(
    Holder holder,
    std::function<std::map<std::string, Tensor>(Holder&, const Fixture&, Inputs&)> run) {
  Subject s;
  s.module = holder.ptr();
  s.run = [holder, run](const Fixture& f, Inputs& in) mutable { return run(holder, f, in); };
  return s;
}

Tensor in(Inputs& inputs, const std::string& name) {
  auto it = inputs.tensors.find(name);
  return it == inputs.tensors.end() ? Tensor() : it->second;
}

// The builder of a module whose forward takes `x` alone and returns one tensor.
template <class Holder>
Subject x_to_one_output(const Kwargs& kwargs) {
  using Options = std::decay_t<decltype(std::declval<typename Holder::Impl>().options)>;
  return make_subject<Holder>(Holder(Options::from_kwargs(kwargs)),
                              [](Holder& m, const Fixture&, Inputs& x) {
                                return std::map<std::string, Tensor>{{"0", m->forward(in(x, "x"))}};
                              });
}

const std::map<std::string, Builder>& builders() {
  using Out = std::map<std::string, Tensor>;
  static const std::map<std::string, Builder> table = {
      {"Attention",
       [](const Kwargs& kw) {
         auto o = AttentionOptions::from_kwargs(kw);
         return make_subject<Attention>(Attention(o), [](Attention& m, const Fixture& f,
                                                         Inputs& x) {
           auto [out, scores] = m->forward(
               in(x, "query"), in(x, "key"), in(x, "value"), in(x, "freqs_cos"), in(x, "freqs_sin"),
               in(x, "attn_mask"), f.arg("is_causal", false), f.arg("need_weights", false));
           Out o{{"0", out}};
           if (scores.defined()) o["1"] = scores;
           return o;
         });
       }},
      {"RelationalAttention",
       [](const Kwargs& kw) {
         auto o = RelationalAttentionOptions::from_kwargs(kw);
         return make_subject<RelationalAttention>(
             RelationalAttention(o), [](RelationalAttention& m, const Fixture& f, Inputs& x) {
               auto [out, scores, relations] =
                   m->forward(in(x, "x"), in(x, "symbols"), in(x, "freqs_cos"), in(x, "freqs_sin"),
                              in(x, "attn_mask"), f.arg("is_causal", false), !g_without_weights);
               if (g_without_weights) return Out{{"0", out}};
               return Out{{"0", out}, {"1", scores}, {"2", relations}};
             });
       }},
      {"RelationalCrossAttention",
       [](const Kwargs& kw) {
         auto o = RelationalCrossAttentionOptions::from_kwargs(kw);
         return make_subject<RelationalCrossAttention>(
             RelationalCrossAttention(o),
             [](RelationalCrossAttention& m, const Fixture& f, Inputs& x) {
               auto [out, scores] =
                   m->forward(in(x, "x"), in(x, "symbols"), in(x, "freqs_cos"), in(x, "freqs_sin"),
                              in(x, "attn_mask"), f.arg("is_causal", false));
               return Out{{"0", out}, {"1", scores}};
             });
       }},
      {"DisentangledRelationalCrossAttention",
       [](const Kwargs& kw) {
         auto o = DisentangledRelationalCrossAttentionOptions::from_kwargs(kw);
         return make_subject<DisentangledRelationalCrossAttention>(
             DisentangledRelationalCrossAttention(o),
             [](DisentangledRelationalCrossAttention& m, const Fixture& f, Inputs& x) {
               auto [out, attn, rel] =
                   m->forward(in(x, "x"), in(x, "symbols"), in(x, "freqs_cos"), in(x, "freqs_sin"),
                              in(x, "attn_mask"), f.arg("is_causal", false));
               return Out{{"0", out}, {"1", attn}, {"2", rel}};
             });
       }},
      {"DualAttention",
       [](const Kwargs& kw) {
         auto o = DualAttentionOptions::from_kwargs(kw);
         return make_subject<DualAttention>(
             DualAttention(o), [](DualAttention& m, const Fixture& f, Inputs& x) {
               auto call = [&](bool need_weights) {
                 return m->forward(in(x, "x"), in(x, "symbols"), in(x, "attn_mask"),
                                   f.arg("is_causal", false), in(x, "freqs_cos"),
                                   in(x, "freqs_sin"), need_weights);
               };
               if (g_without_weights) return Out{{"0", std::get<0>(call(false))}};
               const bool need_weights = f.arg("need_weights", false);
               auto [out, sa_scores, ra_scores] = call(need_weights);
               Out o{{"0", out}};
               if (sa_scores.defined()) o["1"] = sa_scores;
               // The reference returns the relational outputs even without need_weights; ours does
               // only when asked (see dual_attention.h), so ask for them in a second call.
               if (!need_weights && m->use_rel_attn) ra_scores = std::get<2>(call(true));
               for (size_t i = 0; i < ra_scores.size(); ++i)
                 o["2." + std::to_string(i)] = ra_scores[i];
               return o;
             });
       }},
      {"SymbolicAttention", x_to_one_output<SymbolicAttention>},
      {"PositionalSymbolRetriever", x_to_one_output<PositionalSymbolRetriever>},
      {"PositionRelativeSymbolRetriever", x_to_one_output<PositionRelativeSymbolRetriever>},
      {"RelationalSymbolicAttention", x_to_one_output<RelationalSymbolicAttention>},
      {"SinusoidalPositionalEncoding", x_to_one_output<SinusoidalPositionalEncoding>},
      {"LearnedPositionalEmbeddings", x_to_one_output<LearnedPositionalEmbeddings>},
      {"RelativePositionalEncoding",
       [](const Kwargs& kw) {
         auto o = RelativePositionalEncodingOptions::from_kwargs(kw);
         return make_subject<RelativePositionalEncoding>(
             RelativePositionalEncoding(o),
             [](RelativePositionalEncoding& m, const Fixture& f, Inputs&) {
               const auto& args = f.forward.at("args");
               std::optional<int64_t> length_k;
               if (args.contains("length_k") && !args.at("length_k").is_null())
                 length_k = args.at("length_k").get<int64_t>();
               return Out{{"0", m->forward(args.at("length_q").get<int64_t>(), length_k)}};
             });
       }},
      {"FeedForwardBlock", x_to_one_output<FeedForwardBlock>},
      {"RMSNorm", x_to_one_output<RMSNorm>},
      {"EncoderBlock",
       [](const Kwargs& kw) {
         auto o = EncoderBlockOptions::from_kwargs(kw);
         return make_subject<EncoderBlock>(
             EncoderBlock(o), [](EncoderBlock& m, const Fixture& f, Inputs& x) {
               return Out{{"0", m->forward(in(x, "x"), in(x, "freqs_cos"), in(x, "freqs_sin"),
                                           f.arg("need_weights", false))}};
             });
       }},
      {"DecoderBlock",
       [](const Kwargs& kw) {
         auto o = DecoderBlockOptions::from_kwargs(kw);
         return make_subject<DecoderBlock>(
             DecoderBlock(o), [](DecoderBlock& m, const Fixture&, Inputs& x) {
               return Out{{"0", m->forward(in(x, "x"), in(x, "context"))}};
             });
       }},
      {"DualAttnEncoderBlock",
       [](const Kwargs& kw) {
         auto o = DualAttnEncoderBlockOptions::from_kwargs(kw);
         return make_subject<DualAttnEncoderBlock>(
             DualAttnEncoderBlock(o), [](DualAttnEncoderBlock& m, const Fixture&, Inputs& x) {
               return Out{{"0", m->forward(in(x, "x"), in(x, "symbols"), in(x, "freqs_cos"),
                                           in(x, "freqs_sin"))}};
             });
       }},
      {"DualAttnDecoderBlock",
       [](const Kwargs& kw) {
         auto o = DualAttnDecoderBlockOptions::from_kwargs(kw);
         return make_subject<DualAttnDecoderBlock>(
             DualAttnDecoderBlock(o), [](DualAttnDecoderBlock& m, const Fixture&, Inputs& x) {
               return Out{{"0", m->forward(in(x, "x"), in(x, "context"), in(x, "symbols"))}};
             });
       }},
  };
  return table;
}

// Max elementwise error relative to the reference's largest magnitude (at least 1).
void expect_close(const Tensor& ours, const Tensor& ref, double tol, const std::string& what) {
  ASSERT_TRUE(ours.defined()) << what << ": ours is missing";
  ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
  auto a = ours.detach().to(torch::kDouble), b = ref.detach().to(torch::kDouble);
  // Masked attention rows give -inf/NaN identically in both; compare where the reference is finite.
  auto finite = torch::isfinite(b);
  ASSERT_TRUE(torch::equal(finite, torch::isfinite(a))) << what << ": non-finite entries differ";
  a = a.masked_fill(finite.logical_not(), 0), b = b.masked_fill(finite.logical_not(), 0);
  const double scale = std::max(1.0, b.abs().max().item<double>());
  const double err = (a - b).abs().max().item<double>();
  EXPECT_LE(err, tol * scale) << what << ": max |ours - ref| = " << err << ", scale " << scale;
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!fs::is_directory(kParityDir)) return names;
  for (const auto& entry : fs::directory_iterator(kParityDir)) {
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The fixtures whose module contains a RelationalAttention (ParityFastPath's cases).
std::vector<std::string> relational_fixture_names() {
  std::vector<std::string> names;
  for (const auto& name : fixture_names()) {
    const auto f = load_fixture(kParityDir / (name + ".safetensors"));
    const auto builder = builders().find(f.metadata.at("module"));
    if (builder == builders().end()) continue;  // Parity reports it
    if (!relational_attention_layers(*builder->second(f.kwargs).module).empty())
      names.push_back(name);
  }
  return names;
}

// Builds the fixture's module with the reference's state and compares its outputs and gradients
// with the reference's. fast_path: every RelationalAttention inside runs blockwise without weights.
void check_against_reference(const std::string& fixture_name, bool fast_path) {
  const auto f = load_fixture(kParityDir / (fixture_name + ".safetensors"));
  const auto module_name = f.metadata.at("module");
  const auto dtype = f.metadata.at("dtype") == "float64" ? torch::kDouble : torch::kFloat;
  const double tol = dtype == torch::kDouble ? 1e-10 : 1e-5;
  ASSERT_TRUE(builders().count(module_name)) << "no builder for " << module_name;

  torch::manual_seed(0);
  Subject subject = builders().at(module_name)(f.kwargs);
  auto& module = *subject.module;

  // Parameter names, shapes and count equal the reference's.
  const auto shapes = f.meta_json("param_shapes");
  std::map<std::string, std::vector<int64_t>> ours_shapes;
  int64_t ours_count = 0;
  std::set<const void*> seen;
  for (const auto& p : module.named_parameters()) {
    ours_shapes[p.key()] = p.value().sizes().vec();
    if (seen.insert(p.value().unsafeGetTensorImpl()).second) ours_count += p.value().numel();
  }
  for (const auto& [name, shape] : shapes.items()) {
    ASSERT_TRUE(ours_shapes.count(name)) << "missing parameter " << name;
    EXPECT_EQ(ours_shapes[name], shape.get<std::vector<int64_t>>()) << name;
  }
  EXPECT_EQ(ours_count, std::stoll(f.metadata.at("num_parameters")));
  std::vector<std::string> state_keys;
  for (const auto& [name, tensor] : io::named_state(module)) state_keys.push_back(name);
  EXPECT_EQ(state_keys, f.meta_json("state_dict_keys").get<std::vector<std::string>>());

  // Load the reference's state and match its dtype and mode.
  std::map<std::string, Tensor> state;
  for (const auto& [key, t] : f.tensors)
    if (key.rfind("param.", 0) == 0) state[key.substr(6)] = t;
  module.to(dtype);
  io::load_state_dict(module, state, /*strict=*/true);
  module.eval();

  const bool has_grads = f.meta_json("has_grads").get<bool>();
  const auto grad_inputs = f.meta_json("grad_inputs").get<std::vector<std::string>>();
  Inputs inputs;
  for (const auto& name : f.forward.at("tensor_inputs").get<std::vector<std::string>>()) {
    inputs.tensors[name] = f.input(name).clone();
  }
  for (const auto& name : grad_inputs) inputs.tensors[name].requires_grad_(true);
  if (f.meta_json("self_attention").get<bool>()) {
    inputs.tensors["key"] = inputs.tensors["value"] = inputs.tensors["query"];
  }

  if (fast_path) {
    const auto relational = relational_attention_layers(module);
    ASSERT_FALSE(relational.empty()) << f.name << " has no RelationalAttention";
    for (auto* ra : relational)
      ra->implementation = RelationalAttentionImpl::Implementation::Blockwise;
  }
  g_without_weights = fast_path;
  auto outputs = subject.run(f, inputs);
  g_without_weights = false;
  if (fast_path) {
    for (auto* ra : relational_attention_layers(module)) {
      EXPECT_EQ(ra->last_implementation, RelationalAttentionImpl::Implementation::Blockwise);
    }
  }
  int compared = 0;
  for (const auto& [key, ref] : f.tensors) {
    if (key.rfind("output.", 0) != 0) continue;
    const auto index = key.substr(7);
    if (fast_path && index != "0") continue;  // the weights are not returned
    ASSERT_TRUE(outputs.count(index)) << "output " << index << " missing";
    expect_close(outputs.at(index), ref, tol, f.name + " output " + index);
    ++compared;
  }
  EXPECT_GT(compared, 0);

  if (!has_grads) return;
  torch::autograd::backward({outputs.at("0")}, {f.tensors.at("grad_output.0")});
  for (const auto& name : grad_inputs) {
    expect_close(inputs.tensors[name].grad(), f.tensors.at("grad.input." + name), tol,
                 f.name + " grad of input " + name);
  }
  // The reference names each parameter once (named_parameters deduplicates shared tensors).
  const auto no_grad = f.meta_json("no_grad_params").get<std::vector<std::string>>();
  const auto params = module.named_parameters();
  for (const auto& [key, ref] : f.tensors) {
    if (key.rfind("grad.param.", 0) != 0) continue;
    const auto name = key.substr(11);
    ASSERT_TRUE(params.contains(name)) << "no parameter " << name;
    const auto grad = params[name].grad();
    if (std::find(no_grad.begin(), no_grad.end(), name) != no_grad.end()) {
      EXPECT_TRUE(!grad.defined() || grad.abs().max().item<double>() == 0)
          << name << " should get no gradient";
      continue;
    }
    expect_close(grad, ref, tol, f.name + " grad of " + name);
  }
}

class Parity : public ::testing::TestWithParam<std::string> {};
TEST_P(Parity, MatchesReference) { check_against_reference(GetParam(), /*fast_path=*/false); }
INSTANTIATE_TEST_SUITE_P(Reference, Parity, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

class ParityFastPath : public ::testing::TestWithParam<std::string> {};
TEST_P(ParityFastPath, BlockwiseMatchesReference) {
  check_against_reference(GetParam(), /*fast_path=*/true);
}
INSTANTIATE_TEST_SUITE_P(Reference, ParityFastPath, ::testing::ValuesIn(relational_fixture_names()),
                         [](const auto& info) { return info.param; });

// The suite is only as good as its fixtures: they must all be there and every module covered.
TEST(ParityFixtures, EveryModuleIsCovered) {
  const auto names = fixture_names();
  ASSERT_GE(names.size(), 45u) << "fixtures missing from " << kParityDir;
  std::set<std::string> modules;
  int f64 = 0, grads = 0;
  for (const auto& n : names) {
    auto f = load_fixture(kParityDir / (n + ".safetensors"));
    modules.insert(f.metadata.at("module"));
    f64 += f.metadata.at("dtype") == "float64";
    grads += f.meta_json("has_grads").get<bool>();
  }
  for (const auto& [name, builder] : builders()) EXPECT_TRUE(modules.count(name)) << name;
  EXPECT_GE(f64, 8);
  EXPECT_GE(grads, 15);
  EXPECT_GE(relational_fixture_names().size(), 30u);
}

}  // namespace
