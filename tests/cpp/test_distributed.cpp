// Data parallelism (include/dual_attention/distributed.h): torchrun's variables, and DDP over c10d
// with two ranks in two threads of this process (a real TCPStore and gloo on loopback). The
// multi-process runs of the training program are in tests/apps/test_train_distributed.py.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dual_attention/distributed.h"
#include "dual_attention/language_models.h"
#include "dual_attention/training.h"
#include "test_support.h"

using namespace dual_attention;
using test_support::expect_error;
namespace dist = dual_attention::distributed;

namespace {

// Sets the variables while alive, restoring the previous values afterwards.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::optional<std::string>>& values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

const std::optional<std::string> kUnset = std::nullopt;

// A TCP port free on loopback now (the kernel's choice for port 0).
int64_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// A launch on this machine.
dist::LaunchEnvironment loopback(int64_t rank, int64_t world_size, int64_t port) {
  dist::LaunchEnvironment launch;
  launch.rank = launch.local_rank = rank;
  launch.world_size = world_size;
  launch.master_addr = "127.0.0.1";
  launch.master_port = port;
  return launch;
}

DualAttnTransformerLM tiny_lm() {
  // A tied embedding, a symbol retriever shared by the layers and share_attn_params: each must
  // still be one tensor whose gradient is reduced once.
  return DualAttnTransformerLM(
      DualAttnTransformerLMOptions(48, 32, 2, 2, 2,
                                   {{"d_model", 32}, {"n_heads", 2}, {"n_symbols", 8}},
                                   std::nullopt, 0.0, "swiglu", true, 16)
          .pos_enc_type("RoPE")
          .share_attn_params(true));
}

}  // namespace

TEST(LaunchEnvironment, NoVariablesIsOneProcess) {
  ScopedEnv env({{"RANK", kUnset},
                 {"WORLD_SIZE", kUnset},
                 {"LOCAL_RANK", kUnset},
                 {"MASTER_ADDR", kUnset},
                 {"MASTER_PORT", kUnset}});
  const auto launch = dist::LaunchEnvironment::from_env();
  EXPECT_EQ(launch.rank, 0);
  EXPECT_EQ(launch.world_size, 1);
  EXPECT_FALSE(launch.is_distributed());
}

TEST(LaunchEnvironment, ReadsTorchrunsVariables) {
  ScopedEnv env({{"RANK", "3"},
                 {"WORLD_SIZE", "4"},
                 {"LOCAL_RANK", "1"},
                 {"MASTER_ADDR", "10.0.0.7"},
                 {"MASTER_PORT", "29511"}});
  const auto launch = dist::LaunchEnvironment::from_env();
  EXPECT_EQ(launch.rank, 3);
  EXPECT_EQ(launch.world_size, 4);
  EXPECT_EQ(launch.local_rank, 1);
  EXPECT_EQ(launch.master_addr, "10.0.0.7");
  EXPECT_EQ(launch.master_port, 29511);
  EXPECT_TRUE(launch.is_distributed());
}

TEST(LaunchEnvironment, MalformedOrPartialVariablesAreErrorsNamingThem) {
  const std::map<std::string, std::optional<std::string>> good = {{"RANK", "0"},
                                                                  {"WORLD_SIZE", "2"},
                                                                  {"LOCAL_RANK", kUnset},
                                                                  {"MASTER_ADDR", "127.0.0.1"},
                                                                  {"MASTER_PORT", "29500"}};
  const std::vector<std::pair<std::map<std::string, std::optional<std::string>>, std::string>>
      cases = {
          {{{"RANK", "2"}}, "RANK must be an integer in [0, 1], got '2'"},
          {{{"RANK", "one"}}, "RANK must be an integer in [0, 1], got 'one'"},
          {{{"WORLD_SIZE", "0"}}, "WORLD_SIZE must be an integer in [1, 2147483647], got '0'"},
          {{{"WORLD_SIZE", kUnset}},
           "sets both RANK and WORLD_SIZE (torchrun does); got only RANK"},
          {{{"MASTER_ADDR", kUnset}}, "MASTER_ADDR must name rank 0's host"},
          {{{"MASTER_PORT", kUnset}}, "MASTER_PORT must be set"},
          {{{"MASTER_PORT", "70000"}}, "MASTER_PORT must be an integer in [1, 65535], got '70000'"},
          {{{"LOCAL_RANK", "-1"}}, "LOCAL_RANK must be an integer in [0, 1], got '-1'"},
      };
  for (const auto& [change, expected] : cases) {
    auto values = good;
    for (const auto& [name, value] : change) values[name] = value;
    ScopedEnv env(values);
    expect_error([] { dist::LaunchEnvironment::from_env(); }, {expected});
  }
}

