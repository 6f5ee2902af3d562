// The fast (need_weights=false) paths of RelationalAttention against its materialising path, which
// the parity fixtures tie to the reference: outputs and the gradients of x, symbols and every
// parameter, for every option. Then the operators of ops.h through the dispatcher.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "dual_attention/attention_utils.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/ops.h"
#include "dual_attention/relational_attention.h"
#include "dual_attention/symbol_retrieval.h"
#include "test_support.h"

using namespace dual_attention;
using test_support::expect_error;
using Implementation = RelationalAttentionImpl::Implementation;

namespace {

// Largest |expected - actual| relative to the largest |expected|.
double relative_error(const torch::Tensor& expected, const torch::Tensor& actual) {
  const double scale = expected.abs().max().item<double>();
  const double err = (expected - actual).abs().max().item<double>();
  return err / std::max(scale, 1e-30);
}

struct Inputs {
  torch::Tensor x, symbols, freqs_cos, freqs_sin, mask;
  bool causal = false;
};

struct Outcome {
  torch::Tensor out;
  std::map<std::string, torch::Tensor> grads;  // "x", "symbols" and every parameter
};

// One forward with need_weights=false through `impl`, and the backward of sum(out * weight).
Outcome run(RelationalAttention& module, Implementation impl, const Inputs& in,
            const torch::Tensor& weight) {
  module->implementation = impl;
  module->zero_grad();
  auto x = in.x.detach().clone().requires_grad_(true);
  auto symbols = in.symbols.detach().clone().requires_grad_(true);
  auto [out, scores, relations] = module->forward(x, symbols, in.freqs_cos, in.freqs_sin, in.mask,
                                                  in.causal, /*need_weights=*/false);
  EXPECT_FALSE(scores.defined());
  EXPECT_FALSE(relations.defined());
  (out * weight).sum().backward();
  Outcome o{out.detach(), {{"x", x.grad()}, {"symbols", symbols.grad()}}};
  for (const auto& p : module->named_parameters()) {
    o.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
  }
  return o;
}

struct Case {
  std::string name;
  RelationalAttentionOptions options;
  bool causal = true, rope = false, mask = false, band_mask = false;
  // 5 blocks of at most 8 rows, the last one short: enough blocks for the CPU to share them among
  // 2 threads.
  int64_t batch = 2, len = 37, block = 8;
};

// d_model 64, 4 relational of 8 heads: head_dim 8, 4 relations of width 8 unless a case says else.
RelationalAttentionOptions base() { return RelationalAttentionOptions(64, 4).total_n_heads(8); }

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::string act : {"identity", "relu", "sigmoid", "tanh", "gelu", "silu", "softmax"}) {
    out.push_back({act + "Causal", base().rel_activation(act)});
    out.push_back({act + "Unmasked", base().rel_activation(act), /*causal=*/false});
    out.push_back({act + "ExplicitMask", base().rel_activation(act), false, false, true});
  }
  for (const std::string act : {"identity", "tanh"}) {
    out.push_back({act + "GroupedQuery", base().rel_activation(act).n_kv_heads(2)});
    out.push_back({act + "MultiQuery", base().rel_activation(act).n_kv_heads(1)});
    out.push_back({act + "RoPE", base().rel_activation(act).n_kv_heads(2), true, true});
    out.push_back({act + "Symmetric", base().rel_activation(act).symmetric_rels(true)});
    out.push_back({act + "MoreRelationsThanHeads", base().rel_activation(act).n_relations(8)});
    out.push_back({act + "RelProjDim", base().rel_activation(act).n_relations(2).rel_proj_dim(16)});
    out.push_back({act + "KeyDim", base().rel_activation(act).key_dim(12), true, true});
    out.push_back(
        {act + "Biases", base().rel_activation(act).add_bias_kv(true).add_bias_out(true)});
    out.push_back({act + "BandMask", base().rel_activation(act), false, false, true, true});
    out.push_back({act + "RelativeSymbols",
                   base().rel_activation(act).use_relative_positional_symbols(true)});
    out.push_back({act + "RelativeSymbolsUnmasked",
                   base().rel_activation(act).use_relative_positional_symbols(true), false});
    out.push_back({act + "RelativeSymbolsBiasGrouped", base()
                                                           .rel_activation(act)
                                                           .use_relative_positional_symbols(true)
                                                           .add_bias_kv(true)
                                                           .n_kv_heads(2)});
    out.push_back(
        {act + "BandMaskRelativeBias",
         base().rel_activation(act).use_relative_positional_symbols(true).add_bias_kv(true), false,
         false, true, true});
    out.push_back(
        {act + "OneBlock", base().rel_activation(act), true, false, false, false, 3, 37, 128});
    out.push_back(
        {act + "BlocksOfOneRow", base().rel_activation(act), true, false, false, false, 1, 9, 1});
    out.push_back({act + "SingleHeadAllOptions",
                   RelationalAttentionOptions(16, 1)
                       .rel_activation(act)
                       .n_relations(2)
                       .key_dim(6)
                       .symmetric_rels(true)
                       .add_bias_kv(true),
                   true, true, false, false, 2, 20, 7});
  }
  return out;
}

Inputs make_inputs(const Case& c, const RelationalAttentionImpl& module, torch::Dtype dtype) {
  const int64_t d = c.options.d_model(), n = c.len;
  Inputs in;
  auto opts = torch::TensorOptions().dtype(dtype);
  in.x = torch::randn({c.batch, n, d}, opts);
  in.symbols = c.options.use_relative_positional_symbols() ? torch::randn({n, n, d}, opts)
                                                           : torch::randn({c.batch, n, d}, opts);
  if (c.rope) std::tie(in.freqs_cos, in.freqs_sin) = precompute_freqs_cis(module.key_dim, n);
  if (c.mask) {
    auto i = torch::arange(n).unsqueeze(1), j = torch::arange(n).unsqueeze(0);
    // A band (each row sees the 5 keys up to itself) leaves blocks whose first columns are all
    // hidden; a random mask plus the diagonal keeps every row attending to something.
    in.mask = c.band_mask ? (j <= i).logical_and(j > i - 5)
                          : (torch::rand({n, n}) < 0.4).logical_or(i == j);
  } else {
    in.causal = c.causal;
  }
  return in;
}

