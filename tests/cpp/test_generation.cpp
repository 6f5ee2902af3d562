// Generation with a KV cache (generation.h): exact against the reference's generate on every LM
// fixture of tests/fixtures/lm/ (greedy tokens recorded by dual-attention 0.0.7, runs past
// max_block_size), cached logits against the full forward at every step, batches of prompts of
// different lengths against each prompt alone, reproducible seeded sampling, the sampling filters
// against their definitions, stop conditions, streaming and the errors of bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dual_attention/generation.h"
#include "dual_attention/io/safetensors.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/relational_attention.h"
#include "test_paths.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace dual_attention;
using test_support::expect_error;

namespace {

const fs::path kFixtures = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "lm";

std::vector<std::string> fixture_cases() {
  std::ifstream in(kFixtures / "MANIFEST.json");
  const Kwargs manifest = Kwargs::parse(in);
  std::vector<std::string> names;
  for (const auto& item : manifest.items()) names.push_back(item.key());
  return names;
}

std::map<std::string, torch::Tensor> expected(const std::string& name) {
  return io::load_safetensors((kFixtures / name / "expected.safetensors").string()).tensors;
}

std::string class_of(const std::string& name) {
  std::ifstream in(kFixtures / "MANIFEST.json");
  return Kwargs::parse(in).at(name).at("class");
}

// max |a - b| / max |b|.
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  auto diff = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
  return diff / b.to(torch::kFloat64).abs().max().item<double>();
}

std::vector<std::vector<int64_t>> rows_of(const torch::Tensor& t) {
  std::vector<std::vector<int64_t>> rows;
  auto c = t.to(torch::kLong).contiguous();
  for (int64_t r = 0; r < c.size(0); ++r) {
    rows.emplace_back(c[r].data_ptr<int64_t>(), c[r].data_ptr<int64_t>() + c.size(1));
  }
  return rows;
}

// Runs `body(model)` on the fixture's model (either class), loaded as float32 for a bf16 file (as
// the reference's from_pretrained does, which made the expected values).
template <class Body>
void with_model(const std::string& name, const Body& body) {
  PretrainedOptions options;
  if (name == "dat_bf16") options.dtype(torch::kFloat32);
  if (class_of(name) == "DualAttnTransformerLM") {
    auto model = DualAttnTransformerLM::from_pretrained((kFixtures / name).string(), options);
    body(*model);
  } else {
    auto model = TransformerLM::from_pretrained((kFixtures / name).string(), options);
    body(*model);
  }
}

class GenerationFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerationFixture, GreedyTokensEqualTheReferencesPastTheBlock) {
  const auto exp = expected(GetParam());
  with_model(GetParam(), [&](auto& model) {
    const auto& prompt = exp.at("prompt");
    const int64_t new_tokens = exp.at("generated").size(1) - prompt.size(1);
    ASSERT_GT(exp.at("generated").size(1), model.options.max_block_size());
    for (bool use_cache : {true, false}) {
      auto out = generate(model, prompt,
                          GenerationConfig().max_new_tokens(new_tokens).use_cache(use_cache));
      EXPECT_TRUE(torch::equal(out.sequences, exp.at("generated").to(torch::kLong)))
          << "use_cache=" << use_cache << "\nours:\n"
          << out.sequences << "\nreference:\n"
          << exp.at("generated");
      EXPECT_EQ(out.finish_reasons, std::vector<std::string>(2, "length"));
    }
    // The reference's own signature, now on the cache: top_k = 1 is greedy.
    EXPECT_TRUE(torch::equal(model.generate(prompt, new_tokens, 1.0, 1), exp.at("generated")));
  });
}