// Two ranks, each the mean loss over its half of a global batch: after backward every gradient is
// the one process's gradient of the whole batch's mean loss, and after an SGD step the weights
// agree too. Rank 1 starts from other weights, which the construction overwrites with rank 0's.
TEST(DistributedDataParallel, TwoRanksTakeTheSingleProcessStep) {
  ASSERT_TRUE(dist::is_available());
  torch::manual_seed(0);
  auto x = torch::randint(0, 48, {4, 16});
  auto y = torch::randint(0, 48, {4, 16});
  torch::manual_seed(1);
  auto reference = tiny_lm();
  const auto reference_params = training::distinct_parameters(*reference);
  auto loss = std::get<1>(reference->forward(x, y));
  loss.backward();
  std::vector<torch::Tensor> reference_grads;
  for (const auto& p : reference_params) reference_grads.push_back(p.grad().clone());
  torch::optim::SGD(reference_params, torch::optim::SGDOptions(0.5)).step();

  // Built here: the default generator is shared by the threads, so the ranks must not draw from
  // it at once.
  std::vector<DualAttnTransformerLM> models;
  for (uint64_t seed : {1, 2}) {  // rank 1's own initial weights are discarded
    torch::manual_seed(seed);
    models.push_back(tiny_lm());
  }
  const int64_t port = free_port();
  std::vector<std::vector<torch::Tensor>> grads(2), weights(2);
  std::vector<int64_t> buckets(2, 0);
  std::vector<std::string> errors(2);
  auto run_rank = [&](int64_t rank) {
    try {
      auto& model = models[rank];
      auto params = training::distinct_parameters(*model);
      auto group = dist::init_process_group(loopback(rank, 2, port), std::chrono::seconds(60));
      // Small buckets, so that the gradients travel in several all-reduces.
      dist::DistributedDataParallel ddp(
          params, group,
          dist::DistributedDataParallelOptions().bucket_cap_mb(0.01).first_bucket_cap_mb(0.005));
      buckets[rank] = ddp.num_buckets();
      auto local = std::get<1>(
          model->forward(x.slice(0, 2 * rank, 2 * rank + 2), y.slice(0, 2 * rank, 2 * rank + 2)));
      ddp.prepare_for_backward(local);
      local.backward();
      for (const auto& p : params) grads[rank].push_back(p.grad().clone());
      torch::optim::SGD(params, torch::optim::SGDOptions(0.5)).step();
      for (const auto& p : params) weights[rank].push_back(p.detach().clone());
      dist::barrier(group);
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  std::thread rank1(run_rank, 1);
  run_rank(0);
  rank1.join();
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
  EXPECT_GT(buckets[0], 2);
  ASSERT_EQ(grads[0].size(), reference_grads.size());
  // Float32 sums in another order: within 1e-6 of each tensor's largest entry.
  auto relative_difference = [](const torch::Tensor& got, const torch::Tensor& expected) {
    return (got - expected).abs().max().item<double>() / expected.abs().max().item<double>();
  };
  for (size_t i = 0; i < reference_grads.size(); ++i) {
    EXPECT_GT(reference_grads[i].abs().max().item<double>(), 0.0) << "parameter " << i;
    for (int rank = 0; rank < 2; ++rank) {
      EXPECT_LE(relative_difference(grads[rank][i], reference_grads[i]), 1e-6)
          << "gradient of parameter " << i << " on rank " << rank;
      EXPECT_LE(relative_difference(weights[rank][i], reference_params[i].detach()), 1e-6)
          << "parameter " << i << " on rank " << rank << " after the step";
    }
  }
}

TEST(DistributedDataParallel, BadArgumentsAreErrorsNamingThem) {
  expect_error(
      [] { dist::DistributedDataParallel({torch::zeros({2}, torch::requires_grad())}, {}); },
      {"DistributedDataParallel: process_group is null"});
  expect_error([] { dist::init_process_group(loopback(0, 1, 1), std::chrono::milliseconds(0)); },
               {"init_process_group: timeout must be positive, got 0 ms"});
  expect_error([] { dist::init_process_group(loopback(2, 2, 1)); },
               {"init_process_group: need 0 <= rank < world_size, got rank 2"});
}