void expect_paths_agree(const Case& c, torch::Dtype dtype, double tolerance, Implementation fast) {
  torch::manual_seed(0);
  RelationalAttention module(c.options);
  module->to(dtype);
  module->block_size = c.block;
  auto in = make_inputs(c, *module, dtype);
  auto out_shape = std::vector<int64_t>{c.batch, c.len, module->head_dim * c.options.n_heads()};
  auto weight = torch::randn(out_shape, torch::TensorOptions().dtype(dtype));

  auto expected = run(module, Implementation::Materialize, in, weight);
  auto actual = run(module, fast, in, weight);
  EXPECT_EQ(module->last_implementation, fast);
  EXPECT_LE(relative_error(expected.out, actual.out), tolerance) << "out";
  for (const auto& [name, grad] : expected.grads) {
    ASSERT_TRUE(grad.defined()) << name;
    ASSERT_TRUE(actual.grads[name].defined()) << name;
    if (name == "wk_attn.bias" && !c.rope) {
      // Without RoPE, adding a vector to every key shifts a query's scores by one constant: the
      // softmax ignores it and the gradient is zero up to rounding on both paths. Check it is that
      // small.
      const double scale = expected.grads["wk_attn.weight"].abs().max().item<double>();
      EXPECT_LE(actual.grads[name].abs().max().item<double>(), 10 * tolerance * scale) << name;
      continue;
    }
    EXPECT_LE(relative_error(grad, actual.grads[name]), tolerance) << "gradient of " << name;
  }
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class FastPath : public ::testing::TestWithParam<Case> {};

TEST_P(FastPath, BlockwiseEqualsMaterialisingInFloat32) {
  expect_paths_agree(GetParam(), torch::kFloat, 1e-5, Implementation::Blockwise);
}

TEST_P(FastPath, BlockwiseEqualsMaterialisingInFloat64) {
  expect_paths_agree(GetParam(), torch::kDouble, 1e-10, Implementation::Blockwise);
}

INSTANTIATE_TEST_SUITE_P(RelationalAttention, FastPath, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// The SDPA route (identity relations, per-position symbols) on the CPU.
TEST(RelationalAttentionFast, SdpaEqualsMaterialising) {
  for (const auto& c : cases()) {
    if (c.options.rel_activation() != "identity" || c.options.use_relative_positional_symbols())
      continue;
    SCOPED_TRACE(c.name);
    expect_paths_agree(c, torch::kFloat, 1e-5, Implementation::SDPA);
    expect_paths_agree(c, torch::kDouble, 1e-10, Implementation::SDPA);
  }
}

TEST(RelationalAttentionFast, SdpaRejectsWhatItCannotCompute) {
  RelationalAttention tanh(base().rel_activation("tanh"));
  tanh->implementation = Implementation::SDPA;
  auto x = torch::randn({1, 5, 64});
  try {
    tanh->forward(x, x, {}, {}, {}, true, false);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rel_activation 'identity'"), std::string::npos)
        << e.what();
  }
  RelationalAttention relative(base().use_relative_positional_symbols(true));
  relative->implementation = Implementation::SDPA;
  EXPECT_THROW(relative->forward(x, torch::randn({5, 5, 64}), {}, {}, {}, true, false), c10::Error);
}

TEST(RelationalAttentionFast, AutoTakesTheBlockwisePathOnTheCpuWithoutWeights) {
  RelationalAttention module(base().rel_activation("tanh"));
  const int64_t long_n = RelationalAttentionImpl::kMaterializeMaxLength + 1;
  auto x = torch::randn({1, long_n, 64});
  EXPECT_EQ(module->implementation, Implementation::Auto);
  module->forward(x, x, {}, {}, {}, true, /*need_weights=*/false);
  EXPECT_EQ(module->last_implementation, Implementation::Blockwise);
  // Short sequences materialise (faster there), unless the batch makes their [b, h, n, n] tensors
  // larger than kMaterializeMaxElements (17 * 4 * 256 * 256 > 2^22).
  auto short_x = torch::randn({2, RelationalAttentionImpl::kMaterializeMaxLength, 64});
  module->forward(short_x, short_x, {}, {}, {}, true, false);
  EXPECT_EQ(module->last_implementation, Implementation::Materialize);
  auto big_batch = torch::randn({17, RelationalAttentionImpl::kMaterializeMaxLength, 64});
  module->forward(big_batch, big_batch, {}, {}, {}, true, false);
  EXPECT_EQ(module->last_implementation, Implementation::Blockwise);
  x = torch::randn({1, 6, 64});
  module->forward(x, x, {}, {}, {}, true, /*need_weights=*/true);
  EXPECT_EQ(module->last_implementation, Implementation::Materialize);
  // need_weights=true materialises whatever is forced, since it returns the n x n tensors.
  module->implementation = Implementation::Blockwise;
  auto [out, scores, relations] = module->forward(x, x, {}, {}, {}, true, true);
  EXPECT_EQ(module->last_implementation, Implementation::Materialize);
  EXPECT_EQ(scores.sizes(), (std::vector<int64_t>{1, 4, 6, 6}));
}

TEST(DualAttention, WithoutWeightsUsesTheFastPath) {
  torch::manual_seed(1);
  DualAttention da(DualAttentionOptions(64, 4, 4, 0.0)
                       .ra_kwargs({{"rel_activation", "tanh"}, {"n_kv_heads", 2}})
                       .sa_kwargs({{"n_kv_heads", 2}}));
  const int64_t n = RelationalAttentionImpl::kMaterializeMaxLength + 5;  // Auto: blockwise
  auto x = torch::randn({2, n, 64}), symbols = torch::randn({2, n, 64});
  auto [fast, sa_none, ra_none] = da->forward(x, symbols, {}, true, {}, {}, /*need_weights=*/false);
  EXPECT_EQ(da->relational_attention->last_implementation, Implementation::Blockwise);
  EXPECT_TRUE(ra_none.empty());
  auto [slow, sa_scores, ra_scores] = da->forward(x, symbols, {}, true, {}, {}, true);
  EXPECT_EQ(da->relational_attention->last_implementation, Implementation::Materialize);
  EXPECT_LE(relative_error(slow, fast), 1e-5);
}

// Blocks run on several threads when there are enough of them; the gradients of the keys' side are
// then summed from per-thread parts. One thread and two must give the same results.
TEST(RelationalAttentionFast, ThreadsShareTheBlocksWithoutChangingResults) {
  const int previous = at::get_num_threads();
  for (const auto& c : cases()) {
    if (c.name != "tanhRelativeSymbolsBiasGrouped" && c.name != "softmaxExplicitMask" &&
        c.name != "identityBandMask")
      continue;
    SCOPED_TRACE(c.name);
    std::vector<Outcome> outcomes;
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      torch::manual_seed(0);
      RelationalAttention module(c.options);
      module->block_size = 4;  // 10 blocks
      auto in = make_inputs(c, *module, torch::kFloat);
      auto weight = torch::randn({c.batch, c.len, module->head_dim * c.options.n_heads()});
      outcomes.push_back(run(module, Implementation::Blockwise, in, weight));
      if (threads == 2) {
        auto expected = run(module, Implementation::Materialize, in, weight);
        EXPECT_LE(relative_error(expected.out, outcomes[1].out), 1e-5);
        EXPECT_LE(
            relative_error(expected.grads["wk_rel.weight"], outcomes[1].grads["wk_rel.weight"]),
            1e-5);
      }
    }
    at::set_num_threads(previous);
    EXPECT_LE(relative_error(outcomes[0].out, outcomes[1].out), 1e-6);
    for (const auto& [name, grad] : outcomes[0].grads) {
      if (name == "wk_attn.bias") continue;  // zero up to rounding
      EXPECT_LE(relative_error(grad, outcomes[1].grads[name]), 1e-5) << name;
    }
  }
  at::set_num_threads(previous);
}

// A row that may attend to nothing is NaN in the reference (softmax over -inf only): the same here.
TEST(RelationalAttentionFast, FullyMaskedRowsAreNaNAsInTheMaterialisingPath) {
  torch::manual_seed(2);
  RelationalAttention module(base().rel_activation("tanh"));
  module->block_size = 4;
  const int64_t n = 13;
  auto mask = torch::ones({n, n}, torch::kBool).tril();
  mask.index_put_({3}, false);        // one row
  mask.slice(0, 8, 12).fill_(false);  // a whole block
  auto x = torch::randn({2, n, 64}), symbols = torch::randn({2, n, 64});
  module->implementation = Implementation::Materialize;
  auto expected = std::get<0>(module->forward(x, symbols, {}, {}, mask, false, false));
  module->implementation = Implementation::Blockwise;
  auto actual = std::get<0>(module->forward(x, symbols, {}, {}, mask, false, false));
  EXPECT_TRUE(torch::equal(expected.isnan(), actual.isnan()));
  EXPECT_TRUE(expected.select(1, 3).isnan().all().item<bool>());
  EXPECT_TRUE(expected.slice(1, 8, 12).isnan().all().item<bool>());
  auto finite = expected.isnan().logical_not();
  EXPECT_LE(relative_error(expected.masked_select(finite), actual.masked_select(finite)), 1e-5);
}

TEST(RelationalAttentionFast, EmptySequenceGivesAnEmptyOutput) {
  RelationalAttention module(base());
  module->implementation = Implementation::Blockwise;
  auto x = torch::randn({2, 0, 64});
  auto out = std::get<0>(module->forward(x, x, {}, {}, {}, true, false));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 0, 32}));
}

