// The fast (need_weights=false) paths of RelationalAttention against its materialising path, which
// the parity fixtures tie to the reference: outputs and the gradients of x, symbols and every
// parameter, for every option.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "dual_attention/attention_utils.h"
#include "dual_attention/dual_attention.h"
#include "dual_attention/relational_attention.h"

using namespace dual_attention;
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