TEST_P(GenerationFixture, CachedLogitsEqualTheFullForwardAtEveryStep) {
  const auto exp = expected(GetParam());
  with_model(GetParam(), [&](auto& model) {
    torch::NoGradGuard no_grad;
    const double tolerance = exp.at("logits").scalar_type() == torch::kFloat64 ? 1e-10 : 1e-5;
    auto context = exp.at("prompt").to(torch::kLong);
    const int64_t block = model.options.max_block_size();
    auto cache = model.make_cache(context.size(0), block);
    // Prefill: every position's logits.
    auto logits = model.forward_cached(context, cache);
    auto full = std::get<0>(model.forward(context));
    EXPECT_LE(relative_error(logits, full), tolerance) << "prefill";
    double worst = 0.0;
    const auto generated = exp.at("generated").to(torch::kLong);
    for (int64_t t = context.size(1); t < block; ++t) {
      auto next = generated.slice(1, t, t + 1);  // [b, 1]
      context = torch::cat({context, next}, 1);
      auto step = model.forward_cached(next, cache).select(1, 0);
      auto reference = std::get<0>(model.forward(context)).select(1, -1);
      worst = std::max(worst, relative_error(step, reference));
    }
    EXPECT_EQ(cache.length, block);
    EXPECT_LE(worst, tolerance);
    std::cout << "[ cache    ] " << GetParam()
              << ": worst step max|cached - full| / max|full| = " << worst << "\n";
  });
}

TEST_P(GenerationFixture, ABatchOfDifferentLengthsGivesEachPromptItsOwnTokens) {
  with_model(GetParam(), [&](auto& model) {
    const int64_t vocab = model.options.vocab_size();
    torch::manual_seed(3);
    // Lengths 3, 9 and 20 (longer than the block: cropped, and the window refills every step).
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t n : {3, 9, 20}) prompts.push_back(rows_of(torch::randint(0, vocab, {1, n}))[0]);
    const auto config = GenerationConfig().max_new_tokens(12);
    auto batch = generate(model, prompts, config);
    for (size_t r = 0; r < prompts.size(); ++r) {
      auto alone = generate(model, std::vector<std::vector<int64_t>>{prompts[r]}, config);
      EXPECT_EQ(batch.tokens[r], alone.tokens[0]) << "prompt " << r;
      EXPECT_LE((batch.logprobs[r] - alone.logprobs[0]).abs().max().item().toDouble(), 1e-4);
    }
    // The same batch as a left-padded tensor with its attention mask.
    auto ids = torch::zeros({3, 20}, torch::kLong), mask = torch::zeros({3, 20}, torch::kLong);
    for (int64_t r = 0; r < 3; ++r) {
      const int64_t n = static_cast<int64_t>(prompts[r].size());
      ids[r].slice(0, 20 - n) = torch::tensor(prompts[r]);
      mask[r].slice(0, 20 - n) = 1;
    }
    auto padded = generate(model, ids, config, {}, mask);
    EXPECT_EQ(padded.tokens, batch.tokens);
    EXPECT_TRUE(torch::equal(padded.sequences.slice(1, 20), batch.sequences.slice(1, 20)));
  });
}

INSTANTIATE_TEST_SUITE_P(LanguageModels, GenerationFixture, ::testing::ValuesIn(fixture_cases()),
                         [](const auto& info) { return info.param; });

// ---- a small model for the behaviours ----------------------------------------------------------

class Generation : public ::testing::Test {
 protected:
  DualAttnTransformerLM model =
      DualAttnTransformerLM::from_pretrained((kFixtures / "dat_rope_gqa_swiglu_rmsnorm").string());
  std::vector<std::vector<int64_t>> prompts = {{1, 2, 3, 4}, {5, 6}};
};

TEST_F(Generation, SeededSamplingIsReproducible) {
  auto config = GenerationConfig().max_new_tokens(10).do_sample(true).temperature(1.5).seed(42);
  auto a = generate(*model, prompts, config);
  auto b = generate(*model, prompts, config);
  EXPECT_EQ(a.tokens, b.tokens);
  auto c = generate(*model, prompts, config.seed(43));
  EXPECT_NE(a.tokens, c.tokens);
  // A caller's generator: the same state gives the same draws.
  auto gen = at::detail::createCPUGenerator(7);
  auto d = generate(*model, prompts, GenerationConfig(config).generator(gen.clone()));
  auto e = generate(*model, prompts, GenerationConfig(config).generator(gen.clone()));
  EXPECT_EQ(d.tokens, e.tokens);
}