TEST(RelationalAttentionFast, BadBlockSizeIsAnError) {
  RelationalAttention module(base());
  module->block_size = 0;
  auto x = torch::randn({1, 4, 64});
  EXPECT_THROW(module->forward(x, x, {}, {}, {}, true, false), c10::Error);
}

// ---- attention dropout ------------------------------------------------------------------------

// Dropout draws differ from the materialising path's, so these check the blockwise dropout on its
// own terms: a fixed seed gives a fixed function whose gradient is exact, the kept weights are
// rescaled (the mean over draws is the eval-mode output), and p = 1 drops everything.

TEST(RelationalAttentionFast, DropoutGradientsMatchFiniteDifferences) {
  for (const std::string act : {"identity", "tanh", "softmax"}) {
    for (bool relative : {false, true}) {
      SCOPED_TRACE(act + (relative ? " relative" : ""));
      torch::manual_seed(3);
      RelationalAttention module(base()
                                     .rel_activation(act)
                                     .dropout(0.3)
                                     .n_kv_heads(2)
                                     .add_bias_kv(true)
                                     .use_relative_positional_symbols(relative));
      module->to(torch::kDouble);
      module->train();
      module->block_size = 8;
      module->implementation = Implementation::Blockwise;
      const int64_t n = 19;
      auto opts = torch::TensorOptions().dtype(torch::kDouble);
      auto x = torch::randn({2, n, 64}, opts).requires_grad_(true);
      auto symbols = (relative ? torch::randn({n, n, 64}, opts) : torch::randn({2, n, 64}, opts))
                         .requires_grad_(true);
      auto weight = torch::randn({2, n, 32}, opts);
      auto loss = [&] {
        torch::manual_seed(11);  // the same dropout masks at every evaluation
        return (std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false)) * weight).sum();
      };
      std::vector<torch::Tensor> inputs = {x, symbols};
      for (auto& p : module->parameters()) inputs.push_back(p);
      loss().backward();
      // Directional derivative along a random direction of every input at once.
      double analytic = 0;
      std::vector<torch::Tensor> directions;
      for (auto& t : inputs) {
        directions.push_back(torch::randn_like(t));
        analytic += (t.grad() * directions.back()).sum().item<double>();
      }
      const double eps = 1e-6;
      auto shifted = [&](double step) {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < inputs.size(); ++i) inputs[i].add_(directions[i] * step);
        double value = loss().item<double>();
        for (size_t i = 0; i < inputs.size(); ++i) inputs[i].sub_(directions[i] * step);
        return value;
      };
      const double numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::abs(numeric));
      // Dropout is really applied: eval mode gives another value.
      module->eval();
      torch::NoGradGuard no_grad;
      auto eval_out = std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
      module->train();
      torch::manual_seed(11);
      auto train_out = std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
      EXPECT_GT((eval_out - train_out).abs().max().item<double>(), 1e-3);
    }
  }
}

TEST(RelationalAttentionFast, DropoutKeepsTheExpectedOutput) {
  torch::manual_seed(5);
  RelationalAttention module(base().rel_activation("tanh").dropout(0.2));
  module->block_size = 4;
  auto x = torch::randn({1, 10, 64}), symbols = torch::randn({1, 10, 64});
  torch::NoGradGuard no_grad;
  module->eval();
  auto expected = std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
  module->train();
  auto sum = torch::zeros_like(expected);
  const int draws = 2000;
  for (int k = 0; k < draws; ++k) {
    // resid_dropout is nn.Dropout too; its mean is the identity as well.
    sum += std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
  }
  // Standard error of the mean is about 2% of the output scale here; 10% leaves no flakiness while
  // an unscaled dropout (a 20% bias) fails.
  EXPECT_LE(relative_error(expected, sum / draws), 0.1);
}

TEST(RelationalAttentionFast, DropoutOfOneDropsEveryAttentionWeight) {
  for (bool relative : {false, true}) {
    torch::manual_seed(6);
    // The residual dropout drops everything as well; compare before it by making it the identity.
    RelationalAttention module(base()
                                   .rel_activation("sigmoid")
                                   .dropout(1.0)
                                   .add_bias_kv(true)
                                   .add_bias_out(true)
                                   .use_relative_positional_symbols(relative));
    module->train();
    module->resid_dropout->options.p(0.0);
    auto x = torch::randn({2, 9, 64});
    auto symbols = relative ? torch::randn({9, 9, 64}) : torch::randn({2, 9, 64});
    module->implementation = Implementation::Materialize;
    auto expected = std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
    module->implementation = Implementation::Blockwise;
    auto actual = std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
    EXPECT_TRUE(torch::allclose(expected, actual, 1e-6, 1e-7)) << relative;
  }
}

// ---- memory -----------------------------------------------------------------------------------

// Wraps the CPU allocator to record the peak of bytes held by tensors.
class PeakTrackingAllocator final : public c10::Allocator {
 public:
  explicit PeakTrackingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t bytes) override {
    auto inner = inner_->allocate(bytes);
    void* data = inner.get();
    const int64_t now = current_ += static_cast<int64_t>(bytes);
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return {data, new Held{std::move(inner), bytes, this}, &release, inner_device()};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
  void reset_peak() { peak_ = current_.load(); }
  int64_t current() const { return current_; }
  int64_t peak() const { return peak_; }

 private:
  struct Held {
    c10::DataPtr inner;
    size_t bytes;
    PeakTrackingAllocator* owner;
  };
  static void release(void* ctx) {
    auto* held = static_cast<Held*>(ctx);
    held->owner->current_ -= static_cast<int64_t>(held->bytes);
    delete held;
  }
  static c10::Device inner_device() { return c10::Device(c10::DeviceType::CPU); }

  c10::Allocator* inner_;
  std::atomic<int64_t> current_{0}, peak_{0};
};

// Peak bytes above the start of a training step (forward and backward) of the benchmark's layer.
int64_t training_step_peak(Implementation impl, int64_t n) {
  torch::manual_seed(0);
  RelationalAttention module(
      RelationalAttentionOptions(256, 4).total_n_heads(8).n_kv_heads(2).rel_activation("tanh"));
  auto x = torch::randn({1, n, 256}).requires_grad_(true);
  auto symbols = torch::randn({1, n, 256}).requires_grad_(true);
  module->implementation = impl;

  static PeakTrackingAllocator* tracker = new PeakTrackingAllocator(c10::GetCPUAllocator());
  c10::Allocator* previous = c10::GetCPUAllocator();
  c10::SetCPUAllocator(tracker, /*priority=*/100);
  tracker->reset_peak();
  const int64_t start = tracker->current();
  {
    auto out = std::get<0>(module->forward(x, symbols, {}, {}, {}, true, false));
    out.square().sum().backward();
  }
  const int64_t peak = tracker->peak() - start;
  c10::SetCPUAllocator(previous, /*priority=*/100);
  return peak;
}

TEST(RelationalAttentionFast, TrainingStepHoldsNoSquareTensor) {
  auto score_tensor_bytes = [](int64_t n) { return n * n * 4 * 4; };  // [1, 4 heads, n, n] float32
  // The measure sees the materialising step's square tensors (several of them)...
  const int64_t slow = training_step_peak(Implementation::Materialize, 2048);
  // ...and the blockwise step, at twice the length, stays under half of one.
  const int64_t fast = training_step_peak(Implementation::Blockwise, 4096);
  std::cout << "  peak bytes of a training step: materialising (n=2048) " << slow
            << ", blockwise (n=4096) " << fast << "\n";
  EXPECT_GT(slow, 3 * score_tensor_bytes(2048));
  EXPECT_LT(fast, score_tensor_bytes(4096) / 2);
}

}  // namespace