TEST_F(Generation, TemperatureZeroAndDoSampleFalseAreGreedy) {
  auto greedy = generate(*model, prompts, GenerationConfig().max_new_tokens(8));
  auto cold = generate(*model, prompts,
                       GenerationConfig().max_new_tokens(8).do_sample(true).temperature(0.0));
  EXPECT_EQ(greedy.tokens, cold.tokens);
  // Greedy tokens are the argmax of the full forward.
  auto ids = torch::tensor(prompts[0]).unsqueeze(0);
  auto next = std::get<0>(model->forward(ids)).select(1, -1).argmax(-1).item<int64_t>();
  EXPECT_EQ(greedy.tokens[0][0], next);
}

TEST_F(Generation, SampledTokensComeFromTheFilteredSet) {
  auto ids = torch::tensor(prompts[0]).unsqueeze(0);
  auto logits = std::get<0>(model->forward(ids)).select(1, -1);  // [1, vocab]
  auto top3 = std::get<1>(torch::topk(logits, 3)).squeeze(0);
  for (uint64_t seed = 0; seed < 30; ++seed) {
    auto out = generate(
        *model, {prompts[0]},
        GenerationConfig().max_new_tokens(1).do_sample(true).temperature(3.0).top_k(3).seed(seed));
    EXPECT_TRUE((top3 == out.tokens[0][0]).any().item<bool>()) << out.tokens[0][0];
  }
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingTheMass) {
  // probabilities 0.5, 0.3, 0.15, 0.05
  auto logits = torch::tensor({0.5, 0.3, 0.15, 0.05}).log().unsqueeze(0);
  auto kept = [&](double p) {
    return sampling::top_p_filter(logits, p).isfinite().squeeze(0).sum().item<int64_t>();
  };
  EXPECT_EQ(kept(0.1), 1);
  EXPECT_EQ(kept(0.5), 1);  // 0.5 reaches 0.5
  EXPECT_EQ(kept(0.51), 2);
  EXPECT_EQ(kept(0.8), 2);
  EXPECT_EQ(kept(0.81), 3);
  EXPECT_EQ(kept(0.96), 4);
  EXPECT_EQ(kept(1.0), 4);
  // Against the definition on random rows: the kept tokens are the most likely ones, their mass
  // reaches p, and without the least likely kept one it would not.
  torch::manual_seed(0);
  auto rows = torch::randn({50, 40}) * 3;
  for (double p : {0.05, 0.3, 0.7, 0.9, 0.999}) {
    auto filtered = sampling::top_p_filter(rows, p);
    auto probs = torch::softmax(rows, -1);
    for (int64_t r = 0; r < rows.size(0); ++r) {
      auto keep = filtered[r].isfinite();
      const double mass = probs[r].masked_select(keep).sum().item<double>();
      const double smallest = probs[r].masked_select(keep).min().item<double>();
      const double largest_dropped =
          keep.all().item<bool>() ? 0.0
                                  : probs[r].masked_select(keep.logical_not()).max().item<double>();
      EXPECT_TRUE(keep[probs[r].argmax()].item<bool>());
      EXPECT_GE(mass, p - 1e-6);
      EXPECT_LT(mass - smallest, p + 1e-6);
      EXPECT_LE(largest_dropped, smallest);
    }
  }
}