// Modules print their options as the reference's keywords would read, booleans as true/false.
TEST(RelationalAttention, PrintsOptionsWithBooleanWords) {
  std::ostringstream printed;
  RelationalAttention(base().symmetric_rels(true))->pretty_print(printed);
  EXPECT_NE(printed.str().find("symmetric_rels=true"), std::string::npos) << printed.str();
  EXPECT_NE(printed.str().find("use_relative_positional_symbols=false"), std::string::npos)
      << printed.str();
}

TEST(RelationalAttention, LayersFunctionFindsEveryInstance) {
  RelationalAttention ra(base());
  EXPECT_EQ(relational_attention_layers(*ra), std::vector<RelationalAttentionImpl*>{ra.get()});
  DualAttention da(DualAttentionOptions(64, 4, 4, 0.0));
  EXPECT_EQ(relational_attention_layers(*da),
            std::vector<RelationalAttentionImpl*>{da->relational_attention.get()});
  torch::nn::Sequential two(DualAttention(DualAttentionOptions(64, 4, 4, 0.0)),
                            DualAttention(DualAttentionOptions(64, 4, 4, 0.0).ra_type("rca")),
                            RelationalAttention(base()));
  EXPECT_EQ(relational_attention_layers(*two).size(), 2u);  // the 'rca' block has none
  Attention plain(AttentionOptions(64, 4, 0.0));
  EXPECT_TRUE(relational_attention_layers(*plain).empty());
}

// ---- the operator -----------------------------------------------------------------------------

// torch.ops.dual_attention.relational_attention (ops.h) reached through the dispatcher, as Python
// reaches it, against the module: every path, per-position and relative symbols, masks, GQA.
namespace {

using OpSignature = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>(
    const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
    const torch::Tensor&, const torch::Tensor&, const std::optional<torch::Tensor>&, bool, bool,
    std::string_view, double, bool, std::string_view, int64_t);

c10::TypedOperatorHandle<OpSignature> relational_attention_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("dual_attention::relational_attention", "")
      .typed<OpSignature>();
}

// The operator's tensors, projected as RelationalAttention projects them.
struct OpInputs {
  torch::Tensor q, k, q_rel, k_rel, sv;
};

OpInputs project_like_the_module(RelationalAttentionImpl& m, const torch::Tensor& x,
                                 const torch::Tensor& symbols, const Inputs& in) {
  const int64_t b = x.size(0), n = x.size(1), h = m.options.n_heads(), R = m.n_relations;
  OpInputs o;
  o.q = m.wq_attn(x).view({b, n, h, m.key_dim});
  o.k = m.wk_attn(x).view({b, n, m.n_kv_heads, m.key_dim});
  if (in.freqs_cos.defined())
    std::tie(o.q, o.k) = apply_rotary_emb(o.q, o.k, in.freqs_cos, in.freqs_sin);
  o.q_rel = m.wq_rel(x).view({b, n, R, m.rel_proj_dim});
  o.k_rel = m.wk_rel(x).view({b, n, R, m.rel_proj_dim});
  auto sv = m.wv(symbols);
  o.sv = sv.view({sv.size(0), sv.size(1), m.n_kv_heads, m.head_dim});
  return o;
}

// wo(op(...)) with the module's parameters, and the backward of sum(out * weight).
Outcome run_op(RelationalAttention& module, const std::string& impl, const Inputs& in,
               const torch::Tensor& weight) {
  module->zero_grad();
  auto x = in.x.detach().clone().requires_grad_(true);
  auto symbols = in.symbols.detach().clone().requires_grad_(true);
  auto p = project_like_the_module(*module, x, symbols, in);
  std::optional<torch::Tensor> mask;
  if (in.mask.defined()) mask = in.mask;
  auto [heads, scores, relations] = relational_attention_op().call(
      p.q, p.k, p.q_rel, p.k_rel, p.sv, module->wr, mask, in.causal,
      module->options.use_relative_positional_symbols(), module->options.rel_activation(), 0.0,
      /*need_weights=*/false, impl, module->block_size);
  EXPECT_TRUE(scores.defined() && scores.numel() == 0);
  EXPECT_TRUE(relations.defined() && relations.numel() == 0);
  const int64_t b = x.size(0), n = x.size(1);
  auto out = module->wo(heads.reshape({b, n, -1}));
  (out * weight).sum().backward();
  Outcome o{out.detach(), {{"x", x.grad()}, {"symbols", symbols.grad()}}};
  for (const auto& p : module->named_parameters()) {
    o.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
  }
  return o;
}

}  // namespace

TEST(RelationalAttentionOp, EqualsTheModuleOnEveryPathWithItsGradients) {
  int compared = 0;
  for (const auto& c : cases()) {
    const bool wanted =
        c.name == "identityCausal" || c.name == "tanhCausal" || c.name == "softmaxExplicitMask" ||
        c.name == "identityUnmasked" || c.name == "identityGroupedQuery" ||
        c.name == "tanhMultiQuery" || c.name == "tanhRoPE" || c.name == "identityKeyDim" ||
        c.name == "tanhSymmetric" || c.name == "identityBandMask" ||
        c.name == "tanhRelativeSymbols" || c.name == "identityRelativeSymbols" ||
        c.name == "tanhRelativeSymbolsBiasGrouped" || c.name == "identityBandMaskRelativeBias";
    if (!wanted) continue;
    SCOPED_TRACE(c.name);
    torch::manual_seed(0);
    RelationalAttention module(c.options);
    module->to(torch::kDouble);
    module->block_size = c.block;
    auto in = make_inputs(c, *module, torch::kDouble);
    auto weight = torch::randn({c.batch, c.len, module->head_dim * c.options.n_heads()},
                               torch::TensorOptions().dtype(torch::kDouble));
    // The module's materialising path is the one the parity fixtures tie to the reference.
    auto expected = run(module, Implementation::Materialize, in, weight);
    std::vector<std::string> paths = {"auto", "materialize", "blockwise"};
    const bool sdpa_fits =
        c.options.rel_activation() == "identity" && !c.options.use_relative_positional_symbols();
    if (sdpa_fits) paths.push_back("sdpa");
    for (const auto& path : paths) {
      SCOPED_TRACE(path);
      auto actual = run_op(module, path, in, weight);
      EXPECT_LE(relative_error(expected.out, actual.out), 1e-10) << "out";
      for (const auto& [name, grad] : expected.grads) {
        ASSERT_TRUE(actual.grads[name].defined()) << name;
        if (name == "wk_attn.bias" && !c.rope) continue;  // zero up to rounding (see above)
        EXPECT_LE(relative_error(grad, actual.grads[name]), 1e-10) << "gradient of " << name;
      }
      ++compared;
    }
  }
  EXPECT_EQ(compared, 14 * 3 + 5);  // 5 of them fit SDPA
}

TEST(RelationalAttentionOp, ReturnsTheModulesWeightsWhenAsked) {
  torch::manual_seed(4);
  auto options = base().rel_activation("tanh").n_kv_heads(2);
  RelationalAttention module(options);
  Case c{"weights", options, /*causal=*/true};
  auto in = make_inputs(c, *module, torch::kFloat);
  auto [out, scores, relations] =
      module->forward(in.x, in.symbols, {}, {}, {}, true, /*need_weights=*/true);
  auto p = project_like_the_module(*module, in.x, in.symbols, in);
  // need_weights materialises whatever is asked.
  auto [heads, op_scores, op_relations] =
      relational_attention_op().call(p.q, p.k, p.q_rel, p.k_rel, p.sv, module->wr, std::nullopt,
                                     true, false, "tanh", 0.0, true, "blockwise", 8);
  EXPECT_TRUE(torch::allclose(module->wo(heads.reshape({c.batch, c.len, -1})), out));
  EXPECT_TRUE(torch::equal(op_scores, scores));
  EXPECT_TRUE(torch::equal(op_relations, relations));
  EXPECT_EQ(op_scores.sizes(), (std::vector<int64_t>{c.batch, 4, c.len, c.len}));
  EXPECT_EQ(op_relations.sizes(), (std::vector<int64_t>{c.batch, c.len, c.len, 4}));
}

// Fake and meta tensors trace through the operator (torch.compile, torch.export): "auto" resolves
// to the blockwise path's operators (their meta kernels), or with dropout to the materialising
// path; neither reads data, and the shapes come out right.
TEST(RelationalAttentionOp, RunsOnMetaTensorsWithTheRightShapes) {
  const int64_t b = 2, n = 300, h = 8, g = 2, kd = 12, hd = 16, R = 4, dr = 8;
  auto meta = torch::TensorOptions().device(torch::kMeta);
  auto q = torch::empty({b, n, h, kd}, meta), k = torch::empty({b, n, g, kd}, meta);
  auto q_rel = torch::empty({b, n, R, dr}, meta), k_rel = torch::empty({b, n, R, dr}, meta);
  auto wr = torch::empty({h, hd, R}, meta);
  auto mask = torch::empty({n, n}, meta.dtype(torch::kBool));
  EXPECT_EQ(ops::relational_attention_path(Implementation::Auto, q, k, q_rel, false, false, "tanh",
                                           false),
            Implementation::Blockwise);  // as a real CPU tensor of this length
  EXPECT_EQ(ops::relational_attention_path(Implementation::Auto, q, k, q_rel, false, false, "tanh",
                                           false, 0.1),
            Implementation::Materialize);
  for (bool relative : {false, true}) {
    for (bool need_weights : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "relative " << relative << ", weights " << need_weights);
      auto sv = relative ? torch::empty({n, n, g, hd}, meta) : torch::empty({b, n, g, hd}, meta);
      for (bool masked : {false, true}) {
        std::optional<torch::Tensor> attn_mask;
        if (masked) attn_mask = mask;
        auto [heads, scores, relations] =
            relational_attention_op().call(q, k, q_rel, k_rel, sv, wr, attn_mask, !masked, relative,
                                           "tanh", 0.0, need_weights, "auto", 128);
        EXPECT_TRUE(heads.is_meta());
        EXPECT_EQ(heads.sizes(), (std::vector<int64_t>{b, n, h, hd}));
        if (need_weights) {
          EXPECT_EQ(scores.sizes(), (std::vector<int64_t>{b, h, n, n}));
          EXPECT_EQ(relations.sizes(), (std::vector<int64_t>{b, n, n, R}));
        } else {
          EXPECT_EQ(scores.numel(), 0);
          EXPECT_EQ(relations.numel(), 0);
        }
      }
    }
  }
  // With dropout too (the materialising path's, drawn by the ATen operator).
  auto heads = std::get<0>(relational_attention_op().call(
      q, k, q_rel, k_rel, torch::empty({b, n, g, hd}, meta), wr, std::nullopt, true, false,
      "identity", 0.1, false, "auto", 128));
  EXPECT_EQ(heads.sizes(), (std::vector<int64_t>{b, n, h, hd}));
  // Asked for explicitly, the blockwise path refuses to be traced with dropout.
  expect_error(
      [&] {
        relational_attention_op().call(q, k, q_rel, k_rel, torch::empty({b, n, g, hd}, meta), wr,
                                       std::nullopt, true, false, "identity", 0.1, false,
                                       "blockwise", 128);
      },
      {"cannot be traced with dropout (dropout_p = 0.1)"});
  // (symbolic_attention is scaled_dot_product_attention, whose math path has no C++ meta kernel
  // for its softmax: it traces with Python's fake tensors, as the Python check shows.)
}