TEST(Sampling, MinPAndTopKFollowTheirDefinitionsAndKeepTheArgmax) {
  torch::manual_seed(1);
  auto rows = torch::randn({30, 25}) * 4;
  auto probs = torch::softmax(rows, -1);
  for (double min_p : {0.0, 0.1, 0.5, 1.0}) {
    auto keep = sampling::min_p_filter(rows, min_p).isfinite();
    auto expected_keep = probs >= std::get<0>(probs.max(-1, true)) * min_p;
    EXPECT_TRUE(torch::equal(keep, expected_keep)) << "min_p " << min_p;
    EXPECT_TRUE(keep.gather(1, probs.argmax(-1, true)).all().item<bool>());
  }
  for (int64_t k : {1, 5, 25, 100}) {
    auto keep = sampling::top_k_filter(rows, k).isfinite();
    EXPECT_TRUE((keep.sum(-1) == std::min<int64_t>(k, 25)).all().item<bool>()) << "top_k " << k;
    auto kth = std::get<0>(torch::topk(rows, std::min<int64_t>(k, 25))).narrow(1, -1, 1);
    EXPECT_TRUE(torch::equal(keep, rows >= kth));
  }
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfSeenTokens) {
  auto logits = torch::tensor({{2.0, -2.0, 1.0, -1.0}, {2.0, -2.0, 1.0, -1.0}});
  auto out = sampling::apply_repetition_penalty(logits, {{0, 1, 0}, {}}, 2.0);
  EXPECT_TRUE(torch::equal(out[0], torch::tensor({1.0, -4.0, 1.0, -1.0})));
  EXPECT_TRUE(torch::equal(out[1], logits[1]));
}

TEST_F(Generation, EosAndStopSequencesEndARowAndThePaddingFollows) {
  auto free_run = generate(*model, prompts, GenerationConfig().max_new_tokens(10));
  const int64_t eos = free_run.tokens[0][3];
  auto out = generate(*model, prompts,
                      GenerationConfig().max_new_tokens(10).eos_token_id({eos}).pad_token_id(0));
  // Row 0 stops at its first eos (inclusive); the other row runs on unless it meets eos too.
  auto first = std::find(free_run.tokens[0].begin(), free_run.tokens[0].end(), eos);
  const auto stop_at = static_cast<size_t>(first - free_run.tokens[0].begin()) + 1;
  EXPECT_EQ(out.tokens[0],
            std::vector<int64_t>(free_run.tokens[0].begin(), free_run.tokens[0].begin() + stop_at));
  EXPECT_EQ(out.finish_reasons[0], "eos");
  const int64_t width = 4;  // longest prompt
  for (int64_t j = width + static_cast<int64_t>(stop_at); j < out.sequences.size(1); ++j) {
    EXPECT_EQ(out.sequences[0][j].item<int64_t>(), 0);
    EXPECT_TRUE(std::isnan(out.logprobs[0][j - width].item<double>()));
  }
  // A stop sequence of the second row's tokens 2..3.
  std::vector<int64_t> stop(free_run.tokens[1].begin() + 2, free_run.tokens[1].begin() + 4);
  auto stopped =
      generate(*model, {prompts[1]}, GenerationConfig().max_new_tokens(10).stop_sequences({stop}));
  EXPECT_EQ(stopped.finish_reasons[0], "stop");
  EXPECT_LE(stopped.tokens[0].size(), 4u);
  EXPECT_TRUE(std::equal(stop.begin(), stop.end(), stopped.tokens[0].end() - 2));
}

TEST_F(Generation, TheCallbackStreamsEveryTokenAndCanStop) {
  std::vector<std::vector<int64_t>> streamed(2);
  int64_t calls = 0;
  auto out = generate(*model, prompts, GenerationConfig().max_new_tokens(6),
                      [&](const GenerationStep& step) {
                        EXPECT_EQ(step.index, calls++);
                        for (size_t r = 0; r < 2; ++r) streamed[r].push_back(step.tokens[r]);
                        return true;
                      });
  EXPECT_EQ(calls, 6);
  EXPECT_EQ(streamed, out.tokens);
  calls = 0;
  auto stopped = generate(*model, prompts, GenerationConfig().max_new_tokens(6),
                          [&](const GenerationStep&) { return ++calls < 3; });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(stopped.tokens[0].size(), 3u);
  EXPECT_EQ(stopped.finish_reasons, std::vector<std::string>(2, "callback"));
  EXPECT_EQ(stopped.sequences.size(1), 4 + 3);
}

TEST_F(Generation, LeavesTheTrainingFlagAndReturnsScoresWhenAsked) {
  model->train();
  auto out = generate(*model, prompts, GenerationConfig().max_new_tokens(2).output_scores(true));
  EXPECT_TRUE(model->is_training());
  model->eval();
  ASSERT_EQ(out.scores.size(), 2u);
  EXPECT_EQ(out.scores[0].sizes(), (std::vector<int64_t>{2, model->options.vocab_size()}));
  EXPECT_EQ(out.logprobs.sizes(), (std::vector<int64_t>{2, 2}));
}