TEST(RelationalAttentionOp, AutoResolvesFromShapesDeviceAndOptions) {
  ops::RelationalAttentionPathInputs in;
  in.batch = 1, in.n_queries = in.n_keys = 512, in.n_heads = 4, in.n_relations = 4;
  auto path = [&](Implementation requested = Implementation::Auto) {
    return ops::resolve_relational_attention_path(requested, in);
  };
  EXPECT_EQ(path(), Implementation::Blockwise);  // long, on the CPU
  in.n_queries = in.n_keys = 64;
  EXPECT_EQ(path(), Implementation::Materialize);  // short
  EXPECT_EQ(path(Implementation::SDPA), Implementation::SDPA);
  in.device = torch::Device(torch::kCUDA, 0);
  EXPECT_EQ(path(), Implementation::SDPA);  // identity relations on CUDA
  in.has_mask = true;
  EXPECT_EQ(path(), Implementation::Blockwise);
  in.traced = true;  // a trace keeps the blockwise path whole (its two operators)
  EXPECT_EQ(path(), Implementation::Blockwise);
  in.dropout_p = 0.1;  // but would freeze its dropout seed
  EXPECT_EQ(path(), Implementation::Materialize);
  EXPECT_EQ(path(Implementation::Blockwise), Implementation::Blockwise);  // asked for explicitly
  in.need_weights = true;
  EXPECT_EQ(path(Implementation::Blockwise), Implementation::Materialize);
  in = ops::RelationalAttentionPathInputs{};
  in.batch = 1, in.n_queries = 512, in.n_keys = 600, in.n_heads = 4, in.n_relations = 4;
  EXPECT_EQ(path(), Implementation::Materialize);  // keys of a cache: not blockwise
  EXPECT_EQ(ops::parse_relational_attention_implementation("sdpa"), Implementation::SDPA);
  EXPECT_THROW(ops::parse_relational_attention_implementation("fast"), c10::Error);
}

// The blockwise backward is an operator without a derivative: differentiating its gradients
// (create_graph=true, then backward) is an error that says so, not a silent zero.
TEST(RelationalAttentionOp, BlockwiseSecondDerivativeIsAnErrorThatSaysSo) {
  const int64_t b = 1, n = 40, h = 2, g = 1, kd = 4, hd = 4, R = 2, dr = 4;
  auto q = torch::randn({b, n, h, kd}).requires_grad_(), k = torch::randn({b, n, g, kd});
  auto q_rel = torch::randn({b, n, R, dr}), k_rel = torch::randn({b, n, R, dr});
  auto sv = torch::randn({b, n, g, hd}), wr = torch::randn({h, hd, R});
  auto heads =
      std::get<0>(relational_attention_op().call(q, k, q_rel, k_rel, sv, wr, std::nullopt, true,
                                                 false, "identity", 0.0, false, "blockwise", 16));
  auto dq = torch::autograd::grad({heads.square().sum()}, {q}, {}, true, true)[0];
  ASSERT_TRUE(dq.requires_grad());
  expect_error([&] { dq.sum().backward(); }, {"blockwise implementation has no second derivative",
                                              "implementation='materialize'"});
}

TEST(RelationalAttentionOp, BadArgumentsAreErrorsNamingThem) {
  const int64_t b = 2, n = 5, h = 4, g = 2, kd = 6, hd = 8, R = 2, dr = 4;
  auto q = torch::randn({b, n, h, kd}), k = torch::randn({b, n, g, kd});
  auto q_rel = torch::randn({b, n, R, dr}), k_rel = torch::randn({b, n, R, dr});
  auto sv = torch::randn({b, n, g, hd}), wr = torch::randn({h, hd, R});
  struct Bad {
    std::string expected;
    std::function<void()> call;
  };
  auto call = [&](OpInputs o, torch::Tensor w, std::optional<torch::Tensor> mask = std::nullopt,
                  bool causal = false, bool relative = false, std::string act = "identity",
                  double dropout = 0.0, std::string impl = "auto", int64_t block = 128) {
    relational_attention_op().call(o.q, o.k, o.q_rel, o.k_rel, o.sv, w, mask, causal, relative, act,
                                   dropout, false, impl, block);
  };
  const OpInputs good{q, k, q_rel, k_rel, sv};
  auto with = [&](auto change) {
    OpInputs o = good;
    change(o);
    return o;
  };
  std::vector<Bad> bad = {
      {"relational_attention: q must be [b, n, h, key_dim], got shape [2, 5, 24]",
       [&] { call(with([](OpInputs& o) { o.q = o.q.flatten(2); }), wr); }},
      {"relational_attention: k must be [b, m, g, key_dim] with b = 2 and key_dim = 6",
       [&] {
         call(with([](OpInputs& o) { o.k = torch::randn({2, 5, 2, 7}); }), wr);
       }},
      {"relational_attention: k's kv heads g (3) must divide q's heads h (4)",
       [&] {
         call(with([](OpInputs& o) { o.k = torch::randn({2, 5, 3, 6}); }), wr);
       }},
      {"relational_attention: k_rel must be [b, m, R, dr] = [2, 5, 2, 4]",
       [&] {
         call(with([](OpInputs& o) { o.k_rel = torch::randn({2, 5, 2, 3}); }), wr);
       }},
      {"relational_attention: sv must be [b, m, g, head_dim] = [2, 5, 2, head_dim] like k, got "
       "shape [2, 5, 4, 8]",
       [&] {
         call(with([](OpInputs& o) { o.sv = torch::randn({2, 5, 4, 8}); }), wr);
       }},
      {"relational_attention: with relative_symbols, sv must be [n, m, g, head_dim] = [5, 5, 2",
       [&] { call(good, wr, std::nullopt, false, /*relative=*/true); }},
      {"relational_attention: wr must be [h, head_dim, R] = [4, 8, 2], got shape [4, 8, 3]",
       [&] {
         call(good, torch::randn({h, hd, 3}));
       }},
      {"relational_attention: sv must have the dtype of q (Float), got Double",
       [&] { call(with([](OpInputs& o) { o.sv = o.sv.to(torch::kDouble); }), wr); }},
      {"relational_attention: attn_mask must be broadcastable to [n, m] = [5, 5], got shape [4, 5]",
       [&] {
         call(good, wr, torch::ones({4, 5}, torch::kBool));
       }},
      {"relational_attention: attn_mask must be a boolean tensor",
       [&] {
         call(good, wr, torch::ones({5, 5}));
       }},
      {"relational_attention: attn_mask and is_causal=true were both given",
       [&] {
         call(good, wr, torch::ones({5, 5}, torch::kBool), true);
       }},
      {"relational_attention: rel_activation 'tanhh' is not a known activation",
       [&] { call(good, wr, std::nullopt, false, false, "tanhh"); }},
      {"relational_attention: dropout_p must be in [0, 1], got 1.5",
       [&] { call(good, wr, std::nullopt, false, false, "identity", 1.5); }},
      {"relational_attention: implementation must be one of 'auto', 'materialize', 'blockwise', "
       "'sdpa', got 'fast'",
       [&] { call(good, wr, std::nullopt, false, false, "identity", 0.0, "fast"); }},
      {"relational_attention: block_size must be positive, got 0",
       [&] { call(good, wr, std::nullopt, false, false, "identity", 0.0, "blockwise", 0); }},
      {"relational_attention: the SDPA implementation needs rel_activation 'identity'",
       [&] { call(good, wr, std::nullopt, false, false, "tanh", 0.0, "sdpa"); }},
      {"relational_attention: the blockwise implementation needs as many keys as queries, got 5 "
       "queries (q) and 7 keys (k)",
       [&] {
         auto o = with([](OpInputs& o) {
           o.k = torch::randn({2, 7, 2, 6});
           o.k_rel = torch::randn({2, 7, 2, 4});
           o.sv = torch::randn({2, 7, 2, 8});
         });
         call(o, wr, std::nullopt, false, false, "identity", 0.0, "blockwise");
       }},
  };
  for (const auto& [expected, run_bad] : bad) {
    try {
      run_bad();
      ADD_FAILURE() << "expected an error containing: " << expected;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
          << "expected: " << expected << "\ngot: " << e.what_without_backtrace();
    }
  }
  // A mask broadcastable to [n, m] is accepted, and a cache's extra keys materialise.
  auto row = torch::ones({1, 5}, torch::kBool);
  EXPECT_NO_THROW(call(good, wr, row, false, false, "identity", 0.0, "blockwise"));
}

// bfloat16 runs forward and backward on every path, close to float32.
TEST(RelationalAttentionOp, RunsInBfloat16OnEveryPath) {
  torch::manual_seed(7);
  const int64_t b = 2, n = 24, h = 4, g = 2, kd = 8, hd = 8, R = 4, dr = 8;
  auto make = [](std::vector<int64_t> shape) { return torch::randn(shape) * 0.5; };
  std::vector<torch::Tensor> inputs = {make({b, n, h, kd}), make({b, n, g, kd}),
                                       make({b, n, R, dr}), make({b, n, R, dr}),
                                       make({b, n, g, hd}), make({h, hd, R})};
  auto run_in = [&](torch::Dtype dtype, const std::string& path) {
    std::vector<torch::Tensor> leaves;
    for (const auto& t : inputs) leaves.push_back(t.to(dtype).detach().requires_grad_(true));
    auto heads = std::get<0>(relational_attention_op().call(
        leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], std::nullopt, true, false,
        "identity", 0.0, false, path, 8));
    heads.sum().backward();
    std::vector<torch::Tensor> results = {heads.detach().to(torch::kFloat)};
    for (const auto& t : leaves) results.push_back(t.grad().to(torch::kFloat));
    return results;
  };
  for (const std::string path : {"materialize", "blockwise", "sdpa"}) {
    SCOPED_TRACE(path);
    auto expected = run_in(torch::kFloat, path), actual = run_in(torch::kBFloat16, path);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_LE(relative_error(expected[i], actual[i]), 5e-2) << "result " << i;
    }
  }
}

TEST(SymbolicAttentionOp, IsTheModulesRetrievalAfterItsQueryProjection) {
  torch::manual_seed(8);
  SymbolicAttention module(SymbolicAttentionOptions(32, 4, 6));
  auto x = torch::randn({2, 5, 32});
  auto query = module->q_proj(x);
  auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dual_attention::symbolic_attention", "")
          .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                               int64_t, double, std::optional<double>)>();
  auto out =
      op.call(query, module->template_features, module->symbol_library, 4, 0.0, std::nullopt);
  EXPECT_TRUE(torch::allclose(out, module->forward(x)));
  // The formula, head by head: softmax(q_h F_h^T / sqrt(8)) S_h.
  auto q = query.view({2, 5, 4, 8}), f = module->template_features.view({6, 4, 8});
  auto s = module->symbol_library.view({6, 4, 8});
  auto weights = torch::softmax(torch::einsum("bnhd,khd->bhnk", {q, f}) / std::sqrt(8.0), -1);
  auto expected = torch::einsum("bhnk,khd->bnhd", {weights, s}).reshape({2, 5, 32});
  EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-6));
  try {
    op.call(query, module->template_features, module->symbol_library.slice(0, 0, 5), 4, 0.0,
            std::nullopt);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("symbolic_attention: symbol_library must be [n_symbols, "
                                         "d] = [6, 32] like template_features, got shape [5, 32]"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}