TEST_F(Generation, BadInputIsNamed) {
  auto ok = GenerationConfig().max_new_tokens(2);
  expect_error([&] { generate(*model, std::vector<std::vector<int64_t>>{{}}, ok); },
               {"prompt 0 is empty"});
  expect_error(
      [&] {
        generate(*model, torch::zeros({1, 0}, torch::kLong), ok);
      },
      {"prompt is empty", "[1, 0]"});
  expect_error(
      [&] {
        generate(*model, std::vector<std::vector<int64_t>>{{1, 48}}, ok);
      },
      {"[0, 48)", "from 1 to 48"});
  expect_error(
      [&] {
        generate(*model, std::vector<std::vector<int64_t>>{{-3, 2}}, ok);
      },
      {"[0, 48)", "-3"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().temperature(-0.5)); },
               {"temperature", "-0.5"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().top_p(0.0)); },
               {"top_p", "(0, 1]", "0"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().top_p(1.5)); }, {"top_p", "1.5"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().top_k(0)); }, {"top_k", "0"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().max_new_tokens(-1)); },
               {"max_new_tokens", "-1"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().min_p(2.0)); }, {"min_p", "2"});
  expect_error([&] { generate(*model, prompts, GenerationConfig().eos_token_id({99})); },
               {"eos_token_id", "99"});
  auto ids = torch::ones({1, 3}, torch::kLong);
  expect_error(
      [&] {
        generate(*model, ids, ok, {}, torch::tensor({{1, 0, 1}}));
      },
      {"attention_mask", "left padding"});
  expect_error(
      [&] {
        generate(*model, ids, ok, {}, torch::tensor({{0, 0, 0}}));
      },
      {"row 0", "empty"});
}

TEST(GenerationCache, SizeFollowsTheDocumentedFormula) {
  // DAT: 3 layers, sa 2 heads (1 kv head), ra 2 heads (2 kv heads), d_model 16 -> head_dim 4.
  DualAttnTransformerLM model(
      DualAttnTransformerLMOptions(40, 16, 3, 2, 2,
                                   {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 6}},
                                   std::nullopt, 0.0, "swiglu", true, 12)
          .pos_enc_type("RoPE")
          .sa_kwargs({{"n_kv_heads", 1}}));
  model->eval();
  auto cache = model->make_cache(2, 10);
  model->forward_cached(torch::randint(0, 40, {2, 5}), cache, 1);
  const int64_t hd = 4, layers = 3, b = 2, T = 10, e = 4;
  const int64_t per_slot = 1 * (hd + hd) + 2 * (hd + hd) + 2 * hd;  // sa k,v; ra k,sv; k_rel
  EXPECT_EQ(cache.nbytes(), layers * b * T * per_slot * e);
}

TEST(GenerationCache, LongPromptsPrefillThroughTheBlockwisePath) {
  // A block longer than the materialising limit: the prefill takes the memory-linear path, and its
  // logits still equal the full forward's.
  DualAttnTransformerLM model(
      DualAttnTransformerLMOptions(40, 16, 2, 2, 2,
                                   {{"d_model", 16}, {"n_heads", 2}, {"n_symbols", 6}},
                                   std::nullopt, 0.0, "gelu", true, 300)
          .ra_kwargs({{"rel_activation", "tanh"}}));
  model->eval();
  auto ids = torch::randint(0, 40, {1, 300});
  auto cache = model->make_cache(1, 300);
  auto cached = model->forward_cached(ids, cache, 1);
  for (auto* ra : relational_attention_layers(*model)) {
    EXPECT_EQ(ra->last_implementation, RelationalAttentionImpl::Implementation::Blockwise);
  }
  auto full = std::get<0>(model->forward(ids)).slice(1, -1);
  EXPECT_LE(relative_error(cached, full), 1e-5);
}

}  // namespace
